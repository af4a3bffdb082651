"""The CA and device certificate registry (docs/registry.md): the store, the in-memory trust
index, change events, the audit logs of decisions and API operations, and the service that every
interface calls (:mod:`certmq.registry.service` lists its parts).

>>> store = open_registry("", data_dir)                      # doctest: +SKIP
>>> registry = RegistryService(store, instance_id="mqtt-local-1")
>>> await registry.open()
>>> code = await registry.issue_registration_code()
"""

from certmq.registry.errors import (
    CaNumExceed,
    CertificateContentError,
    FindCaBySnError,
    FindDeviceBySnError,
    MqttInstanceNotFound,
    ParameterFieldCheckFailed,
    RegisterCodeError,
    RegisterCodeUsed,
    RegistryError,
    SerialCollision,
    SnNotUnique,
)
from certmq.registry.events import (
    CaAdded,
    CaDeleted,
    CaStatusChanged,
    DeviceAdded,
    DeviceDeleted,
    DeviceStatusChanged,
    RegistryEvent,
    RegistryEvents,
    SettingChanged,
)
from certmq.registry.index import CaEntry, DeviceEntry, TrustIndex
from certmq.registry.log_query import DecisionQuery, LogQuery, OperationQuery
from certmq.registry.models import Result, Status
from certmq.registry.records import (
    CaRecord,
    DecisionEntry,
    DecisionRecord,
    DeviceRecord,
    OperationEntry,
    OperationRecord,
    Page,
    RegistrationCode,
    RegistryCounts,
)
from certmq.registry.service import RegistryService
from certmq.registry.store import RegistryStore, open_registry

__all__ = [
    "CaAdded",
    "CaDeleted",
    "CaEntry",
    "CaNumExceed",
    "CaRecord",
    "CaStatusChanged",
    "CertificateContentError",
    "DecisionEntry",
    "DecisionQuery",
    "DecisionRecord",
    "DeviceAdded",
    "DeviceDeleted",
    "DeviceEntry",
    "DeviceRecord",
    "DeviceStatusChanged",
    "FindCaBySnError",
    "FindDeviceBySnError",
    "LogQuery",
    "MqttInstanceNotFound",
    "OperationEntry",
    "OperationQuery",
    "OperationRecord",
    "Page",
    "ParameterFieldCheckFailed",
    "RegisterCodeError",
    "RegisterCodeUsed",
    "RegistrationCode",
    "RegistryCounts",
    "RegistryError",
    "RegistryEvent",
    "RegistryEvents",
    "RegistryService",
    "RegistryStore",
    "Result",
    "SerialCollision",
    "SettingChanged",
    "SnNotUnique",
    "Status",
    "TrustIndex",
    "open_registry",
]
