"""The ApsaraMQ-compatible RPC API (docs/api.md): product onsmqtt, version 2020-04-20, served
at ``/`` of the HTTP listener and usable by Alibaba Cloud's official SDKs unchanged.

``endpoint`` runs a request through the layers, each in its module: ``parameters`` (query string
and form body), ``signature`` (ACS3-HMAC-SHA256 and HMAC-SHA1, timestamp window, nonces),
``rate_limit`` (a token bucket per AccessKey), ``actions`` (the action table and its thin
handlers over the registry service) and ``operations_log`` (every call, who, what, result).
"""

from certmq.api.rpc.actions import ACTIONS, VERSION
from certmq.api.rpc.endpoint import RpcEndpoint, RpcSettings

__all__ = ["ACTIONS", "VERSION", "RpcEndpoint", "RpcSettings"]
