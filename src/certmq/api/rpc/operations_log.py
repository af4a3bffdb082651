"""The operations log of the RPC API: every call, who made it, what it asked for, what it got.

Entries go to the registry's ``api_operation`` table (:meth:`RegistryService.record_operation`,
written in batches within half a second), where ``GET /api/v1/operations`` and
``certmq operations`` search them. Refused calls are logged too, with the AccessKeyId they
claimed and ``authenticated`` false; those are folded per source, action and error code
(:mod:`certmq.registry.folding`). Certificate contents are logged as a hash and a length: the
log says which certificate was sent without growing by kilobytes per call; and the registry keeps
a few parameters of bounded length of each call (:mod:`certmq.registry.pending`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from certmq.api.rpc.actions import ACTIONS
from certmq.api.rpc.signature import SIGNATURE_PARAMETERS

CONTENT_PARAMETERS = frozenset({"CaContent", "VerificationContent"})
ACTION_PARAMETER = "Action"
# Said by other columns (action, signature) or of no interest to the reader of the log.
_LEFT_OUT = SIGNATURE_PARAMETERS | {ACTION_PARAMETER, "Version", "Format", "RegionId"}


def logged_call(named_action: str, parameters: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The action and the parameters of a call as the log keeps them. The action is the one the
    call named (in the Action parameter or the x-acs-action header) when the API serves it, else
    "", and the name it gave is kept among the parameters as ``Action``: so the action column,
    by which refused calls are folded, holds one of a few names whatever a client sends."""
    logged = logged_parameters(parameters)
    if named_action in ACTIONS:
        return named_action, logged
    if named_action:
        logged[ACTION_PARAMETER] = named_action
    return "", logged


def logged_parameters(parameters: Mapping[str, str]) -> dict[str, str]:
    """The parameters of a call as the log keeps them."""
    logged: dict[str, str] = {}
    for name in sorted(parameters):
        if name in _LEFT_OUT:
            continue
        value = parameters[name]
        if name in CONTENT_PARAMETERS:
            digest = hashlib.sha256(value.encode("utf-8")).hexdigest()
            value = f"sha256:{digest} ({len(value)} characters)"
        logged[name] = value
    return logged
