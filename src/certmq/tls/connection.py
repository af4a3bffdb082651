"""TLS for the MQTT over TLS listener, on OpenSSL memory BIOs driven by the event loop.

:class:`TlsServerConnection` sits between a TCP transport and the MQTT protocol: to the TCP
transport it is the protocol (ciphertext in and out), to the MQTT protocol it is the transport
(plaintext). The handshake runs with the context that was current when the TCP connection was
accepted, so a new server certificate, auth mode or CA set applies to the next connection.

It uses pyOpenSSL, which binds the OpenSSL that ``cryptography`` ships. That OpenSSL is much
newer than most systems' and does a full mutual TLS 1.3 handshake with about 40 % less CPU than
the OpenSSL 3.0 that Python's ``ssl`` module is linked with on Debian 12 (see
docs/benchmarks.md); the handshake is most of what a device connection costs a broker.

A handshake refused on certificate grounds is reported as a :class:`HandshakeError` carrying
OpenSSL's verification result, from which the audit log's decision is made. A client certificate
that OpenSSL's verification accepts is refused all the same when the check the listener gives
(:data:`CertificateCheck`) refuses it: the broker's refuses one larger than a device certificate
may be (:func:`certmq.auth.decision.certificate_size_failure`), as the session ticket could not
hold one above 64 KB and the CONNECT's decision would refuse it anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL, crypto

from certmq.stacked_transport import StackedTransport
from certmq.tls.verify_codes import VERIFY_MESSAGES, VerifyCode

log = logging.getLogger("certmq.tls")

# The largest read from a memory BIO at once: below malloc's mmap threshold, above a TLS record.
_CHUNK = 65536


# Asked of the DER of a client certificate that OpenSSL's verification accepted: why it is
# refused all the same, as (reason, detail), or None when it is not.
CertificateCheck = Callable[[bytes], tuple[str, str] | None]


class HandshakeError(Exception):
    """A TLS handshake that did not complete.

    ``reason`` is OpenSSL's reason in upper case with underscores (``CERTIFICATE_VERIFY_FAILED``,
    ``PEER_DID_NOT_RETURN_A_CERTIFICATE``...), or None when the client went away or timed out;
    ``verify_code`` is the X509_V_ERR code of the first certificate check that failed, 0 if none,
    and ``verify_depth`` where in the chain it failed (0: the client's own certificate);
    ``certificate`` is the DER of the client certificate that was refused, when known, and
    ``refusal`` why, when this layer refused what OpenSSL had accepted; ``after_server_hello`` says that the server had answered the client's hello, so that what
    failed came in the client's certificate flight.
    """

    def __init__(
        self,
        message: str,
        reason: str | None = None,
        verify_code: int = 0,
        depth: int = 0,
        *,
        certificate: bytes | None = None,
        refusal: str | None = None,
        after_server_hello: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.verify_code = verify_code
        self.verify_depth = depth
        self.certificate = certificate
        self.after_server_hello = after_server_hello
        if refusal is not None:
            self.verify_message: str | None = refusal
        elif verify_code:
            self.verify_message = (
                f"{VERIFY_MESSAGES.get(verify_code, f'certificate verify error {verify_code}')}"
                f"{f' (depth {depth} of the chain)' if depth else ''}"
            )
        else:
            self.verify_message = None

    @classmethod
    def from_openssl(
        cls,
        error: SSL.Error,
        verify_failure: tuple[int, int] | None,
        *,
        certificate: bytes | None = None,
        refusal: str | None = None,
        after_server_hello: bool = False,
    ) -> HandshakeError:
        # OpenSSL's error queue, as pyOpenSSL gives it: [(library, function, reason), ...].
        queue = error.args[0] if error.args and isinstance(error.args[0], list) else []
        reasons = [entry[2] for entry in queue if isinstance(entry, tuple) and len(entry) == 3]
        reason = reasons[-1].upper().replace(" ", "_") if reasons else None
        code, depth = verify_failure or (0, 0)
        error_text = "; ".join(reasons) or str(error) or type(error).__name__
        handshake_error = cls(
            error_text,
            reason,
            code,
            depth,
            certificate=certificate,
            refusal=refusal,
            after_server_hello=after_server_hello,
        )
        if handshake_error.verify_message:
            handshake_error.args = (f"{error_text}: {handshake_error.verify_message}",)
        return handshake_error


# What SSL_version gives for TLS 1.3 (RFC 8446: legacy version 0x0304).
_TLS_1_3 = 0x0304


def note_verify_result(
    connection: SSL.Connection, certificate: crypto.X509, code: int, depth: int, ok: int
) -> bool:
    """pyOpenSSL verify callback: keeps OpenSSL's verdict, remembers the first failure's code (and
    the client's certificate when that failed) and the certificate whose key verified the
    client's (depth 1: OpenSSL checks a chain from its anchor down, the issuer's signature on each
    certificate before the certificate itself), and checks the size of the client's certificate
    once OpenSSL has accepted it (depth 0, last)."""
    tls = connection.get_app_data()
    if tls is not None:
        if not ok:
            if tls.verify_failure is None:
                tls.verify_failure = (code, depth)
                if depth == 0:
                    tls.refused_certificate = crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)
        elif depth == 1:
            tls.verifying_issuer = certificate
        elif depth == 0:
            return bool(tls.client_certificate_verified(certificate))
    return bool(ok)


class TlsServerConnection(StackedTransport):
    """One TLS server connection: the TCP transport's protocol, the MQTT protocol's transport."""

    def __init__(
        self,
        context: SSL.Context,
        wants_client_certificate: bool,
        make_protocol: Callable[[], asyncio.Protocol],
        handshake_timeout: float,
        on_handshake_failure: Callable[[str, BaseException], None],
        check_certificate: CertificateCheck,
    ) -> None:
        super().__init__()
        self._ssl = SSL.Connection(context, None)
        self._ssl.set_accept_state()
        self._ssl.set_app_data(self)
        self._wants_client_certificate = wants_client_certificate
        self._make_protocol = make_protocol
        self._handshake_timeout = handshake_timeout
        self._on_handshake_failure = on_handshake_failure
        self._check_certificate = check_certificate
        self._tcp: asyncio.Transport | None = None
        self._protocol: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._failed = False
        self._peer_certificate: bytes | None = None
        self.verify_failure: tuple[int, int] | None = None
        # The client certificate that verification refused (DER), and why, when OpenSSL had
        # accepted it and this layer refused it (its size).
        self.refused_certificate: bytes | None = None
        self._refusal: str | None = None
        self._answered_hello = False
        # The client certificate's issuer as this handshake verified it, and its fingerprint.
        self.verifying_issuer: crypto.X509 | None = None
        self._verifying_issuer_fingerprint: bytes | None = None

    # --- the TCP side ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(
            self._handshake_timeout, self._handshake_timed_out
        )

    def data_received(self, data: bytes) -> None:
        tls = self._ssl
        tls.bio_write(data)
        if self._protocol is None:
            if self._failed:
                return
            try:
                tls.do_handshake()
            except SSL.WantReadError:
                if self._flush():
                    self._answered_hello = True
                return
            except SSL.Error as error:
                self._flush()  # the alert that tells the client why
                self._fail(
                    HandshakeError.from_openssl(
                        error,
                        self.verify_failure,
                        certificate=self.refused_certificate,
                        refusal=self._refusal,
                        after_server_hello=self._answered_hello,
                    )
                )
                return
            self._handshake_done()
        self._read()

    def eof_received(self) -> bool:
        if self._protocol is None:
            self._fail(HandshakeError("the client closed the connection during the TLS handshake"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_lost is not None:
            self.on_lost()
        self._cancel_timer()
        self._closing = True
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.connection_lost(exc)
        elif not self._failed:
            self._fail(HandshakeError("the connection was lost during the TLS handshake"))
        self._tcp = None
        # The OpenSSL connection points back here (for the verify callback): without that, both
        # are freed by reference counting instead of waiting for the cycle collector.
        self._ssl.set_app_data(None)

    def _below(self) -> asyncio.Transport | None:
        return self._tcp

    # --- TLS ------------------------------------------------------------------------------------

    def client_certificate_verified(self, certificate: crypto.X509) -> bool:
        """OpenSSL's verification accepted the client's certificate: does the listener's check
        (its size) accept it too? Its DER is kept for the CONNECT's decision, which checks the rest."""
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)
        failure = self._check_certificate(der)
        if failure is None:
            self._peer_certificate = der
            return True
        self.verify_failure = (VerifyCode.APPLICATION_VERIFICATION, 0)
        self.refused_certificate = der
        self._refusal = f"{failure[0]}: {failure[1]}"
        return False

    def _handshake_done(self) -> None:
        self._cancel_timer()
        if self._wants_client_certificate and self._peer_certificate is None:
            # A resumed session: no verification ran, the certificate is the session's.
            certificate = self._ssl.get_peer_certificate()
            if certificate is not None:
                self._peer_certificate = crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)
        if self._ssl.get_protocol_version() != _TLS_1_3:
            self._flush()  # TLS 1.2: the server's Finished, which the client waits for
        # TLS 1.3: the session tickets OpenSSL has just written wait for the first reply (a
        # CONNACK) and go out in its segment, one send fewer per connection. A client needs no
        # ticket before a reply, and a connection closed first sends them with its close_notify.
        self._protocol = self._make_protocol()
        self._protocol.connection_made(self)

    def _read(self) -> None:
        tls = self._ssl
        chunks: list[bytes] = []
        closed_by_peer = False
        while True:
            try:
                chunks.append(tls.recv(_CHUNK))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                closed_by_peer = True
                break
            except SSL.Error as error:
                log.info("TLS error from %s: %s", self.get_extra_info("peername"), error)
                self.abort()
                return
        if chunks and self._protocol is not None:
            self._protocol.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if closed_by_peer:
            self.close()
        # What reading may make OpenSSL send (a key update's answer) goes out with the next write.

    def _flush(self) -> bool:
        """Send what OpenSSL has written; True if there was something."""
        tcp = self._tcp
        tls = self._ssl
        sent = False
        while True:
            try:
                data = tls.bio_read(_CHUNK)
            except SSL.WantReadError:
                return sent
            sent = True
            if tcp is not None:
                tcp.write(data)
            if len(data) < _CHUNK:
                return sent

    def _fail(self, error: HandshakeError) -> None:
        self._failed = True
        self._cancel_timer()
        tcp = self._tcp
        if tcp is not None:
            tcp.close()
            peer = tcp.get_extra_info("peername")
        else:
            peer = None
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._on_handshake_failure(address, error)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._protocol is None and not self._failed:
            tcp = self._tcp
            self._fail(HandshakeError("the TLS handshake timed out"))
            if tcp is not None:
                tcp.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _verified_issuer(self) -> bytes | None:
        """The SHA-256 fingerprint of the certificate whose key verified the client certificate's
        signature in this connection's handshake; None when the handshake verified no chain (a
        resumed session, one-way mode) or the client's certificate was itself the trust anchor."""
        if self._verifying_issuer_fingerprint is None and self.verifying_issuer is not None:
            der = crypto.dump_certificate(crypto.FILETYPE_ASN1, self.verifying_issuer)
            self._verifying_issuer_fingerprint = hashlib.sha256(der).digest()
        return self._verifying_issuer_fingerprint

    # --- the MQTT side --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._tcp is None:
            return
        try:
            self._ssl.sendall(data)
        except SSL.Error as error:
            log.info("TLS error to %s: %s", self.get_extra_info("peername"), error)
            self.abort()
            return
        self._flush()

    def is_closing(self) -> bool:
        return self._closing or self._tcp is None or self._tcp.is_closing()

    def close(self) -> None:
        """Send close_notify and close the TCP connection once the written data has gone out."""
        if self._closing:
            return
        self._closing = True
        tcp = self._tcp
        if tcp is None:
            return
        with contextlib.suppress(SSL.Error):  # a connection in a failed state has no close_notify to send
            self._ssl.shutdown()
        self._flush()
        tcp.close()

    def abort(self) -> None:
        self._closing = True
        if self._tcp is not None:
            self._tcp.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peer_certificate":
            return self._peer_certificate
        if name == "verified_issuer":
            return self._verified_issuer if self._peer_certificate is not None else default
        if name == "ssl_object":
            return self._ssl
        if name == "cipher":
            if self._protocol is None:
                return default
            return (
                self._ssl.get_cipher_name(),
                self._ssl.get_protocol_version_name(),
                self._ssl.get_cipher_bits(),
            )
        if name == "tls_version":
            return self._ssl.get_protocol_version_name() if self._protocol is not None else default
        if self._tcp is None:
            return default
        return self._tcp.get_extra_info(name, default)
