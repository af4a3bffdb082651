"""Debian's mosquitto_pub and mosquitto_sub against the broker, over TCP and over TLS with the
server verified as localhost against the broker's CA."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time

import pytest

from broker_process import write_test_ca

WAIT = 10.0
MESSAGE_PREFIX = "MSG|"
VERSIONS = [pytest.param("mqttv311", id="v311"), pytest.param("mqttv5", id="v5")]


def _tool(name):
    path = shutil.which(name)
    assert path, f"{name} not found: install Debian's mosquitto-clients package"
    return path


def _connection_args(broker, tls):
    if tls:
        return ["-h", "localhost", "-p", str(broker.tls_port), "--cafile", str(broker.ca_file)]
    return ["-h", broker.host, "-p", str(broker.tcp_port)]


class Subscriber:
    """mosquitto_sub running in the background; ``start`` returns once its SUBACK arrived."""

    def __init__(self, broker, topic, tls=False, qos=0, count=1, version="mqttv5", extra=()):
        # stdbuf: mosquitto_sub buffers its output when it is not a terminal.
        self.command = [
            _tool("stdbuf"),
            "-oL",
            _tool("mosquitto_sub"),
            *_connection_args(broker, tls),
            "-V",
            version,
            "-t",
            topic,
            "-q",
            str(qos),
            "-C",
            str(count),
            "-W",
            str(int(WAIT)),
            "-d",
            "-F",
            MESSAGE_PREFIX + "%t|%q|%r|%p",
            *extra,
        ]
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)

    def start(self):
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.reader.start()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"mosquitto_sub never subscribed: {self.output}") from None
            if line is None:
                raise AssertionError(f"mosquitto_sub exited before subscribing: {self.output}")
            if "received SUBACK" in line:
                return self

    def _read(self):
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def messages(self):
        """Wait for mosquitto_sub to exit after its -C count; returns (topic, qos, retain, payload)."""
        assert self.process is not None
        try:
            code = self.process.wait(WAIT + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"mosquitto_sub did not finish: {self.output}") from None
        self.reader.join(WAIT)
        assert code == 0, f"mosquitto_sub exited {code}: {self.output}"
        found = []
        for line in self.output:
            if line.startswith(MESSAGE_PREFIX):
                topic, qos, retain, payload = line[len(MESSAGE_PREFIX) :].split("|", 3)
                found.append((topic, int(qos), retain == "1", payload))
        return found

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def subscribers():
    started = []

    def make(*args, **kwargs):
        subscriber = Subscriber(*args, **kwargs)
        started.append(subscriber)
        return subscriber.start()

    yield make
    for subscriber in started:
        subscriber.stop()


def publish(broker, topic, *args, tls=False, version="mqttv5", stdin=None):
    result = subprocess.run(
        [_tool("mosquitto_pub"), *_connection_args(broker, tls), "-V", version, "-t", topic, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, (
        f"mosquitto_pub exited {result.returncode}: {result.stdout} {result.stderr}"
    )
    return result


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pub_sub_at_each_qos(broker, subscribers, topic, tls, qos, version):
    subscriber = subscribers(broker, topic, tls=tls, qos=qos, count=1, version=version)
    publish(broker, topic, "-q", str(qos), "-m", f"hello at qos {qos}", tls=tls, version=version)
    assert subscriber.messages() == [(topic, qos, False, f"hello at qos {qos}")]


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_retained_message_with_r(broker, subscribers, topic, tls):
    publish(broker, topic, "-q", "1", "-r", "-m", "last known state", tls=tls)
    subscriber = subscribers(broker, topic, tls=tls, qos=1, count=1)
    assert subscriber.messages() == [(topic, 1, True, "last known state")]

    publish(broker, topic, "-q", "1", "-r", "-n", tls=tls)  # an empty retained message clears it
    subscriber = subscribers(broker, topic, tls=tls, qos=1, count=1)
    publish(broker, topic, "-q", "1", "-m", "live", tls=tls)
    assert subscriber.messages() == [(topic, 1, False, "live")]


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_line_mode_sends_one_message_per_line(broker, subscribers, topic, tls):
    lines = ["first line", "second line", "third line with | pipe"]
    subscriber = subscribers(broker, topic, tls=tls, qos=1, count=len(lines))
    publish(broker, topic, "-q", "1", "-l", tls=tls, stdin="\n".join(lines) + "\n")
    assert [message[3] for message in subscriber.messages()] == lines


def test_wildcard_subscription_with_verbose_topics(broker, subscribers, topic):
    subscriber = subscribers(broker, f"{topic}/#", qos=1, count=2)
    publish(broker, f"{topic}/a/b", "-q", "1", "-m", "one")
    publish(broker, f"{topic}/c", "-q", "1", "-m", "two")
    assert subscriber.messages() == [(f"{topic}/a/b", 1, False, "one"), (f"{topic}/c", 1, False, "two")]


def test_wrong_ca_fails_clearly(broker, tmp_path, topic):
    wrong_ca, _ = write_test_ca(tmp_path, "a CA that did not sign the broker")
    result = subprocess.run(
        [
            _tool("mosquitto_pub"),
            "-h",
            "localhost",
            "-p",
            str(broker.tls_port),
            "--cafile",
            str(wrong_ca),
            "-t",
            topic,
            "-m",
            "never",
            "-d",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "certificate verify failed" in output, output
    assert "TLS error" in output, output
