"""Server-side CPU of one full mutual TLS 1.3 handshake: Python's ssl module (the system's
OpenSSL) against pyOpenSSL (the OpenSSL that ``cryptography`` ships), which certmq's MQTT over
TLS listener uses.

    .venv/bin/python bench/tls_handshake.py               # 1,000 handshakes each, 5 rounds
    .venv/bin/python bench/tls_handshake.py --handshakes 200 --rounds 2

Both servers handshake in memory (memory BIOs, no sockets) with the same client: Python's ssl
module presenting an EC P-256 device certificate issued by an EC P-256 CA; the server has an
EC P-256 certificate, asks for the client's and verifies it, and sends its session tickets. Only
the time spent in the server's calls is counted (``time.thread_time``), including the Python
glue each library needs per handshake. The two are measured in alternating rounds; the
medians are printed.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from OpenSSL import SSL

from certmq import pki
from certmq.pki.files import write_certificates, write_private_key


def make_files(directory: Path) -> dict[str, Path]:
    ca_key = pki.generate_key("ec")
    ca = pki.CertifiedKey(pki.create_ca("bench CA", ca_key), ca_key)
    server_key = pki.generate_key("ec")
    server = pki.issue_server_certificate(
        ca.certificate, ca.key, "localhost", ["localhost"], server_key.public_key()
    )
    device_key = pki.generate_key("ec")
    device = pki.issue_device_certificate(ca.certificate, ca.key, "bench-device", device_key.public_key())
    files = {
        name: directory / name for name in ("ca.pem", "server.pem", "server.key", "device.pem", "device.key")
    }
    write_certificates(files["ca.pem"], ca.certificate)
    write_certificates(files["server.pem"], server)
    write_private_key(files["server.key"], server_key)
    write_certificates(files["device.pem"], device)
    write_private_key(files["device.key"], device_key)
    return files


def client_context(files: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(files["ca.pem"]))
    context.load_cert_chain(str(files["device.pem"]), str(files["device.key"]))
    return context


def ssl_module_server(files: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(files["server.pem"]), str(files["server.key"]))
    context.load_verify_locations(str(files["ca.pem"]))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def pyopenssl_server(files: dict[str, Path]) -> SSL.Context:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate_chain_file(str(files["server.pem"]))
    context.use_privatekey_file(str(files["server.key"]))
    context.load_verify_locations(str(files["ca.pem"]))
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    context.set_session_id(b"bench")
    return context


def _client(context: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return context.wrap_bio(incoming, outgoing, server_hostname="localhost"), incoming, outgoing


def _client_step(client: ssl.SSLObject) -> bool:
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


def with_ssl_module(server_context: ssl.SSLContext, client_context: ssl.SSLContext, count: int) -> float:
    spent = 0.0
    for _ in range(count):
        client, client_in, client_out = _client(client_context)
        started = time.thread_time()
        server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        server = server_context.wrap_bio(server_in, server_out, server_side=True)
        spent += time.thread_time() - started
        client_done = server_done = False
        while not (client_done and server_done):
            client_done = client_done or _client_step(client)
            data = client_out.read()
            started = time.thread_time()
            server_in.write(data)
            if not server_done:
                try:
                    server.do_handshake()
                    server_done = True
                    server.getpeercert(binary_form=True)
                except ssl.SSLWantReadError:
                    pass
            answer = server_out.read()
            spent += time.thread_time() - started
            client_in.write(answer)
    return spent / count


def with_pyopenssl(server_context: SSL.Context, client_context: ssl.SSLContext, count: int) -> float:
    spent = 0.0
    for _ in range(count):
        client, client_in, client_out = _client(client_context)
        started = time.thread_time()
        server = SSL.Connection(server_context, None)
        server.set_accept_state()
        spent += time.thread_time() - started
        client_done = server_done = False
        while not (client_done and server_done):
            client_done = client_done or _client_step(client)
            data = client_out.read()
            started = time.thread_time()
            if data:
                server.bio_write(data)
            if not server_done:
                try:
                    server.do_handshake()
                    server_done = True
                    server.get_peer_certificate()
                except SSL.WantReadError:
                    pass
            try:
                answer = server.bio_read(65536)
            except SSL.WantReadError:
                answer = b""
            spent += time.thread_time() - started
            client_in.write(answer)
    return spent / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--handshakes", type=int, default=1000, help="handshakes per round and library")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        files = make_files(Path(directory))
        client = client_context(files)
        stdlib, pyopenssl = ssl_module_server(files), pyopenssl_server(files)
        with_ssl_module(stdlib, client, 20)  # warm-up
        with_pyopenssl(pyopenssl, client, 20)
        stdlib_times, pyopenssl_times = [], []
        for _ in range(args.rounds):
            stdlib_times.append(with_ssl_module(stdlib, client, args.handshakes))
            pyopenssl_times.append(with_pyopenssl(pyopenssl, client, args.handshakes))
    system_openssl = ssl.OPENSSL_VERSION
    bundled_openssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    stdlib_ms = statistics.median(stdlib_times) * 1e3
    pyopenssl_ms = statistics.median(pyopenssl_times) * 1e3
    print(
        f"server CPU per full mutual TLS 1.3 handshake, median of {args.rounds} rounds of {args.handshakes}:"
    )
    print(f"  ssl module ({system_openssl}): {stdlib_ms:.3f} ms")
    print(f"  pyOpenSSL  ({bundled_openssl}): {pyopenssl_ms:.3f} ms")
    print(f"  pyOpenSSL / ssl module: {pyopenssl_ms / stdlib_ms:.2f}x")


if __name__ == "__main__":
    main()
