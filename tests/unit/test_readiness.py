"""What ``/readyz`` names of a node's MQTT listeners (certmq.broker.control.unopened_listeners):
each configured listener that the auth mode keeps open must be bound. The broker is reduced to
what the function reads: its configuration and the listeners it has bound."""

from __future__ import annotations

from types import SimpleNamespace

from certmq.broker.control import unopened_listeners
from certmq.broker.server import BoundListener
from certmq.config import Config


def broker_with(bound: list[str], **addresses: str) -> object:
    config = Config()
    for name, address in addresses.items():
        setattr(config.listeners, name, address)
    return SimpleNamespace(config=config, listeners=[BoundListener(name, "127.0.0.1", 1) for name in bound])


def test_every_listener_configured_and_open_in_the_mode_must_be_bound() -> None:
    configured = {"tcp": "127.0.0.1:1883", "tls": "127.0.0.1:8883", "ws": "", "wss": "127.0.0.1:8084"}
    assert unopened_listeners(broker_with([], **configured), frozenset()) == ["tcp", "tls", "wss"]  # type: ignore[arg-type]
    assert unopened_listeners(broker_with(["tcp", "tls"], **configured), frozenset()) == ["wss"]  # type: ignore[arg-type]
    # Closed by the auth mode (mutual: plain listeners) is not missing.
    assert unopened_listeners(broker_with(["tls"], **configured), frozenset({"tcp", "wss"})) == []  # type: ignore[arg-type]
