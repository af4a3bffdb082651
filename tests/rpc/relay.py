"""A TCP relay in front of the API that keeps the exact bytes of each HTTP request it passes on,
so a test can send a request made by the SDK a second time, as an attacker who captured it would."""

from __future__ import annotations

import contextlib
import socket
import threading


def read_message(connection: socket.socket) -> bytes:
    """One HTTP/1.1 message (head, and a body of Content-Length bytes) from ``connection``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` to 127.0.0.1:``port`` on a new connection; the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as upstream:
        upstream.sendall(request)
        return read_message(upstream)


class RecordingRelay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            # The client may keep the connection open after its request: the relay waits for
            # the next one until the client closes it or a quiet while passes.
            with connection, contextlib.suppress(OSError):
                connection.settimeout(2)
                while request := read_message(connection):
                    self.requests.append(request)
                    connection.sendall(exchange(self.target_port, request))

    def close(self) -> None:
        self._server.close()


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]
