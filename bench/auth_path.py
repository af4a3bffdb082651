"""The event loop's CPU for a mutual TLS CONNECT's authentication, registered against first-time.

Run with ``PYTHONPATH=src python bench/auth_path.py [--connects N] [--repeat R]
[--young-threshold T]``. It opens a registry (SQLite in a temporary directory), registers a CA
through the code flow, issues N + 1 real device certificates with cryptography, and builds the
instance authenticator as the broker does (the registry's index, ``begin_registration``, the
audit log). Then, on the event loop, it authenticates N CONNECTs of one registered device and N
CONNECTs of N first-time devices, four at a time between two turns of the loop, as the TLS
listener hands them over after a full handshake (the DER of the leaf, and the fingerprint of the
CA that verified it). After the last CONNECT it waits until the registrations are written, so
their bookkeeping on the loop (the index, the events, the futures) is counted.

It prints the loop thread's CPU time per CONNECT (``time.thread_time``) and the part of it spent
in the cyclic garbage collector (a ``gc.callbacks`` timer), with the collections per generation.
Start-up objects are frozen (``gc.freeze``) as ``certmq serve`` does, and the youngest
generation's threshold is the broker's (``--young-threshold`` to compare another). The database
thread's CPU is not counted here: ``bench/registration_cost.py`` measures it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from certmq import pki
from certmq.auth.authenticator import InstanceAuthenticator
from certmq.auth.connect import ConnectAttempt
from certmq.cli.serve import YOUNG_GENERATION_THRESHOLD
from certmq.registry import DecisionEntry, RegistryService, SerialCollision, open_registry

IN_FLIGHT = 4


class CollectorTimer:
    """The thread CPU time the cyclic collector takes, and its collections per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started
            self.collections[info["generation"]] += 1


async def measure(connects: int, young_threshold: int) -> dict[str, tuple[float, float, list[int]]]:
    with tempfile.TemporaryDirectory(prefix="certmq-auth-path-") as directory:
        store = open_registry("", Path(directory))
        registry = RegistryService(store, instance_id="mqtt-bench-1")
        await registry.open()
        try:
            key = pki.generate_key("ec")
            ca = pki.create_ca("Auth path CA", key)
            code = await registry.issue_registration_code()
            verification = pki.issue_verification_certificate(ca, key, code.code)
            record = await registry.register_ca(
                "Auth path CA", pki.certificates_pem(ca).decode(), pki.certificates_pem(verification).decode()
            )
            ca_fingerprint = bytes.fromhex(record.fingerprint)
            public_key = pki.generate_key("ec").public_key()  # one key for all: only issuing time changes
            ders = [
                pki.issue_device_certificate(ca, key, f"device-{n:06d}", public_key).public_bytes(
                    Encoding.DER
                )
                for n in range(connects + 1)
            ]

            def audit(**fields: Any) -> None:
                registry.record_decision(DecisionEntry(**fields))

            authenticator = InstanceAuthenticator(
                instance_id="mqtt-bench-1",
                access_keys={},
                auth_mode=lambda: "mutual",
                anonymous=False,
                index=registry.index,
                register_device=registry.begin_registration,
                audit=audit,
                serial_collision_errors=(SerialCollision,),
            )

            def verified_issuer() -> bytes:
                return ca_fingerprint

            def attempt(number: int, der: bytes) -> ConnectAttempt:
                return ConnectAttempt(
                    "tls", "127.0.0.1:40000", f"client-{number}", None, None, 4, der, verified_issuer
                )

            registered = ders[-1]
            authenticator.authenticate(attempt(0, registered))  # registered during the warm-up
            await registry.flush_decisions()
            gc.collect()
            gc.freeze()
            gc.set_threshold(young_threshold, *gc.get_threshold()[1:])
            timer = CollectorTimer()
            results = {}
            for cell, sequence in (
                ("registered device", [registered] * connects),
                ("first-time device", ders[:-1]),
            ):
                await asyncio.sleep(0.3)  # the decision log's writer and earlier batches settle
                timer.reset()
                started = time.thread_time()
                for number, der in enumerate(sequence):
                    outcome = authenticator.authenticate(attempt(number, der))
                    if not outcome.allowed:
                        raise RuntimeError(f"{cell} {number} was refused: {outcome.reason}")
                    if number % IN_FLIGHT == IN_FLIGHT - 1:
                        await asyncio.sleep(0)
                await registry.list_devices(1, 1)  # a read waits for the registrations under way
                cpu = time.thread_time() - started
                results[cell] = (cpu / connects, timer.seconds / connects, list(timer.collections))
            gc.callbacks.remove(timer._callback)
            gc.unfreeze()
            return results
        finally:
            await registry.close()
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connects", type=int, default=3000, help="CONNECTs per cell and run")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is shown")
    parser.add_argument(
        "--young-threshold",
        type=int,
        default=YOUNG_GENERATION_THRESHOLD,
        help=f"the youngest generation's collection threshold (the broker's: {YOUNG_GENERATION_THRESHOLD})",
    )
    arguments = parser.parse_args()
    runs = [
        asyncio.run(measure(arguments.connects, arguments.young_threshold)) for _ in range(arguments.repeat)
    ]
    print(
        f"authentication on the event loop, per CONNECT (median of {arguments.repeat} runs of "
        f"{arguments.connects:,}; youngest generation collected every {arguments.young_threshold:,} objects)"
    )
    print(f"{'cell':<18} {'loop CPU µs':>11} {'of it in gc µs':>14}  collections (last run)")
    for cell in runs[0]:
        cpu = statistics.median(run[cell][0] for run in runs) * 1e6
        collector = statistics.median(run[cell][1] for run in runs) * 1e6
        print(f"{cell:<18} {cpu:>11.1f} {collector:>14.1f}  {runs[-1][cell][2]}")


if __name__ == "__main__":
    main()
