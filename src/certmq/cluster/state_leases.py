"""Which node holds each node's state in JetStream (docs/cluster.md, "When a node is gone").

A node's sessions are in its journal and checkpoint (certmq.cluster.stream_storage), and one
node at a time may hold them: the node itself, or, once it is gone, the node that adopts them
(certmq.cluster.adoption). The key-value bucket ``<PREFIX>_STATE_LEASES`` says which: one key
per node whose state JetStream keeps, naming its holder. The key changes hands only by
compare-and-set on its revision, so of two nodes that try to take it at once one succeeds.

Whether a holder is still running is asked of NATS, not of a clock: each node answers on a
subject of its own (``<prefix>.state.<node>``) from before it takes any key, and a request there
that NATS says nobody listens to (a killed node's connection is gone at once) means the holder
is gone. A holder that is merely slow answers late, and counts as running.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from certmq.cluster.nats_link import key_value_bucket
from certmq.cluster.subjects import level_token, token_level

log = logging.getLogger("certmq.cluster")

# How long a holder has to answer whether it is running.
PROBE_TIMEOUT = 1.0
# JetStream's error code for a write whose expected last sequence is not the subject's.
WRONG_LAST_SEQUENCE = 10071
# Between two looks at a key another running node holds, while waiting for it.
WAIT_PAUSE = 0.5


@dataclass(frozen=True, slots=True)
class Lease:
    """The key of ``node``'s state, held by ``holder``, at ``revision``."""

    node: str
    holder: str
    revision: int


def bucket_name(prefix: str) -> str:
    return f"{prefix.replace('.', '_').upper()}_STATE_LEASES"


class StateLeases:
    """This node's view of the bucket: takes its own key at start, and other nodes' keys when
    they are gone."""

    def __init__(self, client: Client, *, prefix: str, node: str, replicas: int) -> None:
        self.client = client
        self.node = node
        self.replicas = replicas
        self.bucket = bucket_name(prefix)
        self._probe_prefix = f"{prefix}.state"
        self._store: KeyValue | None = None
        self._answering: Subscription | None = None

    async def set_up(self) -> None:
        """Answer for this node, then open the bucket (made if missing)."""
        if self._answering is None:
            self._answering = await self.client.subscribe(
                f"{self._probe_prefix}.{level_token(self.node)}", cb=self._answer
            )
            await self.client.flush()
        self._store = await key_value_bucket(
            self.client,
            KeyValueConfig(
                bucket=self.bucket,
                history=1,
                storage=StorageType.FILE,
                replicas=self.replicas,
                description="which node holds the state of each node of a certmq cluster",
            ),
        )

    async def _answer(self, msg: Msg) -> None:
        await msg.respond(b"running")

    @property
    def store(self) -> KeyValue:
        assert self._store is not None, "set_up() first"
        return self._store

    async def running(self, node: str) -> bool:
        """Whether ``node`` answers (or may: it is slow); False once NATS says nobody listens."""
        if node == self.node:
            return True
        try:
            await self.client.request(f"{self._probe_prefix}.{level_token(node)}", b"", timeout=PROBE_TIMEOUT)
        except NoRespondersError:
            return False
        except NatsTimeoutError:
            return True
        return True

    async def lease(self, node: str) -> Lease | None:
        """The key of ``node``'s state as it is now; None when there is none."""
        try:
            entry = await self.store.get(level_token(node))
        except KeyNotFoundError:
            return None
        try:
            value = json.loads(entry.value or b"")
            return Lease(str(value["node"]), str(value["holder"]), entry.revision or 0)
        except (ValueError, KeyError, TypeError):
            log.warning("the entry %s of %s is not a lease, taken over", entry.key, self.bucket)
            return Lease(node, "", entry.revision or 0)

    async def leases(self) -> list[Lease]:
        """Every key of the bucket."""
        # The keys are the subjects the bucket's stream holds, as its leader says (as in
        # certmq.cluster.membership: nats-py's KeyValue.keys() may report none at all).
        subjects = f"$KV.{self.bucket}."
        info = await self.client.jetstream().stream_info(f"KV_{self.bucket}", subjects_filter=f"{subjects}>")
        found = []
        for subject in info.state.subjects or {}:
            try:
                lease = await self.lease(token_level(subject.removeprefix(subjects)))
            except ValueError:
                continue
            if lease is not None:
                found.append(lease)
        return found

    async def take(self, node: str) -> Lease | None:
        """Take the key of ``node``'s state for this node, unless a running node holds it (or
        takes it meanwhile); the lease taken, or None."""
        current = await self.lease(node)
        if current is not None and current.holder != self.node and await self.running(current.holder):
            return None
        value = json.dumps({"node": node, "holder": self.node}).encode()
        try:
            if current is None:
                revision = await self.store.create(level_token(node), value)
            else:
                revision = await self.store.update(level_token(node), value, last=current.revision)
        except KeyWrongLastSequenceError:
            return None  # another node took it first
        return Lease(node, self.node, revision)

    async def take_own(self) -> Lease:
        """This node's own key, before it reads its state: waits while another running node
        holds it (it is adopting this node's sessions, and deletes the state once it has)."""
        waited = False
        while True:
            lease = await self.take(self.node)
            if lease is not None:
                if waited:
                    log.info("node %s holds its own state again", self.node)
                return lease
            if not waited:
                current = await self.lease(self.node)
                log.warning(
                    "node %s is adopting the sessions this node held before it stopped; this node "
                    "starts once it has",
                    "another node" if current is None else current.holder,
                )
                waited = True
            await asyncio.sleep(WAIT_PAUSE)

    async def release(self, lease: Lease) -> None:
        """Give up the key: its node's state is gone (adopted), and it may start afresh."""
        try:
            await self.store.delete(level_token(lease.node), last=lease.revision)
        except BadRequestError as error:
            if error.err_code != WRONG_LAST_SEQUENCE:
                raise
            log.warning("the lease on node %s's state changed hands meanwhile", lease.node)

    async def stop(self) -> None:
        if self._answering is not None:
            try:
                await self._answering.unsubscribe()
            except Exception:
                pass
