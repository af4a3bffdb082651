"""Each runnable sample's README is run as written, from a fresh instance as `make run` starts
it (one-way mode, anonymous clients allowed, the demo device CA registered) to a delivered
message in one-way and then in mutual mode, with the demo device and with a CA of its own: the shell blocks of its one-way and mutual sections, in order, in one shell, with
only the port given to the programs through MQTT_PORT. Its build section ran when the sample
was built for the session (conftest.build_sample)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from broker_process import start_broker
from conftest import SAMPLES, Sample, readme_sections, tool_environment


def test_the_readme_has_build_one_way_and_mutual_sections(sample: Sample) -> None:
    sections = readme_sections(sample.language)
    assert set(sections) == {"build", "one-way", "mutual"}
    assert " ".join(sample.programs["one-way"]) in sections["one-way"]
    assert " ".join(sample.programs["mutual"]) in sections["mutual"]


def test_the_readme_runs_as_written_from_make_run_to_a_delivered_message(
    sample: Sample, tmp_path: Path
) -> None:
    sections = readme_sections(sample.language)
    broker = start_broker(tmp_path / "data", {"CERTMQ_DEMO": "true"})
    (tmp_path / "samples").symlink_to(SAMPLES)
    environment = {
        **tool_environment(),
        **{name: value for name, value in broker.environment.items() if name.startswith("CERTMQ_")},
        "MQTT_PORT": str(broker.tls_port),
    }
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"{sections['one-way']}\n{sections['mutual']}"],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"the {sample.name} README failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"{broker.log_tail()}",
                pytrace=False,
            )
        lines = result.stdout.splitlines()
        for mode, device in (
            ("one-way TLS", "device-0001"),
            ("mutual TLS", "device-0001"),
            ("mutual TLS", "sensor-001"),
        ):
            assert f"connected to localhost:{broker.tls_port} as GID_demo@@@{device} ({mode})" in lines, (
                result.stdout
            )
        for mode, count in (("one-way TLS", 1), ("mutual TLS", 2)):
            received = f"received on demo/hello: hello from the {sample.name} sample ({mode})"
            assert lines.count(received) == count, result.stdout
        devices = subprocess.run(
            ["certmq", "device", "list", "--json"], cwd=tmp_path, env=environment, capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        assert sorted((device["name"], device["status"]) for device in json.loads(devices.stdout)) == [
            ("device-0001", "active"),  # the demo device of `make run`
            ("sensor-001", "active"),
        ]
    finally:
        assert broker.stop() == 0, broker.log_tail()
