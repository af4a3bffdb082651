"""Micro-benchmark of the MQTT codec's hot paths: decoding and encoding a small PUBLISH.

Run with ``PYTHONPATH=src python bench/codec_micro.py``. Prints microseconds per packet
(best of several repeats, so the numbers are the cost of the code, not of the machine's noise).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from functools import partial

from certmq.mqtt.decoding import PacketDecoder
from certmq.mqtt.encoding import encode
from certmq.mqtt.packets import Publish
from certmq.mqtt.properties import PropertyId

BATCH = 100  # packets per feed, as when a busy connection delivers a full socket read


def _best_microseconds(
    statement: Callable[[], object], per_call: int, number: int = 2000, repeat: int = 7
) -> float:
    timer = timeit.Timer(statement)
    return min(timer.repeat(repeat=repeat, number=number)) / number / per_call * 1e6


def main() -> None:
    cases = {
        "3.1.1 QoS 0, 16-byte topic, 32-byte payload": (Publish("sensors/room1/t", b"x" * 32), 4),
        "3.1.1 QoS 1": (Publish("sensors/room1/t", b"x" * 32, qos=1, packet_id=7), 4),
        "5.0 QoS 0, no properties": (Publish("sensors/room1/t", b"x" * 32), 5),
        "5.0 QoS 1, expiry + user property": (
            Publish(
                "sensors/room1/t",
                b"x" * 32,
                qos=1,
                packet_id=7,
                properties={PropertyId.MESSAGE_EXPIRY_INTERVAL: 60, PropertyId.USER_PROPERTY: [("k", "v")]},
            ),
            5,
        ),
        "3.1.1 QoS 0, 4 KiB payload": (Publish("sensors/room1/t", b"x" * 4096), 4),
    }
    print(f"{'case':45} {'decode µs':>10} {'decode 1/feed':>14} {'encode µs':>10}")
    for name, (packet, version) in cases.items():
        data = encode(packet, version)
        batch = data * BATCH
        decoder = PacketDecoder(protocol_version=version)
        decode_batched = _best_microseconds(partial(decoder.feed, batch), BATCH, number=200)
        decode_single = _best_microseconds(partial(decoder.feed, data), 1)
        encode_time = _best_microseconds(partial(encode, packet, version), 1)
        print(f"{name:45} {decode_batched:10.2f} {decode_single:14.2f} {encode_time:10.2f}")


if __name__ == "__main__":
    main()
