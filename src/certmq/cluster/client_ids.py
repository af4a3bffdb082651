"""Client ids unique across the cluster (docs/cluster.md, "One client id, one node").

A JetStream key-value bucket says which node last accepted each client id. Before a CONNECT is
accepted here, this node reads the bucket: when another node holds the id, it asks that node
to give it up (a NATS request to the node's takeover subject). That node closes its connection
as a takeover on one broker does (DISCONNECT 0x8E, the will as MQTT says), and answers with the
session's subscriptions when the session continues (no Clean Start), which this node resumes;
or refuses, when the session belongs to another identity. Then the bucket names this node.

A node that is gone does not answer (NATS says at once that nobody listens): the client id is
simply taken. Two nodes claiming one id at the same moment are ordered by the bucket: the
second write names the node that keeps it, and the other is asked to give it up at the next
claim.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from certmq.broker.client_id_claims import Claim, MovedSession
from certmq.broker.core import BrokerCore
from certmq.cluster.nats_link import NatsLink
from certmq.cluster.subjects import client_token

log = logging.getLogger("certmq.cluster")

# How long the node holding a client id has to answer before the id is taken anyway.
TAKEOVER_TIMEOUT = 2.0


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
        self._bucket: KeyValue | None = None
        self._subscription: Subscription | None = None
        self.taken_over_remotely = 0  # this node's clients claimed by another node

    async def set_up(self) -> None:
        """After every (re)connection: the bucket and this node's takeover subject."""
        client = self.link.client
        assert client is not None
        jetstream = client.jetstream()
        if self._bucket is None:
            try:
                self._bucket = await jetstream.key_value(self._bucket_name)
            except Exception:
                self._bucket = await jetstream.create_key_value(
                    KeyValueConfig(
                        bucket=self._bucket_name,
                        history=1,
                        storage=StorageType.MEMORY,
                        replicas=self.replicas,
                    )
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

    async def _take_from(self, node: str, client_id: str, owner: str, clean_start: bool) -> Claim:
        client = self.link.client
        assert client is not None
        request = json.dumps(
            {"client_id": client_id, "owner": owner, "clean_start": clean_start, "node": self.node}
        ).encode()
        try:
            reply = await client.request(f"{self._takeover_prefix}.{node}", request, timeout=TAKEOVER_TIMEOUT)
        except (NoRespondersError, NatsTimeoutError):
            log.info("node %s, which held client id %s, did not answer: taken", node, client_id)
            return Claim()
        answer = json.loads(reply.data)
        if "refused" in answer:
            return Claim(refusal=answer["refused"])
        session = answer.get("session")
        if session is None:
            return Claim()
        return Claim(
            session=MovedSession(
                protocol_version=session["protocol_version"],
                expiry_interval=session["expiry_interval"],
                owner=session["owner"],
                subscriptions=[tuple(options) for options in session["subscriptions"]],
            )
        )

    async def _on_takeover(self, msg: Msg) -> None:
        """Another node claims one of this node's client ids."""
        try:
            request = json.loads(msg.data)
            answer = self._give_up(
                request["client_id"], request["owner"], bool(request["clean_start"]), request["node"]
            )
        except (ValueError, KeyError, TypeError) as error:
            log.warning("a takeover request this node does not read: %s", error)
            answer = {}
        await msg.respond(json.dumps(answer).encode())

    def _give_up(self, client_id: str, owner: str, clean_start: bool, node: str) -> dict[str, Any]:
        core = self.core
        session = core.sessions.get(client_id)
        if session is None:
            return {}
        if not core.may_resume(client_id, owner):
            return {"refused": "the session of this client id belongs to another identity"}
        log.info("client id %s is taken over by node %s", client_id, node)
        self.taken_over_remotely += 1
        if session.connection is not None:
            session.connection.take_over(clean_start)
        session = core.sessions.get(client_id)
        if session is None:
            return {}
        if clean_start:
            core.end_session(session)
            return {}
        moved = {
            "protocol_version": session.protocol_version,
            "expiry_interval": session.expiry_interval,
            "owner": session.owner,
            "subscriptions": [entry.options() for entry in session.subscriptions.values()],
        }
        core.ownership.hand_over(session)
        return {"session": moved}
