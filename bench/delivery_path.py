"""certmq's Python CPU per delivery, in this process, without sockets: the delivery path alone.

    .venv/bin/python bench/delivery_path.py              # the four cells of bench/run.py
    .venv/bin/python bench/delivery_path.py --profile    # each cell under cProfile
    .venv/bin/python bench/delivery_path.py --durable    # 1 -> 1 QoS 1 to a kept session, with its journal

One publisher and K subscribers are MQTTConnection objects of one BrokerCore over stand-in
transports that keep what they are given. The publisher's PUBLISH packets (MQTT 3.1.1, 32-byte
payloads) are fed in batches of 50, as a socket read would bring them; after each batch every
subscriber is handed what the broker wrote to it, decoded by certmq's own decoder, and at QoS 1
acknowledges each PUBLISH with a PUBACK, as a client does. The time is the process's CPU time
over the whole exchange, divided by the deliveries; the decoding of the subscribers' side is
left out.

To compare with another source tree, run it with that tree first on the path:
``PYTHONPATH=OTHER/src .venv/bin/python bench/delivery_path.py``.

What the end-to-end benchmark (bench/run.py) cannot separate from its kernel, sockets and load
generator, or from a shared machine's noise, this shows to a few percent: the number to watch
while changing the delivery path. A run checks that every subscriber received every message.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from certmq.auth.authenticator import InstanceAuthenticator
from certmq.broker.connection import CONNECTED, Listener, MQTTConnection
from certmq.broker.core import BrokerCore
from certmq.config import MqttSection
from certmq.mqtt.decoding import PacketDecoder
from certmq.mqtt.encoding import encode
from certmq.mqtt.packets import (
    Connect,
    PubAck,
    Publish,
    Subscribe,
    Subscription,
)
from stand_in import StandInTransport

MQTT_3_1_1 = 4
TOPIC = "bench/delivery"
BATCH = 50  # PUBLISH packets per data_received, as one read of a busy socket brings them


class _Client:
    def __init__(self, core: BrokerCore, listener: Listener, client_id: str, clean: bool) -> None:
        self.transport = StandInTransport()
        self.connection = MQTTConnection(core, listener)
        self.connection.connection_made(self.transport)  # type: ignore[arg-type]
        self.decoder = PacketDecoder(protocol_version=MQTT_3_1_1)
        self.connection.data_received(
            encode(Connect(client_id, clean_start=clean, keep_alive=60), MQTT_3_1_1)
        )
        self.received = 0

    def read(self) -> list[Any]:
        return self.decoder.feed(self.transport.take())


def _core() -> BrokerCore:
    settings: dict[str, Any] = {}
    try:
        from certmq.auth.admission import ListenerPolicy
    except ImportError:  # a source tree from before listener policies, to compare with
        pass
    else:
        settings["policy"] = ListenerPolicy(anonymous=True)
    authenticator = InstanceAuthenticator(
        instance_id="mqtt-bench",
        access_keys={},
        auth_mode=lambda: "one-way",
        anonymous=True,
        index=None,
        audit=lambda **fields: None,
        **settings,
    )
    return BrokerCore(MqttSection(), authenticator=authenticator)


async def _run(subscribers: int, messages: int, qos: int, durable: bool) -> float:
    """CPU seconds per delivery for one exchange."""
    with tempfile.TemporaryDirectory(prefix="certmq-delivery-") as workdir:
        core = _core()
        keeper = None
        if durable:  # as certmq serve keeps its state, with the default durability
            from certmq.broker.checkpoint_store import SqliteStateStore
            from certmq.broker.durable_storage import LocalStorage
            from certmq.broker.state_keeper import StateKeeper

            keeper = StateKeeper(
                core, LocalStorage(SqliteStateStore(Path(workdir) / "state.db"), Path(workdir) / "journal")
            )
            await keeper.restore()
        listener = Listener("tcp")
        clients = [
            _Client(core, listener, f"sub-{number}", clean=not durable) for number in range(subscribers)
        ]
        for client in clients:
            client.connection.data_received(encode(Subscribe(1, [Subscription(TOPIC, qos=qos)]), MQTT_3_1_1))
        publisher = _Client(core, listener, "pub", clean=True)
        for _ in range(20):  # CONNACKs and SUBACKs that wait for the journal
            await asyncio.sleep(0.001 if durable else 0)
        if not all(client.connection.state == CONNECTED for client in (*clients, publisher)):
            raise RuntimeError("a client did not connect")
        for client in clients:
            client.read()
        publisher.read()
        payload = b"x" * 32
        batches = [
            b"".join(
                encode(
                    Publish(TOPIC, payload, qos=qos, packet_id=(number % 65535) + 1 if qos else None),
                    MQTT_3_1_1,
                )
                for number in range(start, min(start + BATCH, messages))
            )
            for start in range(0, messages, BATCH)
        ]
        started = time.process_time()
        decoding = 0.0
        for batch in batches:
            publisher.connection.data_received(batch)
            await asyncio.sleep(0)
            for client in clients:
                before = time.process_time()
                packets = client.read()
                acks = b"".join(encode(PubAck(packet.packet_id), MQTT_3_1_1) for packet in packets if qos)
                decoding += time.process_time() - before
                client.received += len(packets)
                if acks:
                    client.connection.data_received(acks)
            publisher.transport.take()
        while durable and any(client.received < messages for client in clients):
            await asyncio.sleep(0.001)
            for client in clients:
                packets = client.read()
                client.received += len(packets)
                acks = b"".join(encode(PubAck(packet.packet_id), MQTT_3_1_1) for packet in packets)
                if acks:
                    client.connection.data_received(acks)
        elapsed = time.process_time() - started - decoding
        missing = sum(messages - client.received for client in clients)
        if keeper is not None:
            await keeper.close()
        if missing:
            raise RuntimeError(f"{missing} deliveries missing")
        return elapsed / (messages * subscribers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs per cell; the median is reported (default 5)"
    )
    parser.add_argument("--deliveries", type=int, default=40_000, help="deliveries per run (default 40,000)")
    parser.add_argument(
        "--fanout", type=int, default=100, help="subscribers in the fan-out cells (default 100)"
    )
    parser.add_argument("--profile", action="store_true", help="each cell once under cProfile")
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile (default 25)")
    parser.add_argument(
        "--durable", action="store_true", help="only the durable cell (a kept session, the journal)"
    )
    parser.add_argument(
        "--cell", choices=("qos0-1", "qos1-1", "qos0-fanout", "qos1-fanout"), help="only this cell"
    )
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="no unrecorded run first (for counting instructions: see docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)

    cells = {
        "qos0-1": (1, 0, False),
        "qos1-1": (1, 1, False),
        "qos0-fanout": (args.fanout, 0, False),
        "qos1-fanout": (args.fanout, 1, False),
    }
    chosen = [(1, 1, True)] if args.durable else [cells[args.cell]] if args.cell else list(cells.values())
    for subscribers, qos, durable in chosen:
        label = f"qos{qos} 1->{subscribers}{' durable' if durable else ''}"
        messages = max(args.deliveries // subscribers, BATCH)
        if not args.no_warm_up:
            uvloop.run(_run(subscribers, messages, qos, durable))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            uvloop.run(_run(subscribers, messages, qos, durable))
            profiler.disable()
            print(f"--- {label}")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
            continue
        costs = [uvloop.run(_run(subscribers, messages, qos, durable)) for _ in range(args.repeat)]
        print(
            f"  {label:<20} {statistics.median(costs) * 1e6:6.2f} µs of Python per delivery "
            f"(median of {args.repeat}: {', '.join(f'{cost * 1e6:.2f}' for cost in costs)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
