"""Routing across the nodes of a cluster (docs/cluster.md, "How a message travels").

:class:`ClusterRouter` takes the place of the core's :class:`LocalRouter` (certmq.broker.routing)
and wraps it: what is published here is routed to this node's sessions at once, as on a single
node, and handed to NATS for the other nodes, which route it to theirs.

- **QoS 0** travels on core NATS, on the subject of its topic (certmq.cluster.subjects). Each
  node subscribes the subjects of the filters its sessions subscribe, so NATS carries a message
  only to the nodes that have a matching subscription. The QoS 0 messages of a topic that one
  turn of the event loop publishes travel together, in one envelope (certmq.cluster.envelope).
  A node whose filters overlap gets an envelope once per matching NATS subscription: it keeps
  the numbers it has seen of each origin and routes each envelope once. A subscription holds
  its SUBACK until this node's NATS server has its interest.
- **QoS 1 and 2, retained messages and point-to-point messages** go to a JetStream stream that
  every node consumes in full, with acknowledgements: a PUBACK or PUBREC is held until the
  stream has stored the message (its replicas agreeing), and a node acknowledges what it has
  routed, so NATS redelivers what a node did not take. A message the stream refuses (it is
  full) or does not store in time (no quorum) is never acknowledged to its publisher: its
  PUBACK or PUBREC says so instead (certmq.cluster.stream_writes).

Messages from other nodes are routed by this node's own topic tree, which applies every rule
NATS subjects cannot say (`$` topics, No Local, the topic rules), through the same
:meth:`LocalRouter.publish` as this node's own messages.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError

from certmq.broker.messages import Delivery, Message
from certmq.broker.routing import NOT_KEPT_PREFIX, P2P_MARKER, LocalRouter, p2p_target
from certmq.broker.session import Session
from certmq.broker.subscriptions import SubscriptionEntry
from certmq.cluster.envelope import (
    Duplicates,
    EnvelopeError,
    Received,
    cut_into_envelopes,
    open_envelope,
    seal,
)
from certmq.cluster.interest import Interest
from certmq.cluster.message_stats import ClusterStats
from certmq.cluster.nats_link import LoopShare, NatsLink, failure_text
from certmq.cluster.retained_stream import load_retained, retained_stream_config
from certmq.cluster.stream_acks import RecordedAcks
from certmq.cluster.stream_writes import MESSAGE_ID, STORE_TIMEOUT, StreamWrites
from certmq.cluster.subjects import filter_subjects, queue_group, subject_topic, topic_subject
from certmq.mqtt.topics import parse_shared_subscription

if TYPE_CHECKING:
    from certmq.broker.recorder import Recorder

log = logging.getLogger("certmq.cluster")

# nats-server refuses a protocol line longer than its max_control_line, 4 KiB by default: a
# subject (with the reply subject and the command) must leave room within it. An escaped
# character takes up to 12 bytes of a subject, so topics up to a quarter of this always fit.
MAX_SUBJECT = 4000
# The origin under which the sequences of the stream's messages routed are remembered.
STREAM_ORIGIN = ""
# What a NATS subscription of this node may hold before NATS drops (and this node counts) messages.
PENDING_MESSAGES = 262_144
PENDING_BYTES = 256 * 1024 * 1024
# How long a node that stops waits for the stream's messages on their way, and for its
# acknowledgements of those it routed to go out.
STOP_TIMEOUT = 3.0
# A node's consumer of the stream that has not been used for this long is removed (a node gone).
CONSUMER_INACTIVE = 3600.0


def travels_stored(message: Message) -> bool:
    """Whether ``message`` goes to the other nodes through the stream (else on core NATS)."""
    return message.qos > 0 or message.retain or P2P_MARKER in message.topic


# The subjects of the topics a node sends, and the topics of the subjects it receives, are
# mostly the same ones again and again: worked out once each.
_subject_of = functools.lru_cache(maxsize=8192)(topic_subject)
_topic_of = functools.lru_cache(maxsize=8192)(subject_topic)


class ClusterRouter:
    """Routes to this node's sessions through ``local`` and to the other nodes through NATS."""

    def __init__(
        self,
        local: LocalRouter,
        link: NatsLink,
        shared_link: NatsLink,
        *,
        node: str,
        prefix: str,
        replicas: int,
        stream_bytes: int,
    ) -> None:
        self.local = local
        local.shared_elsewhere = True
        self.link = link
        self.shared_link = shared_link
        self.node = node
        self.replicas = replicas
        self.stream_bytes = stream_bytes
        self.stats = ClusterStats()
        self._loop = asyncio.get_running_loop()
        self._fast_prefix = f"{prefix}.m"
        self._stored_prefix = f"{prefix}.q"
        self._retained_prefix = f"{prefix}.r"
        self._retained_stream = f"{prefix.replace('.', '_').upper()}_RETAINED"
        self._stream = f"{prefix.replace('.', '_').upper()}_MESSAGES"
        self._inbox = f"{prefix}.stored.{node}"
        self._numbers = 0
        self._longest_plain_topic = (MAX_SUBJECT - len(self._inbox) - len(prefix) - 3) // 12
        self._duplicates = Duplicates()
        self._last_stored = 0
        self._routed = Duplicates()
        # Set while the messages of the stream wait (certmq.cluster.adoption): they resume once done.
        self._held: asyncio.Future[None] | None = None
        self._share = LoopShare()
        # Messages of the stream are acknowledged once the journal has what routing them recorded.
        self._acks = RecordedAcks(lambda: self.local.recorder)
        # Local subscriptions per topic filter, and per shared subscription (group, filter),
        # with the NATS subscriptions that bring their messages: for a shared subscription,
        # those of its NATS queue group and of its JetStream consumer.
        self._filters: Interest[str] = Interest()
        self._shares: Interest[tuple[str, str]] = Interest()
        self._inbox_subscription: Subscription | None = None
        self._retained_loaded = False
        self._consumer: Subscription | None = None
        self._consuming = True  # until the node stops
        # What this turn of the loop hands to NATS, gathered by topic: QoS 0 messages, and
        # messages for the stream with the pieces of work their acknowledgements wait for;
        # then envelopes for the streams, in order. One task sends them (see _flush).
        self._gathered: dict[str, list[Message]] = {}
        self._gathered_stored: dict[str, tuple[list[Message], list[int]]] = {}
        self._outbox: list[tuple[str, bytes, str, str | None]] = []
        self._flushing = False
        # Messages sent to the streams and not yet stored, which PUBACKs wait for.
        self.writes = StreamWrites(
            link, self._send, self.stats, node=node, inbox=self._inbox, on_failed=self._publisher_not_answered
        )
        link.set_up.append(self._connected)
        shared_link.set_up.append(self._shared_connected)

    # -- the Router operations -------------------------------------------------------------

    @property
    def recorder(self) -> Recorder | None:
        return self.local.recorder

    @recorder.setter
    def recorder(self, recorder: Recorder | None) -> None:
        self.local.recorder = recorder

    def publish(self, message: Message) -> int:
        if message.sender is None and message.topic.startswith(NOT_KEPT_PREFIX):
            return self.local.publish(message)  # each node's own $SYS statistics
        kept = message.retain and self._keeps_retained(message)
        delivered = self.local.publish(message)
        topic = message.topic
        if len(topic) > self._longest_plain_topic and not self._fits(topic):
            return delivered
        if not travels_stored(message):
            gathered = self._gathered.get(topic)
            if gathered is not None:
                gathered.append(message)
                return delivered
            self._gathered[topic] = [message]
        else:
            # Its acknowledgement waits until the stream has it (and the retained messages'
            # stream, when the message is kept).
            commits = self.writes.commits
            if kept:
                retained_subject = topic_subject(self._retained_prefix, topic)
                self.writes.store(
                    retained_subject,
                    self._seal((message,)),
                    [(message.sender, message.packet_id)],
                    [commits.append()],
                )
            gathered_stored = self._gathered_stored.get(topic)
            if gathered_stored is not None:
                gathered_stored[0].append(message)
                gathered_stored[1].append(commits.append())
                return delivered
            self._gathered_stored[topic] = ([message], [commits.append()])
        if not self._flushing:
            self._flushing = True
            self._loop.create_task(self._flush())
        return delivered

    def subscribe(self, session: Session, entry: SubscriptionEntry) -> bool:
        existed = self.local.subscribe(session, entry)
        if not existed:
            self._add_interest(entry.topic_filter)
        return existed

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        removed = self.local.unsubscribe(session, topic_filter)
        if removed:
            self._remove_interest(topic_filter)
        return removed

    def unsubscribe_all(self, session: Session) -> None:
        filters = list(session.subscriptions)
        self.local.unsubscribe_all(session)
        for topic_filter in filters:
            self._remove_interest(topic_filter)

    def resubscribe(self, session: Session) -> None:
        self.local.resubscribe(session)
        for topic_filter in session.subscriptions:
            self._add_interest(topic_filter)

    def queue(self, session: Session, delivery: Delivery) -> None:
        self.local.queue(session, delivery)

    def count_queue_full(self) -> None:
        self.local.count_queue_full()

    def retained_fits(self, message: Message) -> bool:
        return self.local.retained_fits(message)

    def refuse_retained(self, message: Message) -> None:
        self.local.refuse_retained(message)

    def retained_matching(self, topic_filter: str) -> Iterable[Message]:
        return self.local.retained_matching(topic_filter)

    def _keeps_retained(self, message: Message) -> bool:
        """Whether retained ``message`` is kept (or clears what is kept): what the cluster's
        retained messages get."""
        local = self.local
        if not local.settings.retain_available:
            return False
        if (
            local.settings.p2p_topics
            and P2P_MARKER in message.topic
            and p2p_target(message.topic) is not None
        ):
            return False
        return not message.payload or local.retained_fits(message)

    # -- sending ---------------------------------------------------------------------------

    def _publisher_not_answered(self, sender: str | None, packet_id: int, reason_code: int) -> None:
        """A message of ``sender`` (PUBLISH ``packet_id``) was not stored: its acknowledgement
        refuses it instead, or, when the client cannot be told (3.1.1), its connection closes
        without it."""
        session = self.local.sessions.get(sender) if sender is not None else None
        connection = session.connection if session is not None else None
        if connection is None or (packet_id and connection.withdraw_acceptance(packet_id, reason_code)):
            return
        connection.close(reason_code, "the cluster could not store the message", publish_will=True)

    def _fits(self, topic: str) -> bool:
        """Whether the subject of ``topic`` fits in a NATS protocol line; a topic that does not
        reaches this node's subscribers only, and is counted."""
        if len(topic_subject(self._stored_prefix, topic)) + len(self._inbox) <= MAX_SUBJECT:
            return True
        self.stats.too_long += 1
        log.debug(
            "a message on a topic of %d characters reaches this node only: its NATS subject is too long",
            len(topic),
        )
        return False

    def _seal(self, messages: list[Message] | tuple[Message]) -> bytes:
        self._numbers += 1
        return seal(messages, self.node, self._numbers, self._loop.time())

    def _send(self, subject: str, data: bytes, reply: str, message_id: str | None = None) -> None:
        """Queue a NATS message for a stream: the flush task of this turn of the loop sends it."""
        self._outbox.append((subject, data, reply, message_id))
        if not self._flushing:
            self._flushing = True
            self._loop.create_task(self._flush())

    async def _flush(self) -> None:
        """Hand what was queued to the NATS client, in order, until nothing is left. One task at
        a time does it, so that what a later turn queues never overtakes what an earlier one did."""
        try:
            while self._outbox or self._gathered or self._gathered_stored:
                gathered_stored, self._gathered_stored = self._gathered_stored, {}
                for topic, (messages, commits) in gathered_stored.items():
                    subject = _subject_of(self._stored_prefix, topic)
                    start = 0
                    for envelope in cut_into_envelopes(messages):
                        end = start + len(envelope)
                        publishers = [(message.sender, message.packet_id) for message in envelope]
                        self.writes.store(subject, self._seal(envelope), publishers, commits[start:end])
                        start = end
                outbox, self._outbox = self._outbox, []
                gathered, self._gathered = self._gathered, {}
                client = self.link.client
                if client is None:
                    # Not connected yet: what waits for the stream is sent again or fails at
                    # its deadline; the rest reaches only this node's clients.
                    return
                for subject, data, reply, message_id in outbox:
                    headers = None if message_id is None else {MESSAGE_ID: message_id}
                    await self._publish(client, subject, data, reply, headers, 1)
                prefix = self._fast_prefix
                for topic, messages in gathered.items():
                    subject = _subject_of(prefix, topic)
                    for envelope in cut_into_envelopes(messages):
                        await self._publish(client, subject, self._seal(envelope), "", None, len(envelope))
                self.link.write_now()
        finally:
            self._flushing = False

    async def _publish(
        self,
        client: Client,
        subject: str,
        data: bytes,
        reply: str,
        headers: dict[str, str] | None,
        count: int,
    ) -> None:
        try:
            await client.publish(subject, data, reply=reply, headers=headers)
        except Exception as error:
            log.warning("could not send a message to the other nodes: %s", failure_text(error))
        else:
            self.stats.sent += count

    # -- receiving -------------------------------------------------------------------------

    def _open(self, prefix: str, msg: Msg) -> Received | None:
        """The messages ``msg`` brings, on a subject under ``prefix``; None (counted) when it
        is not an envelope of this version."""
        try:
            topic = _topic_of(prefix, msg.subject)
            return open_envelope(topic, msg.data, self._loop.time())
        except (ValueError, EnvelopeError) as error:
            self._malformed(msg.subject, error)
            return None

    async def _on_message(self, msg: Msg) -> None:
        """QoS 0 messages from another node, on the subject of a filter of this node."""
        received = self._open(self._fast_prefix, msg)
        if received is None:
            return
        if self._duplicates.seen(received.origin, received.number):
            self.stats.duplicates += 1
            return
        messages = received.messages
        self.stats.received += len(messages)
        publish = self.local.publish
        for message in messages:
            publish(message)
        await self._share.turn()

    async def _on_stored_message(self, msg: Msg) -> None:
        """A message of the stream: every QoS 1 and 2 message of every node, in order."""
        if self._held is not None:
            await self._held
        try:
            sequence = msg.metadata.sequence.stream
        except Exception:
            sequence = 0
        # A message this run routed already, sent again because its acknowledgement was lost.
        # Not every lower sequence: a message sent before a restart and not acknowledged comes
        # again after newer ones, once the stream's acknowledgement wait is over.
        if sequence and self._routed.seen(STREAM_ORIGIN, sequence):
            self.stats.duplicates += 1
            await msg.ack()
            return
        if sequence > self._last_stored:
            self._last_stored = sequence
        received = self._open(self._stored_prefix, msg)
        if received is not None and received.origin != self.node:
            self.stats.received += len(received.messages)
            for message in received.messages:
                self.local.publish(message)
        if not self._acks.wait_for_journal(msg):
            await msg.ack()
        await self._share.turn()

    # -- adopting the sessions of a node that is gone (certmq.cluster.adoption) -------------

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def stored_subjects(self) -> str:
        return f"{self._stored_prefix}.>"

    @property
    def last_stored(self) -> int:
        """The sequence of the last message of the stream this node has routed."""
        return self._last_stored

    def hold_stored(self) -> Callable[[], None]:
        """Hold the messages of the stream (they wait, in order) until the function returned is
        called."""
        held = self._held = self._loop.create_future()

        def resume() -> None:
            if self._held is held:
                self._held = None
            if not held.done():
                held.set_result(None)

        return resume

    def open_stored(self, msg: Msg) -> Received | None:
        """The messages a message of the stream brings; None (counted) when it is not readable."""
        return self._open(self._stored_prefix, msg)

    def _malformed(self, subject: str, error: Exception) -> None:
        self.stats.malformed += 1
        log.warning("a message on %s is not one this node reads, dropped: %s", subject, error)

    # -- interest --------------------------------------------------------------------------

    def _add_interest(self, full_filter: str) -> None:
        group, topic_filter = parse_shared_subscription(full_filter)
        # The SUBACK waits until this node's NATS server knows the interest.
        if group is None:
            if self._filters.add(topic_filter) and self.link.connected:
                commit = self.writes.commits.append()
                self._loop.create_task(self._subscribe(topic_filter, commit))
        elif self._shares.add((group, topic_filter)) and self.link.connected and self.shared_link.connected:
            commit = self.writes.commits.append()
            self._loop.create_task(self._subscribe_share((group, topic_filter), commit))

    def _remove_interest(self, full_filter: str) -> None:
        group, topic_filter = parse_shared_subscription(full_filter)
        if group is None:
            subscriptions = self._filters.remove(topic_filter)
        else:
            subscriptions = self._shares.remove((group, topic_filter))
        if subscriptions:
            self._loop.create_task(self._unsubscribe(subscriptions))

    async def _subscribe(self, topic_filter: str, commit: int | None = None) -> None:
        client = self.link.client
        try:
            if client is None or not self._filters.needs_subscribing(topic_filter):
                return
            subscriptions = [
                await client.subscribe(
                    subject,
                    cb=self._on_message,
                    pending_msgs_limit=PENDING_MESSAGES,
                    pending_bytes_limit=PENDING_BYTES,
                )
                for subject in filter_subjects(self._fast_prefix, topic_filter)
            ]
            if not self._filters.subscribed(topic_filter, subscriptions):
                await self._unsubscribe(subscriptions)  # unsubscribed meanwhile
            await self.link.confirm(STORE_TIMEOUT)
        except Exception as error:
            log.warning("could not subscribe %s on NATS: %s", topic_filter, failure_text(error))
        finally:
            if commit is not None:
                self.writes.commits.complete(commit)

    async def _unsubscribe(self, subscriptions: list[Subscription]) -> None:
        for subscription in subscriptions:
            try:
                await subscription.unsubscribe()
            except Exception:
                pass  # the connection is gone: so is the subscription

    # -- shared subscriptions --------------------------------------------------------------

    async def _subscribe_share(self, key: tuple[str, str], commit: int | None = None) -> None:
        """Join the NATS queue group of a shared subscription (QoS 0) and its JetStream
        consumer's deliver group (the stream's messages): NATS hands each message to one node
        of all those with members, which hands it to one of its members."""
        group, topic_filter = key
        client, shared_client = self.link.client, self.shared_link.client
        try:
            if client is None or shared_client is None or not self._shares.needs_subscribing(key):
                return
            queue = queue_group(group, topic_filter)
            subscriptions = [
                await shared_client.subscribe(
                    subject,
                    queue=queue,
                    cb=functools.partial(self._on_shared_message, key),
                    pending_msgs_limit=PENDING_MESSAGES,
                    pending_bytes_limit=PENDING_BYTES,
                )
                for subject in filter_subjects(self._fast_prefix, topic_filter)
            ]
            jetstream = client.jetstream()
            for subject in filter_subjects(self._stored_prefix, topic_filter):
                consumer = "share-" + hashlib.sha256(f"{queue} {subject}".encode()).hexdigest()[:32]
                subscriptions.append(
                    await jetstream.subscribe(
                        subject,
                        queue=consumer,
                        durable=consumer,
                        stream=self._stream,
                        cb=functools.partial(self._on_shared_stored_message, key),
                        manual_ack=True,
                        pending_msgs_limit=PENDING_MESSAGES,
                        pending_bytes_limit=PENDING_BYTES,
                        config=ConsumerConfig(
                            ack_policy=AckPolicy.EXPLICIT,
                            deliver_policy=DeliverPolicy.NEW,
                            max_ack_pending=65536,
                            ack_wait=30,
                            inactive_threshold=CONSUMER_INACTIVE,
                        ),
                    )
                )
            if not self._shares.subscribed(key, subscriptions):
                await self._unsubscribe(subscriptions)  # the last member left meanwhile
            await self.shared_link.confirm(STORE_TIMEOUT)
            await self.link.confirm(STORE_TIMEOUT)
        except Exception as error:
            log.warning(
                "could not join shared subscription $share/%s/%s on NATS: %s",
                group,
                topic_filter,
                failure_text(error),
            )
        finally:
            if commit is not None:
                self.writes.commits.complete(commit)

    async def _on_shared_message(self, key: tuple[str, str], msg: Msg) -> None:
        """QoS 0 messages for a shared subscription, this node's turn (of any node's messages)."""
        self._deliver_shared(self._open(self._fast_prefix, msg), key)
        await self._share.turn()

    async def _on_shared_stored_message(self, key: tuple[str, str], msg: Msg) -> None:
        """A message of the stream for a shared subscription, this node's turn."""
        self._deliver_shared(self._open(self._stored_prefix, msg), key)
        if not self._acks.wait_for_journal(msg):
            await msg.ack()
        await self._share.turn()

    def _deliver_shared(self, received: Received | None, key: tuple[str, str]) -> None:
        if received is None:
            return
        group, topic_filter = key
        messages = received.messages
        # MQTT 4.7.2: a filter starting with a wildcard does not match a topic starting with $.
        if messages[0].topic[:1] == "$" and topic_filter[:1] in ("+", "#"):
            return
        self.stats.received += len(messages)
        for message in messages:
            self.local.deliver_shared(message, group, topic_filter)

    async def _shared_connected(self) -> None:
        """After every (re)connection of the shared subscriptions' link."""
        if not self.link.connected:
            return  # done by _connected, once the messages' link is up
        for key in self._shares.missing():
            await self._subscribe_share(key)

    # -- setting up ------------------------------------------------------------------------

    async def _connected(self) -> None:
        """After every (re)connection: the stream, this node's consumer of it, the answers of
        the stream, and every filter's subscription, where they are missing."""
        client = self.link.client
        assert client is not None
        jetstream = client.jetstream()
        retained = retained_stream_config(self._retained_stream, self._retained_prefix, self.replicas)
        for stream in (self._jetstream_stream_config(), retained):
            try:
                await jetstream.add_stream(stream)
            except Exception:
                try:
                    await jetstream.update_stream(stream)
                except BadRequestError as error:
                    # Made by an earlier certmq with a retention policy that cannot be changed.
                    log.warning(
                        "the stream %s keeps its settings (%s): delete it (nats stream rm %s) while "
                        "no node runs to give it this version's",
                        stream.name,
                        error.description,
                        stream.name,
                    )
        if not self._retained_loaded:
            await load_retained(
                client, self._retained_stream, self._retained_prefix, self.local, self._malformed
            )
            self._retained_loaded = True
        if self._inbox_subscription is None:
            self._inbox_subscription = await client.subscribe(
                f"{self._inbox}.*", cb=self.writes.on_answer, pending_msgs_limit=PENDING_MESSAGES
            )
        if self._consumer is None and self._consuming:
            self._consumer = await jetstream.subscribe(
                f"{self._stored_prefix}.>",
                durable=self.node,
                stream=self._stream,
                cb=self._on_stored_message,
                manual_ack=True,
                flow_control=True,
                idle_heartbeat=5.0,
                pending_msgs_limit=PENDING_MESSAGES,
                pending_bytes_limit=PENDING_BYTES,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.NEW,
                    max_ack_pending=65536,
                    ack_wait=30,
                    inactive_threshold=CONSUMER_INACTIVE,
                ),
            )
        for topic_filter in self._filters.missing():
            await self._subscribe(topic_filter)
        if self.shared_link.connected:
            for key in self._shares.missing():
                await self._subscribe_share(key)
        log.info(
            "cluster node %s: stream %s (%d replicas), %d topic filters subscribed",
            self.node,
            self._stream,
            self.replicas,
            len(self._filters),
        )

    def _jetstream_stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self._stream,
            subjects=[f"{self._stored_prefix}.>"],
            # On disk: nats-server 2.9 does not refuse new messages when an in-memory stream of
            # several replicas is full, but drops old ones (measured); and a disk survives every
            # NATS server restarting.
            storage=StorageType.FILE,
            # A message stays until every consumer has acknowledged it (certmq.cluster.stream_trim:
            # the interest retention of nats-server 2.9 drops messages a consumer has not taken,
            # measured); when the stream is full, new messages are refused (their publishers
            # told so), never old ones dropped.
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.NEW,
            max_bytes=self.stream_bytes,
            num_replicas=self.replicas,
        )

    async def stop_consuming(self) -> None:
        """Take no more messages of the stream (a node that stops, before its last checkpoint):
        those on their way are routed first. The stream keeps the rest for this node's
        consumer, which sends them, in order, when it is back."""
        self._consuming = False
        consumer, self._consumer = self._consumer, None
        if consumer is not None and self.link.connected:
            try:
                await asyncio.wait_for(consumer.drain(), STOP_TIMEOUT)  # type: ignore[no-untyped-call]
            except Exception as error:
                log.warning("could not stop taking the stream's messages: %s", failure_text(error))

    async def acknowledged(self) -> None:
        """Return once the acknowledgements that waited for the journal are sent."""
        try:
            await asyncio.wait_for(self._acks.sent(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("the stream's messages routed last are not all acknowledged: they come again")

    def status(self) -> dict[str, Any]:
        """What /readyz and the metrics say of the cluster."""
        return {
            "node": self.node,
            "nats_connected": self.link.connected,
            "stored_pending": len(self.writes),
        }
