"""Fixtures for the client samples (samples/<language>/): each runnable sample is built once per
test session exactly as its README says, then run as a program against a live certmq, in
mutual mode with a CA registered through the code flow, and in one-way mode with Signature
credentials.

The instance helpers come from the certificate tests (tests/mtls/conftest.py, loaded here under
another name so that pytest does not take its fixtures twice); certificates are made with the
openssl command line (tests/mtls/openssl_pki.py).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mtls"))

from openssl_pki import Issued, make_ca, make_device

TESTS = Path(__file__).resolve().parents[1]


def _load_certificate_fixtures():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("certmq_mtls_fixtures", TESTS / "mtls" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_certificate_fixtures = _load_certificate_fixtures()
Instance = _certificate_fixtures.Instance
start_instance = _certificate_fixtures.start_instance

PROJECT_ROOT = TESTS.parent
SAMPLES = PROJECT_ROOT / "samples"
RUN_TIMEOUT = 60  # seconds one sample program may take; each gives up on its own after --timeout
# `make test` fetches the Maven, Go and npm dependencies before the tests; a run without it
# downloads them in the first build.
BUILD_TIMEOUT = 600

SECTION = re.compile(r"<!-- sample: ([\w-]+) -->(.*?)<!-- end sample -->", re.S)
SHELL_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def readme_sections(language: str) -> dict[str, str]:
    """The shell commands of each marked section of samples/<language>/README.md."""
    text = (SAMPLES / language / "README.md").read_text()
    return {name: "\n".join(SHELL_BLOCK.findall(body)) for name, body in SECTION.findall(text)}


@dataclass(frozen=True)
class Sample:
    """One language's two programs, ready to run from the project root."""

    language: str  # its directory under samples/
    name: str  # as its programs name themselves: "hello from the <name> sample"
    programs: dict[str, list[str]] = field(default_factory=dict)  # "one-way" / "mutual" → command

    def payload(self, mode: str) -> str:
        return f"hello from the {self.name} sample ({'one-way TLS' if mode == 'one-way' else 'mutual TLS'})"


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def error(self) -> str:
        """The one line a failed sample prints."""
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one error line on stderr, got:\n{self.stderr}"
        return lines[0]

    def __str__(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.1f} s\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def tool_environment() -> dict[str, str]:
    """The test run's environment with the virtualenv's programs (python3, certmq) first on PATH
    and no MQTT_* variables, so that each sample gets only the options a test gives it."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MQTT_")}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    return environment


def require_tool(tool: str, how: str) -> None:
    if shutil.which(tool, path=tool_environment()["PATH"]) is None:
        pytest.fail(f"{tool} not found: {how} (.ci/run and `make test` install it)", pytrace=False)


def run_shell(script: str, cwd: Path, environment: dict[str, str], timeout: float, what: str) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}):\n$ {script}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}",
            pytrace=False,
        )


# Each runnable sample: the tools its build needs, and its two programs as run from the project root.
RUNNABLE = {
    "python": ("Python", ["python3"], {"one-way": ["python3", "samples/python/one_way.py"],
                                       "mutual": ["python3", "samples/python/mutual.py"]}),
    "javascript": ("JavaScript", ["node", "npm"], {"one-way": ["node", "samples/javascript/one_way.mjs"],
                                                    "mutual": ["node", "samples/javascript/mutual.mjs"]}),
    "c": ("C", ["cc", "make"], {"one-way": ["samples/c/build/one_way"], "mutual": ["samples/c/build/mutual"]}),
    "java": ("Java", ["java", "mvn"], {
        "one-way": ["java", "-cp", "samples/java/target/certmq-samples.jar", "certmq.samples.OneWay"],
        "mutual": ["java", "-cp", "samples/java/target/certmq-samples.jar", "certmq.samples.Mutual"],
    }),
    "go": ("Go", ["go"], {"one-way": ["samples/go/build/one_way"], "mutual": ["samples/go/build/mutual"]}),
}  # fmt: skip
TOOL_HINTS = {
    "python3": "install Python 3",
    "node": "install Node.js 18 or later (Debian: nodejs)",
    "npm": "install npm (Debian: npm)",
    "cc": "install a C compiler (Debian: gcc)",
    "make": "install make",
    "java": "install a JDK 11 or later (Debian: default-jdk-headless)",
    "mvn": "install Maven (Debian: maven)",
    "go": "install Go 1.18 or later (Debian: golang)",
}


def build_sample(language: str) -> Sample:
    """Check the toolchain, then run the build section of the sample's README as written."""
    name, tools, programs = RUNNABLE[language]
    for tool in tools:
        require_tool(tool, TOOL_HINTS[tool])
    if language == "c" and not Path("/usr/include/MQTTClient.h").exists():
        pytest.fail("Eclipse Paho C not found: apt-get install libpaho-mqtt-dev", pytrace=False)
    build = readme_sections(language).get("build", "")
    if build.strip():
        run_shell(build, PROJECT_ROOT, tool_environment(), BUILD_TIMEOUT, f"building the {name} sample")
    return Sample(language, name, programs)


@pytest.fixture(scope="session", params=list(RUNNABLE))
def sample(request: pytest.FixtureRequest) -> Sample:
    """Each runnable sample in turn, built once for the session."""
    return build_sample(request.param)


def run_program(
    sample: Sample,
    mode: str,
    *arguments: str,
    environment: dict[str, str] | None = None,
    exits_within: float = RUN_TIMEOUT,
) -> Run:
    """Run one sample program from the project root with these flags (and MQTT_* variables);
    it fails the test unless the program exits by itself within ``exits_within`` seconds."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            [*sample.programs[mode], *arguments],
            cwd=PROJECT_ROOT,
            env={**tool_environment(), **(environment or {})},
            capture_output=True,
            text=True,
            timeout=exits_within,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {sample.name} sample's {mode} program was still running after {exits_within} s")
    return Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


@dataclass
class Brokers:
    """The two certmq instances the samples talk to.

    ``mutual``: mutual mode, the CA `fleet-ca` registered through the code flow, the server
    certificate that `certmq init` made (localhost, 127.0.0.1, ::1), as `make run` has it.
    ``one_way``: one-way mode, credentials required, and a server certificate for the name
    `localhost` only, so that connecting to 127.0.0.1 is a wrong server name.
    """

    mutual: Instance
    one_way: Instance
    one_way_server_ca: Path
    work: Path

    def device(self, name: str | None = None) -> Issued:
        """A new device certificate of `fleet-ca`, not registered yet."""
        assert self.mutual.fleet_ca is not None
        return make_device(
            self.work / "devices", self.mutual.fleet_ca, name or f"device-{uuid.uuid4().hex[:8]}"
        )

    def stranger(self) -> Issued:
        """A device certificate of a CA that was never registered."""
        unknown_ca = make_ca(self.work / "unknown", "unknown-ca")
        return make_device(self.work / "unknown", unknown_ca, f"stranger-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    server = tmp_path_factory.mktemp("server-certificate")
    certmq = [sys.executable, "-m", "certmq", "pki"]
    subprocess.run([*certmq, "ca", "--cn", "samples server CA", "--out", str(server / "ca")], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([*certmq, "server", "--ca-dir", str(server / "ca"), "--cn", "localhost", "--out",
                    str(server / "localhost")], check=True, capture_output=True)  # fmt: skip

    broker, work = start_instance(
        tmp_path_factory, CERTMQ_INSTANCE_AUTH_MODE="mutual", CERTMQ_AUTH_ANONYMOUS="false"
    )
    mutual = Instance(broker, work)
    mutual.fleet_ca = make_ca(work / "fleet", "fleet-ca")
    mutual.fleet_sn = mutual.register_ca(mutual.fleet_ca, "fleet")

    broker, _ = start_instance(
        tmp_path_factory,
        CERTMQ_INSTANCE_AUTH_MODE="one-way",
        CERTMQ_AUTH_ANONYMOUS="false",
        CERTMQ_TLS_CERT_FILE=str(server / "localhost" / "server.pem"),
        CERTMQ_TLS_KEY_FILE=str(server / "localhost" / "server.key"),
    )
    one_way = Instance(broker, work)
    yield Brokers(mutual, one_way, server / "ca" / "ca.pem", work)
    for instance in (mutual, one_way):
        instance.close()
        assert instance.broker.stop() == 0, instance.broker.log_tail()


def credentials(instance: Instance) -> list[str]:
    """Signature credentials from `certmq init --json`: the flags that give them to a sample."""
    info = instance.broker.init_info
    return ["--access-key-id", info["access_key_id"], "--access-key-secret", info["access_key_secret"],
            "--instance-id", info["instance_id"]]  # fmt: skip


def topic_for(sample: Sample, label: str) -> str:
    return f"samples/{sample.language}/{label}/{uuid.uuid4().hex[:8]}"
