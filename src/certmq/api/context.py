"""What every request handler of the HTTP API may use: the services of the running instance.

Handlers receive an :class:`ApiContext` through FastAPI's dependency injection (``Context``)
and call one service function on it: the registry, the broker control, the AccessKey store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from certmq.access_keys import AccessKeyStore
from certmq.api.secret_failures import SecretFailures
from certmq.control import BrokerControl

if TYPE_CHECKING:
    from certmq.api.metrics import Metrics
    from certmq.registry.service import RegistryService


@dataclass(frozen=True, slots=True)
class ApiContext:
    registry: RegistryService
    control: BrokerControl
    instance_id: str
    admin_token: str
    access_keys: AccessKeyStore
    metrics: Metrics
    # The wrong secrets of each source, shared by every route that checks one.
    secret_failures: SecretFailures = field(default_factory=SecretFailures)


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]
