"""Messages written to the cluster's JetStream streams, until each is stored.

Messages that must be stored before their publishers are answered (QoS 1 and 2, retained and
point-to-point messages: certmq.cluster.router) are published in envelopes (one or several
messages of a topic) with a reply subject of this node and a message id; the stream answers once
its replicas have the envelope. Each message is a piece of work of an
:class:`~certmq.broker.commit_gate.OutOfOrderCommits`, taken when it is published, so that the
PUBACK or PUBREC of its publisher waits for the write that carries it. A write that gets no
answer is sent again with the same message id (the stream keeps one copy); one the stream cannot
take for the moment (no leader: a NATS server was lost and the others are electing one) is sent
again shortly. One the stream refuses (it is at its limits) or does not store within
``STORE_TIMEOUT`` (no quorum) is failed: its publishers are told so instead of the
acknowledgement they wait for, a PUBACK or PUBREC with 0x97 (Quota exceeded) or 0x80
(Unspecified error) on MQTT 5; a 3.1.1 client, which cannot be told, is disconnected, and sends
the message again when it reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.msg import Msg

from certmq.broker.commit_gate import OutOfOrderCommits
from certmq.cluster.message_stats import ClusterStats
from certmq.cluster.nats_link import NatsLink
from certmq.mqtt.reason_codes import ReasonCode

log = logging.getLogger("certmq.cluster")

# How long the stream has to store a message before its publisher is disconnected unanswered:
# long enough for the NATS servers that remain to elect a new leader when one is lost.
STORE_TIMEOUT = 15.0
# A message the stream has not answered for this long is sent again (with the same message id).
RESEND_AFTER = 2.0
STORE_CHECK_INTERVAL = 0.25
# The JetStream header by which a stream recognises a message sent twice, and the status of a
# request nobody answered (the stream has no leader).
MESSAGE_ID = "Nats-Msg-Id"
NO_RESPONDERS = "503"
# What the stream says of a message it refuses because it is at its limits (DiscardPolicy.NEW):
# JSStreamStoreFailedF, "maximum messages exceeded", "maximum bytes exceeded".
STREAM_FULL = (10077, b"maximum")

# A message of ``client id`` sent as PUBLISH ``packet id`` (0 for QoS 0 and for a will).
Publisher = tuple["str | None", int]

# How a message is handed to NATS: subject, data, reply subject, message id.
Send = Callable[[str, bytes, str, "str | None"], None]


@dataclass(slots=True)
class PendingStore:
    """An envelope sent to a stream and not yet stored there."""

    subject: str
    data: bytes
    # Who published its messages, and the pieces of work of its messages.
    publishers: list[Publisher]
    commits: list[int]
    message_id: str
    deadline: float
    sent_at: float


class StreamWrites:
    """This node's writes to the streams that are not yet stored."""

    def __init__(
        self,
        link: NatsLink,
        send: Send,
        stats: ClusterStats,
        *,
        node: str,
        inbox: str,
        on_failed: Callable[[str | None, int, int], None],
    ) -> None:
        self.link = link
        self._send = send
        self.stats = stats
        self.node = node
        # The subject prefix of the stream's answers: inbox.<write number>.
        self.inbox = inbox
        # Called with the client id and packet id of each message of a write that failed, and
        # the reason code to answer it with.
        self._on_failed = on_failed
        self.commits = OutOfOrderCommits()
        self._loop = asyncio.get_running_loop()
        self._storing: dict[int, PendingStore] = {}
        self._writes = 0
        # Told apart from the message ids of an earlier run of this node (a restart).
        self._run = secrets.token_hex(4)
        self._expiry_timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._storing)

    def store(self, subject: str, data: bytes, publishers: list[Publisher], commits: list[int]) -> None:
        """Send an envelope to a stream: the pieces of work ``commits`` (of its messages, from
        ``self.commits.append()``) complete when the stream has it."""
        self._writes += 1
        write = self._writes
        now = self._loop.time()
        pending = PendingStore(
            subject, data, publishers, commits, f"{self.node}-{self._run}-{write}", now + STORE_TIMEOUT, now
        )
        self._storing[write] = pending
        self._send(subject, data, f"{self.inbox}.{write}", pending.message_id)
        if self._expiry_timer is None:
            self._expiry_timer = self._loop.call_later(STORE_CHECK_INTERVAL, self._expire_storing)

    def _complete(self, pending: PendingStore) -> None:
        complete = self.commits.complete
        for commit in pending.commits:
            complete(commit)

    def _resend(self, write: int, pending: PendingStore) -> None:
        """Send an envelope again that the stream did not answer for, or could not take yet (no
        leader: a NATS server was lost, the others are electing one). The stream recognises a
        copy it already has by its message id, within its duplicate window."""
        pending.sent_at = self._loop.time()
        self.stats.store_retries += 1
        self._send(pending.subject, pending.data, f"{self.inbox}.{write}", pending.message_id)

    def _stored(self, write: int) -> None:
        pending = self._storing.pop(write, None)
        if pending is not None:
            self.stats.stored += len(pending.commits)
            self._complete(pending)

    def _store_failed(self, write: int, why: str, reason_code: int = ReasonCode.UNSPECIFIED_ERROR) -> None:
        """The stream did not store an envelope: its publishers are not told it was received."""
        pending = self._storing.pop(write, None)
        if pending is None:
            return
        if reason_code == ReasonCode.QUOTA_EXCEEDED:
            self.stats.store_full += len(pending.commits)
        else:
            self.stats.store_failures += len(pending.commits)
        senders = ", ".join(sorted({str(sender) for sender, _ in pending.publishers}))
        log.warning("the cluster did not store %d messages from %s: %s", len(pending.commits), senders, why)
        for sender, packet_id in pending.publishers:
            self._on_failed(sender, packet_id, reason_code)
        # Their replies now refuse them (or are gone with their publishers' connections).
        self._complete(pending)

    def _expire_storing(self) -> None:
        now = self._loop.time()
        for write, pending in list(self._storing.items()):
            if pending.deadline <= now:
                self._store_failed(write, f"no answer from the stream within {STORE_TIMEOUT:.0f} s")
            elif now - pending.sent_at >= RESEND_AFTER and self.link.connected:
                self._resend(write, pending)
        self._expiry_timer = (
            self._loop.call_later(STORE_CHECK_INTERVAL, self._expire_storing) if self._storing else None
        )

    async def on_answer(self, msg: Msg) -> None:
        """The stream's answer to a write (on ``inbox.<write number>``)."""
        try:
            write = int(msg.subject.rpartition(".")[2])
        except ValueError:
            return
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None:
            pending = self._storing.get(write)
            if status == NO_RESPONDERS and pending is not None:
                # The stream has no leader for the moment: sent again at the next check.
                pending.sent_at = self._loop.time() - RESEND_AFTER + STORE_CHECK_INTERVAL
                return
            self._store_failed(
                write, f"NATS status {status} {msg.headers.get('Description', '') if msg.headers else ''}"
            )
        elif b'"error"' in msg.data:
            code, description = STREAM_FULL
            full = f'"err_code":{code}'.encode() in msg.data and description in msg.data
            self._store_failed(
                write,
                msg.data.decode(errors="replace"),
                ReasonCode.QUOTA_EXCEEDED if full else ReasonCode.UNSPECIFIED_ERROR,
            )
        else:
            self._stored(write)
