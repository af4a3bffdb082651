"""``certmq explain``: the decision procedure run on a certificate, without a connection.

It reads the same in-memory trust index as the broker at CONNECT, so its answer is the one a
device presenting this certificate would get now. It registers nothing: for a new device the
trace says that the first connection would register it.
"""

from __future__ import annotations

from datetime import datetime

from cryptography.hazmat.primitives.serialization import Encoding

from certmq.auth.decision import DeviceDecision, TrustIndexView, decide_device
from certmq.pki import parse_certificates


def explain_certificate(
    certificate_pem: str, index: TrustIndexView, now: datetime | None = None
) -> DeviceDecision:
    """Steps 1–5 (and the verdict of step 6) for the first certificate of ``certificate_pem``: a
    device certificate, or a chain file whose first certificate is the device's. Raises
    :class:`certmq.pki.PemFileError` when the text holds no PEM certificate."""
    certificates = parse_certificates(certificate_pem.encode(), "the certificate text")
    return decide_device(certificates[0].public_bytes(Encoding.DER), index, now)
