"""``certmq explain``: the decision procedure run on a certificate, without a connection.

It reads the same in-memory trust index as the broker at CONNECT, so its answer is the one a
device presenting this certificate would get now. It registers nothing: for a new device the
trace says that the first connection would register it.
"""

from __future__ import annotations

from datetime import datetime

from certmq.auth.decision import DeviceDecision, TrustIndexView, decide_device
from certmq.pki import certificate_ders


def explain_certificate(
    certificate_pem: str, index: TrustIndexView, now: datetime | None = None
) -> DeviceDecision:
    """Steps 1–5 (and the verdict of step 6) for the first certificate of ``certificate_pem``: a
    device certificate, or a chain file whose first certificate is the device's. Its DER goes to
    the procedure as it is, as a device's would from the TLS layer: one that does not parse, or is
    too large, is refused at step 1 as it would be at CONNECT. Raises
    :class:`certmq.pki.PemFileError` when the text holds no PEM certificate."""
    der = certificate_ders(certificate_pem.encode(), "the certificate text")[0]
    return decide_device(der, index, now)
