"""Debian's mosquitto_pub and mosquitto_sub, run against a broker as a user runs them."""

import queue
import shutil
import subprocess
import threading
import time

WAIT = 10.0
MESSAGE_PREFIX = "MSG|"


def tool(name):
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
            tool("stdbuf"),
            "-oL",
            tool("mosquitto_sub"),
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


def publish(broker, topic, *args, tls=False, version="mqttv5", stdin=None):
    result = subprocess.run(
        [tool("mosquitto_pub"), *_connection_args(broker, tls), "-V", version, "-t", topic, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, (
        f"mosquitto_pub exited {result.returncode}: {result.stdout} {result.stderr}"
    )
    return result
