"""Errors raised by the registry. Each carries the ApsaraMQ error code and the HTTP
status that the APIs answer with, and its message tells the user what to do.

The APIs turn a :class:`RegistryError` into ``{"Code": error.code, "Message": str(error)}`` with
``error.http_status``; the CLI prints the message.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of every error the registry reports to a caller."""

    code: str = "InternalError"
    http_status: int = 500


class ParameterFieldCheckFailed(RegistryError):
    """A parameter is missing or out of range (paging, status, names)."""

    code = "ParameterFieldCheckFailed"
    http_status = 400


class MqttInstanceNotFound(RegistryError):
    """The MqttInstanceId of a request is not this instance's id."""

    code = "MqttInstanceNotFound"
    http_status = 400


class RegisterCodeError(RegistryError):
    """The verification certificate's CN is not a registration code of this instance, or the code
    has expired."""

    code = "RegisterCodeError"
    http_status = 400


class RegisterCodeUsed(RegistryError):
    """The registration code already registered a CA."""

    code = "RegisterCodeUsed"
    http_status = 401


class CaNumExceed(RegistryError):
    """Registering the CA would exceed the instance's limit on CA certificates."""

    code = "CaNumExceed"
    http_status = 401


class CertificateContentError(RegistryError):
    """A CA or verification certificate is unreadable, not a CA, expired, or does not prove
    possession of the CA key."""

    code = "CertificateContentError"
    http_status = 401


class SnNotUnique(RegistryError):
    """A CA with the same serial number or the same fingerprint is already registered."""

    code = "SnNotUnique"
    http_status = 401


class FindCaBySnError(RegistryError):
    """No CA certificate is registered with this Sn."""

    code = "FindCaBySnError"
    http_status = 400


class FindDeviceBySnError(RegistryError):
    """No device certificate is registered with this CA Sn and DeviceSn."""

    code = "FindDeviceBySnError"
    http_status = 400


def unknown_ca(sn: str) -> FindCaBySnError:
    return FindCaBySnError(
        f"no CA certificate is registered with Sn {sn!r}; list them with ListCaCertificate"
    )


def unknown_device(ca_sn: str, device_sn: str) -> FindDeviceBySnError:
    return FindDeviceBySnError(
        f"no device certificate is registered with CA Sn {ca_sn!r} and DeviceSn {device_sn!r}; "
        f"a device is registered on its first successful connection"
    )


class SerialCollision(RegistryError):
    """Auto-registration found another certificate already registered under the same CA and serial
    number (or the same certificate under another CA). Not an API error: the broker denies the
    connection with ``serial-collision`` (step 2 of the decision procedure)."""

    code = "SerialCollision"
    http_status = 409

    def __init__(self, message: str, *, ca_sn: str, device_sn: str) -> None:
        super().__init__(message)
        self.ca_sn = ca_sn
        self.device_sn = device_sn


class RegistryUnreachable(RegistryError):
    """The registry's database cannot be reached or opened (a server down, a wrong URL)."""

    code = "InternalError"
    http_status = 503
