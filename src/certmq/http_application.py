"""The HTTP application of an instance: the API (:mod:`certmq.api`) and the console
(:mod:`certmq.console`) in one application, served on the listener ``listeners.http``.

The API and the console are built on the same services (:mod:`certmq.web`) and know nothing of
each other; this module composes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from fastapi import FastAPI

from certmq.access_keys import AccessKeyStore
from certmq.api.application import create_api
from certmq.api.rpc import RpcSettings
from certmq.config import Config, nats_servers, parse_address
from certmq.console import ConsoleSettings, derive_session_key, install_console
from certmq.control import BrokerControl
from certmq.instance import CREDENTIALS_FILE, Instance
from certmq.web.context import HttpContext
from certmq.web.listener import HttpListener
from certmq.web.metrics import Metrics
from certmq.web.secret_failures import SecretFailures

if TYPE_CHECKING:
    from certmq.registry.service import RegistryService


def create_app(
    *,
    registry: RegistryService,
    control: BrokerControl,
    instance_id: str,
    admin_token: str,
    access_keys_manager: AccessKeyStore,
    metrics: Metrics | None = None,
    rpc_settings: RpcSettings | None = None,
    console: ConsoleSettings | None = None,
) -> FastAPI:
    """The HTTP application of one instance. ``metrics`` is the collector that the instance
    counts its decisions with (:meth:`Metrics.count_decision`); a new one when not given.
    ``rpc_settings`` are the RPC API's rate limit and signature window (config ``[api]``).
    ``console`` configures the web console's sessions."""
    if not admin_token:
        raise ValueError("the REST API needs an admin token")
    metrics = metrics or Metrics()
    context = HttpContext(
        registry=registry,
        control=control,
        instance_id=instance_id,
        admin_token=admin_token,
        access_keys=access_keys_manager,
        metrics=metrics,
        secret_failures=SecretFailures(metrics),
    )
    app = create_api(context, rpc_settings)
    install_console(app, admin_token, console)
    return app


class ServedInstance(Protocol):
    """What :func:`serve_http` needs of the running application (``certmq.app.Application``).

    Its broker checks Signature credentials against ``access_keys.secrets``, so that pairs
    created through the API work at once, and counts each decision it records with
    ``metrics.count_decision``."""

    instance: Instance
    config: Config
    registry: RegistryService | None
    control: BrokerControl | None
    access_keys: AccessKeyStore
    metrics: Metrics


async def serve_http(application: ServedInstance, address: str, *, reuse_port: bool = False) -> HttpListener:
    """Serve the HTTP application of a running instance on ``address`` (``HOST:PORT``; port 0:
    any free port) and return the started listener; ``await listener.stop()`` stops it.
    ``reuse_port``: the port is shared with the other workers of the node."""
    if application.registry is None or application.control is None:
        raise RuntimeError("the registry must be open and the broker started before the HTTP API starts")
    host, port = parse_address(address)
    app = create_app(
        registry=application.registry,
        control=application.control,
        instance_id=application.instance.id,
        admin_token=application.instance.admin_token,
        access_keys_manager=application.access_keys,
        metrics=application.metrics,
        # The nodes of a cluster share their nonces and rate buckets (docs/cluster.md).
        rpc_settings=RpcSettings.of(application.config.api, shared=bool(nats_servers(application.config))),
        console=ConsoleSettings(
            session_key=derive_session_key(application.instance.instance_key),
            credentials_file=str(application.instance.data_dir / CREDENTIALS_FILE),
            server_ca_file=str(application.instance.server_ca_file),
        ),
    )
    listener = HttpListener(app, host, port, reuse_port=reuse_port)
    await listener.start()
    return listener
