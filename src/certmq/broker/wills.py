"""Wills and will delay (MQTT 5.0 3.1.2.5, 3.1.3.2.2).

A connection that closes without a clean DISCONNECT has its will published: at once, or after
its Will Delay Interval when its session outlives the connection; a client that comes back to
its session before then cancels it, and a session that ends first sends it then. Whether it
goes out is decided when it does: the client's identity must still be valid and the topic
rules in force then must allow its topic, as they allowed it at CONNECT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from certmq.auth.topics import may_publish
from certmq.broker.messages import FORWARDED_PROPERTIES, Message
from certmq.broker.session import Session
from certmq.broker.stats import BrokerStats
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId

log = logging.getLogger("certmq.broker")


def message_from_will(will: Will, client_id: str, now: float) -> Message:
    properties: dict[int, Any] = {
        key: will.properties[key] for key in FORWARDED_PROPERTIES if key in will.properties
    }
    expiry = will.properties.get(PropertyId.MESSAGE_EXPIRY_INTERVAL)
    return Message(
        topic=will.topic,
        payload=will.payload,
        qos=will.qos,
        retain=will.retain,
        properties=properties,
        expires_at=None if expiry is None else now + expiry,
        sender=client_id,
    )


def _always_valid(session: Session) -> bool:
    return True


class Wills:
    """The wills of the broker's sessions; ``publish`` routes the ones that go out."""

    def __init__(self, publish: Callable[[Message], int], stats: BrokerStats) -> None:
        self._publish = publish
        self._stats = stats
        # Whether the identity a session's client authenticated with is still valid (its
        # certificate registered, active and not expired...), asked before its will goes out,
        # which may be long after the client left. The application sets it.
        self.identity_valid: Callable[[Session], bool] = _always_valid

    def route_to(self, publish: Callable[[Message], int]) -> None:
        """Publish the wills that go out with ``publish`` from now on."""
        self._publish = publish

    def connection_closed(self, session: Session, publish_will: bool) -> None:
        """The connection carrying ``session`` closed: its will goes out now, later (its delay,
        when the session outlives the connection), or never (``publish_will`` False)."""
        will, session.will = session.will, None
        if will is None or not publish_will:
            return
        delay = will.properties.get(PropertyId.WILL_DELAY_INTERVAL, 0)
        if delay > 0 and session.expiry_interval > 0:
            session.will = will
            session.will_handle = asyncio.get_running_loop().call_later(delay, self._delay_over, session)
        else:
            self._publish_will(session, will)

    def cancel(self, session: Session) -> None:
        """The client came back in time: a will waiting for its delay does not go out."""
        if session.will_handle is not None:
            session.will_handle.cancel()
            session.will_handle = None
        session.will = None

    def session_ended(self, session: Session) -> None:
        """The session ends: a will still waiting for its delay goes out now."""
        if session.will_handle is not None:
            session.will_handle.cancel()
            session.will_handle = None
        if session.will is not None:
            will, session.will = session.will, None
            self._publish_will(session, will)

    def restore(self, session: Session, will_in: float | None) -> None:
        """A session restored from an earlier run: its will goes out ``will_in`` seconds from now
        (at once, when that passed while the broker was down); None: it has none waiting."""
        if session.will is not None and will_in is not None:
            session.will_handle = asyncio.get_running_loop().call_later(
                max(0.0, will_in), self._delay_over, session
            )

    def _delay_over(self, session: Session) -> None:
        session.will_handle = None
        if session.will is not None and session.connection is None:
            will, session.will = session.will, None
            self._publish_will(session, will)
            if session.recorder is not None:
                session.recorder.will_cleared(session)

    def _publish_will(self, session: Session, will: Will) -> None:
        """Publish a will, if its client may still: the will was allowed at CONNECT, but the
        rules in force now and the client's identity as it stands now decide."""
        if not self.identity_valid(session):
            why = "its identity is no longer valid"
        elif not may_publish(session.permissions, will.topic):
            why = "the topic rules do not allow its topic"
        else:
            self._publish(message_from_will(will, session.client_id, asyncio.get_running_loop().time()))
            return
        self._stats.wills_dropped += 1
        log.info("dropped the will of %s to %s: %s", session.client_id, will.topic, why)
