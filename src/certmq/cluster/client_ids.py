"""Client ids unique across the cluster (docs/cluster.md, "One client id, one node").

A JetStream key-value bucket says which node last accepted each client id. Before a CONNECT is
accepted here, this node reads the bucket: when another node holds the id, it asks that node
to give it up (a NATS request to the node's takeover subject). That node closes its connection
as a takeover on one broker does (DISCONNECT 0x8E, the will as MQTT says), and answers with the
session when it continues (no Clean Start): its subscriptions, queued and in-flight messages
and will, as records of the journal's format (certmq.broker.session_transfer; through the
object store ``<PREFIX>_MOVING`` when they do not fit in one NATS message), which this node
resumes; or refuses, when the session belongs to another identity. Then the bucket names this
node.

A node that is gone does not answer (NATS says at once that nobody listens): its sessions are
adopted first, by this node or by the one already adopting them (certmq.cluster.adoption), and
the client id is then claimed from wherever the bucket says its session went. Two nodes
claiming one id at the same moment are ordered by the bucket: the second write names the node
that keeps it, and the other is asked to give it up at the next claim.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from certmq.broker.client_id_claims import Claim, MovedSession
from certmq.broker.core import BrokerCore
from certmq.broker.session_transfer import encode_session
from certmq.cluster.nats_link import NatsLink, failure_text, key_value_bucket
from certmq.cluster.subjects import client_token

log = logging.getLogger("certmq.cluster")

# How long the node holding a client id has to answer before the id is taken anyway.
TAKEOVER_TIMEOUT = 2.0
# How long a claim waits for the sessions of a node that is gone to be adopted.
ADOPTION_WAIT = 10.0


class ClusterClientIds:
    """Implements certmq.broker.client_id_claims.ClientIdClaims over NATS."""

    def __init__(
        self, core: BrokerCore[Any], link: NatsLink, *, node: str, prefix: str, replicas: int
    ) -> None:
        self.core = core
        self.link = link
        self.node = node
        self.replicas = replicas
        self._bucket_name = f"{prefix.replace('.', '_').upper()}_CLIENTS"
        self._takeover_prefix = f"{prefix}.takeover"
        self._moving_bucket = f"{prefix.replace('.', '_').upper()}_MOVING"
        self._bucket: KeyValue | None = None
        self._subscription: Subscription | None = None
        self.taken_over_remotely = 0  # this node's clients claimed by another node
        # Returns once the sessions of a node that is gone are adopted (certmq.cluster.adoption);
        # None: this node does not adopt (they are not kept in JetStream).
        self.settle: Callable[[str], Awaitable[None]] | None = None

    async def set_up(self) -> None:
        """After every (re)connection: the bucket and this node's takeover subject."""
        client = self.link.client
        assert client is not None
        if self._bucket is None:
            self._bucket = await key_value_bucket(
                client,
                KeyValueConfig(
                    bucket=self._bucket_name, history=1, storage=StorageType.MEMORY, replicas=self.replicas
                ),
            )
        if self._subscription is None:
            self._subscription = await client.subscribe(
                f"{self._takeover_prefix}.{self.node}", cb=self._on_takeover
            )

    async def claim(self, client_id: str, owner: str, clean_start: bool) -> Claim:
        bucket = self._bucket
        client = self.link.client
        if bucket is None or client is None or not self.link.connected:
            return Claim()  # NATS out of reach: taken here, as on one broker
        key = client_token(client_id)
        try:
            holder = (await bucket.get(key)).value
        except KeyNotFoundError:
            holder = None
        claim = Claim()
        if holder and holder.decode() != self.node:
            claim = await self._take_from(holder.decode(), client_id, owner, clean_start)
        if claim.refusal is None:
            await bucket.put(key, self.node.encode())
        return claim

    async def _holder(self, client_id: str) -> str | None:
        assert self._bucket is not None
        try:
            holder = (await self._bucket.get(client_token(client_id))).value
        except KeyNotFoundError:
            return None
        return holder.decode() if holder else None

    async def _take_from(
        self, node: str, client_id: str, owner: str, clean_start: bool, *, again: bool = True
    ) -> Claim:
        client = self.link.client
        assert client is not None
        request = json.dumps(
            {"client_id": client_id, "owner": owner, "clean_start": clean_start, "node": self.node}
        ).encode()
        try:
            reply = await client.request(f"{self._takeover_prefix}.{node}", request, timeout=TAKEOVER_TIMEOUT)
        except (NoRespondersError, NatsTimeoutError):
            log.info("node %s, which held client id %s, did not answer", node, client_id)
            if not again or not await self._adopted(node):
                return Claim()
            holder = await self._holder(client_id)
            if holder is None or holder in (node, self.node):
                return Claim()
            return await self._take_from(holder, client_id, owner, clean_start, again=False)
        answer = json.loads(reply.data)
        if "refused" in answer:
            return Claim(refusal=answer["refused"])
        session = answer.get("session")
        if session is None:
            return Claim()
        if "object" in session:
            records = await self._fetch(session["object"])
        else:
            records = base64.b64decode(session["records"])
        return Claim(session=MovedSession(records, float(session["disconnected_at"])))

    async def _adopted(self, node: str) -> bool:
        """Wait until the sessions of ``node``, which did not answer, are adopted; whether they
        may have moved (else the client id is simply taken)."""
        if self.settle is None:
            return False
        try:
            await asyncio.wait_for(self.settle(node), ADOPTION_WAIT)
        except Exception as error:
            log.warning(
                "the sessions of node %s were not adopted within %.0f s: %s",
                node,
                ADOPTION_WAIT,
                failure_text(error),
            )
            return False
        return True

    async def reassign(self, client_ids: list[str], node: str) -> list[str]:
        """Name this node in the bucket for each of ``client_ids`` it names ``node`` for (this
        node adopted their sessions); returns those another node holds since."""
        bucket = self._bucket
        assert bucket is not None
        elsewhere = []
        for client_id in client_ids:
            key = client_token(client_id)
            try:
                entry = await bucket.get(key)
            except KeyNotFoundError:
                entry = None
            holder = None if entry is None or not entry.value else entry.value.decode()
            if holder == self.node:
                continue
            if holder is not None and holder != node:
                elsewhere.append(client_id)
                continue
            try:
                if entry is None:
                    await bucket.create(key, self.node.encode())
                else:
                    await bucket.update(key, self.node.encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                elsewhere.append(client_id)  # claimed meanwhile
        return elsewhere

    async def _on_takeover(self, msg: Msg) -> None:
        """Another node claims one of this node's client ids."""
        try:
            request = json.loads(msg.data)
            answer, records = self._give_up(
                request["client_id"], request["owner"], bool(request["clean_start"]), request["node"]
            )
        except (ValueError, KeyError, TypeError) as error:
            log.warning("a takeover request this node does not read: %s", error)
            answer, records = {}, None
        if records is not None:
            moved = answer["session"]
            client = self.link.client
            if client is not None and len(records) * 4 // 3 + 1024 > client.max_payload:
                # Too large for one NATS message: it travels through the object store.
                moved["object"] = await self._deposit(records)
            else:
                moved["records"] = base64.b64encode(records).decode()
        await msg.respond(json.dumps(answer).encode())

    async def _moving(self) -> ObjectStore:
        client = self.link.client
        assert client is not None
        jetstream = client.jetstream()
        try:
            return await jetstream.object_store(self._moving_bucket)
        except Exception:
            return await jetstream.create_object_store(
                self._moving_bucket,
                ObjectStoreConfig(
                    description="sessions moving between the nodes of a certmq cluster",
                    storage=StorageType.FILE,
                    replicas=self.replicas,
                ),
            )

    async def _deposit(self, records: bytes) -> str:
        name = f"{self.node}-{uuid.uuid4().hex}"
        await (await self._moving()).put(name, records)
        return name

    async def _fetch(self, name: str) -> bytes:
        store = await self._moving()
        result = await store.get(name)
        await store.delete(name)
        return result.data or b""

    def _give_up(
        self, client_id: str, owner: str, clean_start: bool, node: str
    ) -> tuple[dict[str, Any], bytes | None]:
        core = self.core
        session = core.sessions.get(client_id)
        if session is None:
            return {}, None
        if not core.may_resume(client_id, owner):
            return {"refused": "the session of this client id belongs to another identity"}, None
        log.info("client id %s is taken over by node %s", client_id, node)
        self.taken_over_remotely += 1
        if session.connection is not None:
            session.connection.take_over(clean_start)
        session = core.sessions.get(client_id)
        if session is None:
            return {}, None
        if clean_start:
            core.end_session(session)
            return {}, None
        # Whole, in the turn it is forgotten here: nothing queued for it meanwhile is lost.
        now = time.time()
        records = encode_session(session, now, now - core.loop.time())
        core.ownership.hand_over(session)
        return {"session": {"disconnected_at": now}}, records
