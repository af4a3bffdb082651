"""A session as it moves from one broker to another (certmq.broker.client_id_claims): the
records of the journal's format (certmq.broker.journal) that rebuild it, in one block, with ids
of their own. The broker that takes it reads them as it reads a journal
(certmq.broker.recovery), then keeps the session as its own and records it in its own journal.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from certmq.broker.journal import JournalFormatError, RecordDecoder, encode_block
from certmq.broker.recorder import message_record, session_records
from certmq.broker.recovery import Recovery

if TYPE_CHECKING:
    from certmq.broker.client_id_claims import MovedSession
    from certmq.broker.core import BrokerCore
    from certmq.broker.messages import Delivery, Message
    from certmq.broker.session import Session

log = logging.getLogger("certmq.broker")


def encode_session(session: Session, disconnected_at: float, to_wall: float) -> bytes:
    """Offline ``session``, gone at wall-clock time ``disconnected_at``; ``to_wall`` turns an
    event-loop time into a wall-clock time. Changes nothing in the session: its messages may be
    queued for others here too."""
    records: list[bytes] = []
    ids: dict[int, int] = {}

    def message_id(message: Message) -> int:
        number = ids.get(id(message))
        if number is None:
            number = ids[id(message)] = len(ids) + 1
            records.append(message_record(number, message, to_wall))
        return number

    deliveries = itertools.count(1)

    def delivery_id(_: Delivery) -> int:
        return next(deliveries)

    for record in session_records(session, disconnected_at, disconnected_at, message_id, delivery_id):
        records.append(record)  # after the bodies message_id() added for it
    return encode_block(records)


def decode_sessions(data: bytes, loop_now: float) -> Recovery:
    """The sessions ``data`` rebuilds, ready to be adopted (:meth:`Recovery.adopt`); raises
    ValueError when ``data`` is not one whole block of records."""
    recovery = Recovery(time.time(), loop_now)
    decoder = RecordDecoder()
    try:
        recovery.apply(decoder.feed(data))
    except JournalFormatError as error:
        raise ValueError(str(error)) from None
    if decoder.damage is not None or decoder.pending:
        raise ValueError(decoder.damage or "the records are cut short")
    return recovery


def resume_moved(core: BrokerCore[Any], client_id: str, moved: MovedSession) -> None:
    """Keep in ``core``, offline, the session of ``client_id`` another broker handed over, for
    the CONNECT being accepted to resume it (unless a session of that client id is here
    already); recorded in ``core``'s journal whole."""
    if client_id in core.sessions:
        return
    try:
        recovery = decode_sessions(moved.records, core.loop.time())
    except ValueError as error:
        log.error("the session of %s handed over by another node cannot be read: %s", client_id, error)
        return
    recovery.adopt(core, core.recorder, moved.disconnected_at, time.time())
