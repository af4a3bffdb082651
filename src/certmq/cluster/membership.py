"""Which nodes the cluster has: a JetStream key-value bucket, ``CERTMQ_NODES`` (the subject
prefix in capitals, then ``_NODES``), where each node keeps an entry of its own (its name, its
HTTP listener, when it started), put again every :data:`HEARTBEAT` seconds. The bucket forgets an entry :data:`TTL` seconds after it was
put, so a node that stops putting (killed, cut off from NATS) leaves the list by itself; a node
that stops cleanly deletes its entry at once.

Each node reads the bucket at every beat (for the metrics) and whenever a management request
needs the nodes to ask (certmq.cluster.control); while NATS is out of reach it goes by the last
list it read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from certmq.cluster.nats_link import NatsLink, failure_text
from certmq.cluster.subjects import level_token

log = logging.getLogger("certmq.cluster")

HEARTBEAT = 2.0
TTL = 10.0
# How long reading the bucket may take before the last list read stands for it.
READ_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Member:
    """A node as its entry in the bucket says."""

    name: str
    http: str
    started_at: datetime

    def to_json(self) -> bytes:
        return json.dumps(
            {"name": self.name, "http": self.http, "started_at": self.started_at.isoformat()}
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Member:
        """The member an entry holds; ValueError when it holds something else."""
        value: Any = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        name, http, started_at = value.get("name"), value.get("http", ""), value.get("started_at")
        if (
            not isinstance(name, str)
            or not name
            or not isinstance(http, str)
            or not isinstance(started_at, str)
        ):
            raise ValueError("name, http or started_at missing")
        return cls(name, http, datetime.fromisoformat(started_at))


def bucket_name(prefix: str) -> str:
    """The bucket of the cluster whose subjects start with ``prefix``."""
    return f"{prefix.replace('.', '_').upper()}_NODES"


class Membership:
    """This node's entry in the bucket, and the members as last read."""

    def __init__(
        self, link: NatsLink, prefix: str, this_node: Callable[[], Member], *, replicas: int
    ) -> None:
        self.link = link
        self.bucket = bucket_name(prefix)
        self.this_node = this_node
        self.replicas = replicas
        self.members: dict[str, Member] = {}
        # Reads of the bucket begun, and the last of them whose members are kept.
        self._reads = self._kept = 0
        self._store: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None

    async def join(self) -> None:
        """Put this node's entry (again, after a reconnection: the bucket may be new) and read
        the members; from the first time on, renew the entry every beat. A set-up step of the
        link (certmq.cluster.nats_link): tried again until it succeeds (a bucket just made has no
        leader for a moment), so the node is ready only once the others can see it."""
        self._store = None
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._beat())
        await self._renew()

    async def stop(self) -> None:
        """Stop putting this node's entry, and delete it: the others see it gone at once."""
        if self._task is not None:
            self._task.cancel()
        store = self._store
        if store is not None and self.link.connected:
            try:
                await asyncio.wait_for(store.delete(level_token(self.this_node().name)), READ_TIMEOUT)
            except Exception as error:
                log.debug("could not delete this node's entry from %s: %s", self.bucket, error)

    async def _renew(self) -> None:
        store = await self._open()
        me = self.this_node()
        await asyncio.wait_for(store.put(level_token(me.name), me.to_json()), READ_TIMEOUT)
        await self._refresh(store)

    async def _refresh(self, store: KeyValue) -> dict[str, Member]:
        """The members as the bucket says now; kept as :attr:`members` unless a read begun later
        has already been kept."""
        self._reads += 1
        ticket = self._reads
        members = await asyncio.wait_for(self._read(store), READ_TIMEOUT)
        if ticket > self._kept:
            self._kept, self.members = ticket, members
        return members

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            if not self.link.connected:
                continue  # the entry is put again once reconnected (join)
            try:
                await self._renew()
            except Exception as error:
                # The bucket may be gone with the NATS servers that held it: made again next time.
                self._store = None
                log.warning("could not renew this node's entry in %s: %s", self.bucket, failure_text(error))

    async def _open(self) -> KeyValue:
        if self._store is None:
            client = self.link.client
            assert client is not None
            jetstream = client.jetstream()
            config = KeyValueConfig(
                bucket=self.bucket,
                history=1,
                ttl=TTL,
                storage=StorageType.MEMORY,
                replicas=self.replicas,
                description="the nodes of a certmq cluster",
            )
            try:
                self._store = await jetstream.create_key_value(config)
            except Exception:
                self._store = await jetstream.key_value(self.bucket)
        return self._store

    async def _read(self, store: KeyValue) -> dict[str, Member]:
        # The keys are the subjects the bucket's stream holds, as its leader says: nats-py's
        # KeyValue.keys() reads them through a consumer that may report none at all before the
        # first arrives.
        client = self.link.client
        assert client is not None
        subjects = f"$KV.{self.bucket}."
        info = await client.jetstream().stream_info(f"KV_{self.bucket}", subjects_filter=f"{subjects}>")
        keys = [subject.removeprefix(subjects) for subject in info.state.subjects or {}]
        members: dict[str, Member] = {}
        for entry in await asyncio.gather(*(store.get(key) for key in keys), return_exceptions=True):
            if isinstance(entry, KeyNotFoundError):
                continue  # deleted (a node that stopped; nats-py says not found), or expired since
            if isinstance(entry, BaseException):
                raise entry
            try:
                member = Member.from_json(entry.value or b"")
            except ValueError as error:
                log.warning("the entry %s of %s is not a node's, ignored: %s", entry.key, self.bucket, error)
                continue
            members[member.name] = member
        return members

    async def current(self) -> dict[str, Member]:
        """The members as the bucket says now, this node included; the last list read when NATS
        is out of reach."""
        if not self.link.connected:
            return self.members
        try:
            return await self._refresh(await self._open())
        except Exception as error:
            self._store = None
            log.warning("could not read the nodes from %s: %s", self.bucket, failure_text(error))
        return self.members
