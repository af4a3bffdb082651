"""The operations log of the RPC API: every call, who made it, what it asked for, what it got.

Entries go to the registry's ``api_operation`` table (:meth:`RegistryService.record_operation`,
written in batches within half a second), where ``GET /api/v1/operations`` and
``certmq operations`` search them. Refused calls are logged too, with the AccessKeyId they
claimed and ``authenticated`` false. Certificate contents are logged as a hash and a length: the
log says which certificate was sent without growing by kilobytes per call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from certmq.api.rpc.signature import SIGNATURE_PARAMETERS

CONTENT_PARAMETERS = frozenset({"CaContent", "VerificationContent"})
# Said by other columns (action, signature) or of no interest to the reader of the log.
_LEFT_OUT = SIGNATURE_PARAMETERS | {"Action", "Version", "Format", "RegionId"}


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
