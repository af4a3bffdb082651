"""Who a client proved to be at CONNECT: one value, passed unchanged from the authentication
step to the broker, the journal, the REST API and the console.

The authentication step establishes it (:mod:`certmq.auth.authenticator`: a device certificate, and
Signature credentials; nothing for an anonymous client). The broker keeps it with the connection
and the session: the session's owner (:mod:`certmq.auth.ownership`), its topic rules, the check
of its will. Registry changes cut the live sessions whose identity they revoke
(:mod:`certmq.auth.revocation`).

Outside the process it is written as fields with documented names (:meth:`Identity.fields`):
``cert.cn``, ``cert.sn``, ``cert.ca_sn``, ``cert.not_after``, ``access_key_id``. Those are the
names the REST API shows (docs/api.md), the journal stores, and topic rules use as variables
(``${cert.cn}``: docs/configuration.md, "Topic authorization rules").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

CN = "cert.cn"
DEVICE_SN = "cert.sn"
CA_SN = "cert.ca_sn"
CERTIFICATE_NOT_AFTER = "cert.not_after"
ACCESS_KEY_ID = "access_key_id"
_DEVICE_FIELDS = (CN, DEVICE_SN, CA_SN)


@dataclass(frozen=True, slots=True)
class Identity:
    """A device certificate (its CA's Sn, its own Sn and CN, its notAfter), an AccessKey, both
    (a device that also sent Signature credentials), or neither: an anonymous client."""

    ca_sn: str = ""
    device_sn: str = ""
    cn: str = ""
    # The device certificate's own notAfter; the session's end, which its CA's may bring
    # forward, is the authentication outcome's ``valid_until``.
    certificate_not_after: datetime | None = None
    access_key_id: str = ""

    @property
    def is_anonymous(self) -> bool:
        return not (self.device_sn or self.access_key_id)

    @property
    def has_device_certificate(self) -> bool:
        return bool(self.device_sn)

    def is_device(self, ca_sn: str, device_sn: str) -> bool:
        """Whether this is the device certificate ``device_sn`` of the CA ``ca_sn``."""
        return self.device_sn == device_sn and self.ca_sn == ca_sn and bool(device_sn)

    def fields(self) -> dict[str, str]:
        """The identity under its documented names, without the values it does not have."""
        values = {
            CN: self.cn,
            DEVICE_SN: self.device_sn,
            CA_SN: self.ca_sn,
            CERTIFICATE_NOT_AFTER: ""
            if self.certificate_not_after is None
            else self.certificate_not_after.isoformat(),
            ACCESS_KEY_ID: self.access_key_id,
        }
        # A device certificate's names are all shown, its CN even when empty.
        kept = _DEVICE_FIELDS if self.device_sn else ()
        return {name: value for name, value in values.items() if value or name in kept}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Identity:
        """The identity :meth:`fields` wrote (names it does not know are ignored)."""
        if not fields:
            return ANONYMOUS
        not_after = fields.get(CERTIFICATE_NOT_AFTER)
        return cls(
            ca_sn=fields.get(CA_SN, ""),
            device_sn=fields.get(DEVICE_SN, ""),
            cn=fields.get(CN, ""),
            certificate_not_after=datetime.fromisoformat(not_after) if not_after else None,
            access_key_id=fields.get(ACCESS_KEY_ID, ""),
        )


ANONYMOUS = Identity()
