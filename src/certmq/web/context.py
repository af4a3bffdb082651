"""What every request handler of the HTTP API and the console may use: the services of the
running instance.

Handlers receive an :class:`HttpContext` through FastAPI's dependency injection (``Context``)
and call one service function on it: the registry, the broker control, the AccessKey store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from certmq.access_keys import AccessKeyStore
from certmq.control import BrokerControl
from certmq.web.secret_failures import SecretFailures

if TYPE_CHECKING:
    from certmq.registry.service import RegistryService
    from certmq.web.metrics import Metrics


@dataclass(frozen=True, slots=True)
class HttpContext:
    registry: RegistryService
    control: BrokerControl
    instance_id: str
    admin_token: str
    access_keys: AccessKeyStore
    metrics: Metrics
    # The wrong secrets of each source, shared by every route that checks one.
    secret_failures: SecretFailures = field(default_factory=SecretFailures)


def get_context(request: Request) -> HttpContext:
    context: HttpContext = request.app.state.context
    return context


Context = Annotated[HttpContext, Depends(get_context)]
