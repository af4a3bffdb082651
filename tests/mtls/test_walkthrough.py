"""docs/certificates.md is run as written: every `sh` block of each walkthrough, in order,
against a fresh instance, with only the ports changed to the test's free ones."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import start_broker

WALKTHROUGH = Path(__file__).resolve().parents[2] / "docs" / "certificates.md"
SECTION = re.compile(r"<!-- walkthrough: (\w+) -->(.*?)<!-- end walkthrough -->", re.S)
SHELL_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def walkthroughs() -> dict[str, str]:
    text = WALKTHROUGH.read_text()
    return {name: "\n".join(SHELL_BLOCK.findall(body)) for name, body in SECTION.findall(text)}


def test_the_document_has_both_walkthroughs() -> None:
    found = walkthroughs()
    assert set(found) == {"certmq", "openssl"}
    assert all("mosquitto_pub" in script for script in found.values())


def test_the_walkthroughs_run_as_written(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "data", {"CERTMQ_AUTH_ANONYMOUS": "false"})
    environment = {
        **broker.environment,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    try:
        for name, script in walkthroughs().items():
            script = script.replace("-p 8883", f"-p {broker.tls_port}")
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=tmp_path,
                env=environment,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            if result.returncode != 0:
                pytest.fail(
                    f"the {name} walkthrough failed:\n{result.stdout}\n{result.stderr}\n{broker.log_tail()}"
                )
        devices = subprocess.run(
            ["certmq", "device", "list", "--json"], cwd=tmp_path, env=environment, capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        assert {"sensor-001", "meter-17"} <= {device["name"] for device in json.loads(devices.stdout)}
    finally:
        assert broker.stop() == 0, broker.log_tail()
