"""The actions of onsmqtt 2020-04-20 that certmq serves (docs/api.md, "Actions"). The table says which
parameters each takes; :func:`read_arguments` reads and checks them, and each handler makes one
registry service call and shapes the ApsaraMQ reply.

Replies use ApsaraMQ's names and types: statuses are the strings ``"1"`` (active) and ``"0"``
(inactive), ValidBegin / ValidEnd are epoch milliseconds as strings, and PageNo, PageSize and
Total inside ``Data`` are integers (Total counts every matching record).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from certmq.api.rpc.errors import parameter_error
from certmq.api.rpc.parameters import MAX_VALUE_LENGTH
from certmq.registry.cas import MAX_CA_NAME
from certmq.registry.parameters import MAX_PAGE_NO, MAX_PAGE_SIZE
from certmq.registry.records import CaRecord, DeviceRecord, Page
from certmq.registry.service import RegistryService

VERSION = "2020-04-20"
MAX_SN_LENGTH = 128  # the registry's column
_DECIMAL = re.compile(r"[0-9]{1,10}")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

Reply = dict[str, Any]
Values = dict[str, Any]
Reader = Callable[[str, str], Any]  # (name, value) -> the value read, or ParameterFieldCheckFailed


def _text(limit: int) -> Reader:
    def read(name: str, value: str) -> str:
        if len(value) > limit:
            raise parameter_error(f"{name} is longer than {limit} characters")
        return value

    return read


def _sn(name: str, value: str) -> str:
    if len(value) > MAX_SN_LENGTH or not value.isprintable() or value != value.strip():
        raise parameter_error(f"{name} must be a serial number in hex, as the List actions show it")
    return value


def _integer(low: int, high: int) -> Reader:
    def read(name: str, value: str) -> int:
        if not _DECIMAL.fullmatch(value) or not low <= int(value) <= high:
            raise parameter_error(f"{name} must be an integer from {low} to {high}, not {value[:20]!r}")
        return int(value)

    return read


# How each parameter of this API is read. All are required strings: missing or empty
# is ParameterFieldCheckFailed, and so is a value that is not of its kind.
PARAMETERS: dict[str, Reader] = {
    "MqttInstanceId": _text(256),
    "Sn": _sn,
    "CaSn": _sn,
    "DeviceSn": _sn,
    "PageNo": _integer(1, MAX_PAGE_NO),
    "PageSize": _integer(1, MAX_PAGE_SIZE),
    "CaName": _text(MAX_CA_NAME),
    "CaContent": _text(MAX_VALUE_LENGTH),
    "VerificationContent": _text(MAX_VALUE_LENGTH),
}


def read_arguments(names: tuple[str, ...], parameters: Mapping[str, str]) -> Values:
    """The values of the parameters ``names``, read and checked, in order."""
    values: Values = {}
    for name in names:
        value = parameters.get(name)
        if value is None or value == "":
            raise parameter_error(f"{name} is required")
        values[name] = PARAMETERS[name](name, value)
    return values


def epoch_milliseconds(moment: datetime.datetime) -> str:
    return str((moment - _EPOCH) // datetime.timedelta(milliseconds=1))


def _status(active: bool) -> str:
    return "1" if active else "0"


def ca_certificate(record: CaRecord) -> Reply:
    return {
        "CaName": record.name,
        "CaContent": record.pem,
        "Sn": record.sn,
        "RegistrationCode": record.registration_code,
        "VerificationContent": record.verification_pem,
        "ValidBegin": epoch_milliseconds(record.valid_begin),
        "ValidEnd": epoch_milliseconds(record.valid_end),
        "Status": _status(record.active),
    }


def device_certificate(record: DeviceRecord) -> Reply:
    return {
        "CaSn": record.ca_sn,
        "DeviceContent": record.pem,
        "DeviceName": record.name,
        "DeviceSn": record.device_sn,
        "Status": _status(record.active),
        "ValidBegin": epoch_milliseconds(record.valid_begin),
        "ValidEnd": epoch_milliseconds(record.valid_end),
    }


def _device_page(page: Page[DeviceRecord]) -> Reply:
    return {
        "Data": {
            "DeviceCertificateVOS": [device_certificate(record) for record in page.items],
            "PageNo": page.page_no,
            "PageSize": page.page_size,
            "Total": page.total,
        }
    }


# --- the handlers ---------------------------------------------------------------------------------
# Each receives the registry and the values of the parameters its Action declares, read already;
# the MqttInstanceId has been checked.


async def get_register_code(registry: RegistryService, values: Values) -> Reply:
    code = await registry.issue_registration_code()
    return {"RegisterCode": code.code}


async def register_ca_certificate(registry: RegistryService, values: Values) -> Reply:
    record = await registry.register_ca(values["CaName"], values["CaContent"], values["VerificationContent"])
    return {"Sn": record.sn}


async def get_ca_certificate(registry: RegistryService, values: Values) -> Reply:
    return {"Data": ca_certificate(await registry.get_ca(values["Sn"]))}


async def list_ca_certificate(registry: RegistryService, values: Values) -> Reply:
    page = await registry.list_cas(values["PageNo"], values["PageSize"])
    return {
        "Data": {
            "CaCertificateVOS": [ca_certificate(record) for record in page.items],
            "PageNo": page.page_no,
            "PageSize": page.page_size,
            "Total": page.total,
        }
    }


async def active_ca_certificate(registry: RegistryService, values: Values) -> Reply:
    return {"Sn": (await registry.activate_ca(values["Sn"])).sn}


async def inactivate_ca_certificate(registry: RegistryService, values: Values) -> Reply:
    return {"Sn": (await registry.inactivate_ca(values["Sn"])).sn}


async def delete_ca_certificate(registry: RegistryService, values: Values) -> Reply:
    await registry.delete_ca(values["Sn"])
    return {"Sn": values["Sn"]}


async def get_device_certificate(registry: RegistryService, values: Values) -> Reply:
    return {"Data": device_certificate(await registry.get_device(values["CaSn"], values["DeviceSn"]))}


async def list_device_certificate(registry: RegistryService, values: Values) -> Reply:
    return _device_page(await registry.list_devices(values["PageNo"], values["PageSize"]))


async def list_device_certificate_by_ca_sn(registry: RegistryService, values: Values) -> Reply:
    page = await registry.list_devices(values["PageNo"], values["PageSize"], ca_sn=values["CaSn"])
    return _device_page(page)


async def active_device_certificate(registry: RegistryService, values: Values) -> Reply:
    record = await registry.activate_device(values["CaSn"], values["DeviceSn"])
    return {"DeviceSn": record.device_sn}


async def inactivate_device_certificate(registry: RegistryService, values: Values) -> Reply:
    record = await registry.inactivate_device(values["CaSn"], values["DeviceSn"])
    return {"DeviceSn": record.device_sn}


async def delete_device_certificate(registry: RegistryService, values: Values) -> Reply:
    await registry.delete_device(values["CaSn"], values["DeviceSn"])
    return {"DeviceSn": values["DeviceSn"]}


Handler = Callable[[RegistryService, Values], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Action:
    """One action of the API: its handler and its parameters besides MqttInstanceId."""

    name: str
    handler: Handler
    parameters: tuple[str, ...] = ()
    changes: bool = False  # writes to the registry (logged at info level)


_CA = ("Sn",)
_DEVICE = ("CaSn", "DeviceSn")
_PAGE = ("PageNo", "PageSize")

ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action("GetRegisterCode", get_register_code, changes=True),
        Action("RegisterCaCertificate", register_ca_certificate,
               ("CaName", "CaContent", "VerificationContent"), changes=True),
        Action("GetCaCertificate", get_ca_certificate, _CA),
        Action("ListCaCertificate", list_ca_certificate, _PAGE),
        Action("ActiveCaCertificate", active_ca_certificate, _CA, changes=True),
        Action("InactivateCaCertificate", inactivate_ca_certificate, _CA, changes=True),
        Action("DeleteCaCertificate", delete_ca_certificate, _CA, changes=True),
        Action("GetDeviceCertificate", get_device_certificate, _DEVICE),
        Action("ListDeviceCertificate", list_device_certificate, _PAGE),
        Action("ListDeviceCertificateByCaSn", list_device_certificate_by_ca_sn, ("CaSn", *_PAGE)),
        Action("ActiveDeviceCertificate", active_device_certificate, _DEVICE, changes=True),
        Action("InactivateDeviceCertificate", inactivate_device_certificate, _DEVICE, changes=True),
        Action("DeleteDeviceCertificate", delete_device_certificate, _DEVICE, changes=True),
    )
}  # fmt: skip
