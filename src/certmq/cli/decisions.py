"""Search the recorded authentication decisions, newest first: who was allowed or denied, at
which step of the decision procedure, and why. Repeated refusals of clients that proved no known
identity are folded: COUNT says how many one row stands for, from FIRST SEEN to TIME, and PEER is
their source."""

from __future__ import annotations

from certmq.cli.log_search import FOLDED_COLUMNS, Filter, LogCommand
from certmq.cli.output import short_time

DECISION_COLUMNS = [
    ("TIME", lambda decision: short_time(decision["time"])),
    ("RESULT", lambda decision: decision["result"]),
    ("REASON", lambda decision: decision["reason"]),
    *FOLDED_COLUMNS,
    ("STEP", lambda decision: decision["step"]),
    ("LISTENER", lambda decision: decision["listener"]),
    ("PEER", lambda decision: decision["peer"]),
    ("CLIENT ID", lambda decision: decision["client_id"]),
    ("CN", lambda decision: decision["cn"]),
    ("DEVICE SN", lambda decision: decision["device_sn"]),
    ("DETAIL", lambda decision: decision["detail"]),
]

COMMAND = LogCommand(
    name="decisions",
    help="search the authentication decisions",
    description=__doc__,
    filters=[
        Filter("--device", "device_sn", "only those of the device certificate with this DeviceSn", "SN"),
        Filter("--ca", "ca_sn", "only those of devices of the CA with this Sn", "SN"),
        Filter("--client-id", "client_id", "only those of this MQTT client id", "ID"),
        Filter("--result", "result", "only allowed or only denied", choices=("allow", "deny")),
        Filter("--reason", "reason", "only this reason, e.g. device-inactive", "REASON"),
    ],
    entries="decisions",
    columns=DECISION_COLUMNS,
    none="no decisions match",
)
add_parser = COMMAND.add_parser
