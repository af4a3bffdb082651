"""The columns of a row of each audit log, from what was recorded (docs/registry.md, "What a row
holds"). Every value is made to fit its column, so that one odd record (a naive time, a None, an
overlong peer) can never make a whole batch fail."""

from __future__ import annotations

import datetime
import json
from typing import Any

from certmq.registry.pending import PARAMETER_NAME_LIMIT, PARAMETER_VALUE_LIMIT, TEXT_LIMIT
from certmq.registry.records import DecisionEntry, OperationEntry, utc_now

SMALLINT = 32767
INTEGER = 2**31 - 1
# Column sizes of the decision table; longer values are cut to fit.
_DECISION_LIMITS = {"listener": 32, "peer": 128, "ca_sn": 128, "device_sn": 128, "result": 8, "reason": 64}
_OPERATION_LIMITS = {
    "request_id": 64,
    "peer": 128,
    "access_key_id": 128,
    "signature_method": 32,
    "action": 64,
    "code": 64,
}


def _text(value: object, limit: int | None = None) -> str:
    text = "" if value is None else str(value)
    return text[:limit] if limit is not None and len(text) > limit else text


def _number(value: Any, lowest: int, highest: int) -> int:
    """``value`` as an integer from ``lowest`` to ``highest``; ``lowest`` when it is none."""
    try:
        return min(max(int(value), lowest), highest)
    except (TypeError, ValueError):
        return lowest


def _moment(value: object) -> datetime.datetime:
    """An aware time: a naive one is UTC, and what is not a time at all is now."""
    if not isinstance(value, datetime.datetime):
        return utc_now()
    return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value


def _folded(count: Any, first_seen: object) -> tuple[int, datetime.datetime | None]:
    """The ``count`` and ``first_seen`` columns of a row that may be folded: a count from 1 that
    fits the column, and no first time unless the row stands for more than one."""
    counted = _number(count, 1, INTEGER)
    if not isinstance(first_seen, datetime.datetime) or counted == 1:
        return counted, None
    return counted, _moment(first_seen)


def decision_row(decision: DecisionEntry) -> dict[str, Any]:
    """The row of a decision."""
    count, first_seen = _folded(decision.count, decision.first_seen)
    return {
        "time": _moment(decision.time),
        "listener": _text(decision.listener, _DECISION_LIMITS["listener"]),
        "peer": _text(decision.peer, _DECISION_LIMITS["peer"]),
        "client_id": _text(decision.client_id),
        "ca_sn": _text(decision.ca_sn, _DECISION_LIMITS["ca_sn"]),
        "device_sn": _text(decision.device_sn, _DECISION_LIMITS["device_sn"]),
        "cn": _text(decision.cn),
        "step": _number(decision.step, 0, SMALLINT),
        "result": _text(decision.result, _DECISION_LIMITS["result"]),
        "reason": _text(decision.reason, _DECISION_LIMITS["reason"]),
        "detail": _text(decision.detail),
        "count": count,
        "first_seen": first_seen,
        "identity_known": bool(decision.identity_known),
    }


def operation_row(operation: OperationEntry) -> dict[str, Any]:
    """The row of a call of the RPC API."""
    parameters = operation.parameters if isinstance(operation.parameters, dict) else {}
    count, first_seen = _folded(operation.count, operation.first_seen)
    return {
        "time": _moment(operation.time),
        "request_id": _text(operation.request_id, _OPERATION_LIMITS["request_id"]),
        "peer": _text(operation.peer, _OPERATION_LIMITS["peer"]),
        "access_key_id": _text(operation.access_key_id, _OPERATION_LIMITS["access_key_id"]),
        "authenticated": bool(operation.authenticated),
        "signature_method": _text(operation.signature_method, _OPERATION_LIMITS["signature_method"]),
        "action": _text(operation.action, _OPERATION_LIMITS["action"]),
        "parameters": json.dumps(
            {
                _text(key, PARAMETER_NAME_LIMIT): _text(value, PARAMETER_VALUE_LIMIT)
                for key, value in parameters.items()
            },
            ensure_ascii=False,
            sort_keys=True,
        ),
        "status": _number(operation.status, 0, SMALLINT),
        "code": _text(operation.code, _OPERATION_LIMITS["code"]),
        "message": _text(operation.message, TEXT_LIMIT),
        "duration_ms": _number(operation.duration_ms, 0, INTEGER),
        "count": count,
        "first_seen": first_seen,
    }
