"""Debian's mosquitto_pub and mosquitto_sub against the broker, over TCP and over TLS with the
server verified as localhost against the broker's CA."""

from __future__ import annotations

import subprocess

import pytest

from broker_process import write_test_ca
from mosquitto_tools import WAIT, Subscriber, publish, tool

VERSIONS = [pytest.param("mqttv311", id="v311"), pytest.param("mqttv5", id="v5")]


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
            tool("mosquitto_pub"),
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
