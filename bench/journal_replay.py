"""How long certmq takes to start again with a million messages queued for an offline session.

    .venv/bin/python bench/journal_replay.py [--messages 1000000] [--size 32]

Starts ``certmq serve``, gives a client a persistent session (MQTT 3.1.1, clean session off) with
a QoS 1 subscription, disconnects it, and publishes ``--messages`` QoS 1 messages to it over one
connection, counting the PUBACKs: every one of them is in the journal. Then:

1. ``kill -9`` and start again: the start reads the whole journal (no checkpoint was written).
2. SIGTERM (a clean stop writes a checkpoint) and start again: the start reads the checkpoint.

For each start it reports the time from launching the process to its MQTT port accepting
connections and the broker's own account of the restore (its log line), and the size of what it
read. Finally the subscriber reconnects and counts what it receives: every message, once.
"""

from __future__ import annotations

import argparse
import re
import socket
import struct
import tempfile
import time
from pathlib import Path

import brokers as broker_processes
import processes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLIENT_ID = "replay-subscriber"
TOPIC = "bench/replay"
WINDOW = 20_000  # PUBLISH packets the publisher keeps unacknowledged


def _packet(kind: int, body: bytes) -> bytes:
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([kind]) + bytes(encoded) + body


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _connect(port: int, client_id: str, clean: bool) -> tuple[socket.socket, bool]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = _string("MQTT") + bytes([4, 0x02 if clean else 0]) + struct.pack("!H", 600) + _string(client_id)
    sock.sendall(_packet(0x10, body))
    connack = _read_exactly(sock, 4)
    assert connack[0] == 0x20 and connack[3] == 0, f"CONNACK refused: {connack!r}"
    return sock, bool(connack[2] & 1)


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def make_session(port: int) -> None:
    sock, _ = _connect(port, CLIENT_ID, clean=False)
    sock.sendall(_packet(0x82, struct.pack("!H", 1) + _string(TOPIC) + b"\x01"))
    suback = _read_exactly(sock, 5)
    assert suback[0] == 0x90 and suback[4] == 1, f"SUBACK refused: {suback!r}"
    sock.sendall(b"\xe0\x00")
    sock.close()


def publish(port: int, count: int, size: int) -> float:
    """Publish ``count`` QoS 1 messages, at most WINDOW unacknowledged; seconds taken."""
    sock, _ = _connect(port, "replay-publisher", clean=True)
    topic = _string(TOPIC)
    payload = b"x" * size
    started = time.perf_counter()
    sent = acknowledged = 0
    pending = b""
    batch = 2000
    while acknowledged < count:
        if sent < count and sent - acknowledged < WINDOW:
            end = min(count, sent + batch)
            sock.sendall(
                b"".join(
                    _packet(0x32, topic + struct.pack("!H", number % 65535 + 1) + payload)
                    for number in range(sent, end)
                )
            )
            sent = end
            sock.setblocking(False)
            try:
                pending += sock.recv(1 << 20)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        else:
            pending += sock.recv(1 << 20)
        whole = len(pending) // 4  # a 3.1.1 PUBACK is four bytes
        acknowledged += whole
        pending = pending[whole * 4 :]
    elapsed = time.perf_counter() - started
    sock.sendall(b"\xe0\x00")
    sock.close()
    return elapsed


def receive_all(port: int, expected: int) -> int:
    """Reconnect the subscriber, acknowledge and count every message until none comes for 5 s."""
    sock, present = _connect(port, CLIENT_ID, clean=False)
    assert present, "the session did not survive"
    sock.settimeout(5)
    buffer = b""
    received = 0
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            break
        if not chunk:
            break
        buffer += chunk
        acks = []
        position = 0
        while True:
            if len(buffer) - position < 2:
                break
            length, shift, index = 0, 0, position + 1
            while index < len(buffer):
                byte = buffer[index]
                length |= (byte & 0x7F) << shift
                shift += 7
                index += 1
                if not byte & 0x80:
                    break
            else:
                break
            if len(buffer) - index < length:
                break
            if buffer[position] >> 4 == 3:
                received += 1
                topic_length = struct.unpack_from("!H", buffer, index)[0]
                acks.append(b"\x40\x02" + buffer[index + 2 + topic_length : index + 4 + topic_length])
            position = index + length
        buffer = buffer[position:]
        if acks:
            sock.sendall(b"".join(acks))
        if received >= expected and not buffer:
            sock.settimeout(1)
    sock.close()
    return received


def restart(
    workdir: Path, python: str, how: str, previous: broker_processes.RunningBroker
) -> tuple[broker_processes.RunningBroker, float, str, str]:
    """Stop ``previous`` (``kill``: SIGKILL; otherwise SIGTERM) and start again; the new broker,
    the seconds from launch to listening, its restore log line, and what it had to read."""
    stopping = time.perf_counter()
    if how == "kill":
        previous.process.kill()
    else:
        processes.stop(previous.process, grace_seconds=600)
    previous.process.wait()
    read = f"stopped in {time.perf_counter() - stopping:.1f} s; read {sizes(workdir / 'certmq' / 'data')}"
    started = time.perf_counter()
    running = broker_processes.start_certmq(workdir, python, "auto", None, ENVIRONMENT)
    seconds = time.perf_counter() - started
    restored = [line for line in running.log_file.read_text().splitlines() if "restored" in line]
    return running, seconds, restored[-1] if restored else "(no restore logged)", read


ENVIRONMENT = {
    "CERTMQ_MQTT_MAX_QUEUED_MESSAGES": "2000000",
    # No checkpoint while publishing: the first start after the crash reads the journal alone.
    "CERTMQ_MQTT_CHECKPOINT_BYTES": "0",
    "CERTMQ_MQTT_SYS_INTERVAL": "0",
}


def sizes(data_dir: Path) -> str:
    journal = sum(path.stat().st_size for path in (data_dir / "journal").glob("*.log"))
    state = data_dir / "broker-state.db"
    checkpoint = state.stat().st_size if state.exists() else 0
    return f"journal {journal / 1e6:.0f} MB, checkpoint {checkpoint / 1e6:.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=32, help="payload bytes (default 32)")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="certmq-replay-"))
    data_dir = workdir / "certmq" / "data"
    try:
        broker = broker_processes.start_certmq(workdir, args.python, "auto", None, ENVIRONMENT)
        make_session(broker.tcp_port)
        seconds = publish(broker.tcp_port, args.messages, args.size)
        print(
            f"published {args.messages:,} QoS 1 messages, all acknowledged, in {seconds:.1f} s "
            f"({args.messages / seconds:,.0f} msg/s); {sizes(data_dir)}"
        )
        for how, what in (
            ("kill", "after kill -9 (journal only)"),
            ("term", "after a clean stop (checkpoint)"),
        ):
            broker, seconds, restored, read = restart(workdir, args.python, how, broker)
            detail = re.sub(r"^.*?restored", "restored", restored)
            print(f"start {what}: listening {seconds:.1f} s after launch; {read}\n  {detail}")
        received = receive_all(broker.tcp_port, args.messages)
        print(f"the subscriber received {received:,} of {args.messages:,} messages")
        processes.stop(broker.process)
        return 0 if received == args.messages else 1
    finally:
        processes.finish(workdir, args.keep_workdir)


if __name__ == "__main__":
    raise SystemExit(main())
