"""Who each MQTT listener lets in, in each auth mode (docs/configuration.md, ``[listeners]``).

One table decides it all: which listeners are open, which of them ask for a device
certificate in the TLS handshake and decide CONNECT by it, which live connections a mode
keeps (:meth:`ListenerPolicy.conforms`), and the one-line account that the start-up log, the
console and ``certmq mode set`` print (:meth:`ListenerPolicy.describe`).

In mutual mode the plain listeners close: Signature credentials are a fixed HMAC of the
client id, replayable by whoever reads them once, so they only travel inside TLS unless the
operator opens a plain listener on purpose. Secure WebSocket keeps credential clients
(browsers rarely hold device certificates) unless configured to ask for certificates.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from certmq.auth.identity import Identity
from certmq.auth.listener_name import MQTT_LISTENERS
from certmq.auth.mode import AuthMode
from certmq.config import Config

# Values of listeners.wss_in_mutual_mode.
WSS_CREDENTIALS = "credentials"
WSS_CERTIFICATES = "certificates"


class Admission(enum.Enum):
    """What a listener asks of a client before it may connect."""

    CERTIFICATES = "devices with certificates of registered CAs"
    CREDENTIALS = "clients with Signature credentials"
    CLOSED = "closed"
    # The listener's address is empty: it never opens.
    DISABLED = "disabled"


# Reading a member off its Enum class is a property call in Python 3.11 (about 170 ns): the
# questions asked per connection compare with these.
CERTIFICATES = Admission.CERTIFICATES
CREDENTIALS = Admission.CREDENTIALS


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    """The listener settings that decide admission; the auth mode is given to each question."""

    tcp_in_mutual_mode: bool = False
    ws_in_mutual_mode: bool = False
    wss_in_mutual_mode: str = WSS_CREDENTIALS
    anonymous: bool = False
    configured: frozenset[str] = frozenset(MQTT_LISTENERS)
    # mode -> listener -> Admission, for every mode and MQTT listener.
    table: Mapping[str, Mapping[str, Admission]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        open_in_mutual_mode = {
            "tcp": CREDENTIALS if self.tcp_in_mutual_mode else Admission.CLOSED,
            "tls": CERTIFICATES,
            "ws": CREDENTIALS if self.ws_in_mutual_mode else Admission.CLOSED,
            "wss": CERTIFICATES if self.wss_in_mutual_mode == WSS_CERTIFICATES else CREDENTIALS,
        }
        disabled = {
            listener: Admission.DISABLED for listener in MQTT_LISTENERS if listener not in self.configured
        }
        table = {
            AuthMode.ONE_WAY: {listener: CREDENTIALS for listener in MQTT_LISTENERS} | disabled,
            AuthMode.MUTUAL: open_in_mutual_mode | disabled,
        }
        object.__setattr__(self, "table", table)

    @classmethod
    def from_config(cls, config: Config) -> ListenerPolicy:
        listeners = config.listeners
        return cls(
            tcp_in_mutual_mode=listeners.tcp_in_mutual_mode,
            ws_in_mutual_mode=listeners.ws_in_mutual_mode,
            wss_in_mutual_mode=listeners.wss_in_mutual_mode,
            anonymous=config.auth.anonymous,
            configured=frozenset(name for name in MQTT_LISTENERS if getattr(listeners, name)),
        )

    def admission(self, listener: str, mode: str) -> Admission:
        """What ``listener`` asks of a client in ``mode`` (a listener it does not know: credentials)."""
        return self.table.get(mode, {}).get(listener, CREDENTIALS)

    def is_open(self, listener: str, mode: str) -> bool:
        admission = self.admission(listener, mode)
        return admission is CERTIFICATES or admission is CREDENTIALS

    def asks_for_certificate(self, listener: str, mode: str) -> bool:
        return self.admission(listener, mode) is CERTIFICATES

    def conforms(self, listener: str, identity: Identity, mode: str) -> bool:
        """Whether ``mode`` would let in a live connection on ``listener`` authenticated as
        ``identity``: a device certificate where the listener asks for one, Signature credentials
        (or none, with anonymous access) where it takes credentials, nothing where it is closed."""
        admission = self.admission(listener, mode)
        if admission is CERTIFICATES:
            return identity.has_device_certificate
        if admission is CREDENTIALS:
            return bool(identity.access_key_id) or self.anonymous
        return False

    def describe(self, mode: str) -> str:
        """Which listeners ``mode`` opens and to whom, in one line, e.g. ``tls: devices with
        certificates of registered CAs; wss: clients with Signature credentials; tcp, ws: closed``."""
        groups: dict[Admission, list[str]] = {}
        for listener in MQTT_LISTENERS:
            groups.setdefault(self.admission(listener, mode), []).append(listener)
        parts = []
        for admission in Admission:
            if admission not in groups:
                continue
            who = admission.value
            if admission is CREDENTIALS and self.anonymous:
                who += " or none (anonymous access is on)"
            parts.append(f"{', '.join(groups[admission])}: {who}")
        return "; ".join(parts)
