"""Folding the refusals of strangers (certmq.registry.folding), in the decision log and in the
operations log of the RPC API: records in, rows out, with the clock given explicitly."""

from __future__ import annotations

import datetime

import pytest

from certmq.api.rpc.actions import ACTIONS
from certmq.api.rpc.operations_log import logged_call
from certmq.registry import DecisionEntry, OperationEntry
from certmq.registry.folding import (
    DECISIONS,
    FOLDED_TEXT_LIMIT,
    OPERATIONS,
    OTHER_SOURCES,
    RefusalFolding,
    source_of,
)

T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
WINDOW = datetime.timedelta(seconds=60)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def refusal(
    seconds: float, peer: str = "203.0.113.7:40000", reason: str = "bad-credentials", **fields: object
) -> DecisionEntry:
    values: dict[str, object] = {
        "listener": "tcp",
        "peer": peer,
        "client_id": "x",
        "result": "deny",
        "reason": reason,
        "detail": "signature does not match",
        "identity_known": False,
        "time": at(seconds),
    }
    values.update(fields)
    return DecisionEntry(**values)  # type: ignore[arg-type]


def shape(
    rows: list[DecisionEntry] | tuple[DecisionEntry, ...],
) -> list[tuple[str, str, int, datetime.datetime | None, datetime.datetime]]:
    return [(row.peer, row.reason, row.count, row.first_seen, row.time) for row in rows]


def test_the_first_refusal_is_written_at_once_and_the_rest_of_its_window_make_one_row() -> None:
    folding = RefusalFolding(DECISIONS, WINDOW)
    assert shape(folding.add(refusal(0))) == [("203.0.113.7:40000", "bad-credentials", 1, None, at(0))]
    for second in range(1, 50):
        assert folding.add(refusal(second, peer=f"203.0.113.7:{40000 + second}")) == ()
    assert folding.close_expired(at(59.9)) == []
    assert shape(folding.close_expired(at(60))) == [("203.0.113.7", "bad-credentials", 49, at(1), at(49))]
    assert folding.open_windows == 0
    assert folding.folded == {"bad-credentials": 49}


def test_a_refusal_after_the_window_closes_it_and_opens_the_next() -> None:
    folding = RefusalFolding(DECISIONS, WINDOW)
    folding.add(refusal(0))
    folding.add(refusal(10))
    folding.add(refusal(20))
    rows = folding.add(refusal(61))
    assert shape(rows) == [
        ("203.0.113.7", "bad-credentials", 2, at(10), at(20)),
        ("203.0.113.7:40000", "bad-credentials", 1, None, at(61)),
    ]
    assert folding.open_windows == 1


def test_a_flood_costs_two_rows_per_window_and_the_counts_add_up() -> None:
    folding = RefusalFolding(DECISIONS, WINDOW)
    rows: list[DecisionEntry] = []
    attempts = 0
    for tenth in range(36_000):  # an hour, ten refusals a second
        rows += folding.add(refusal(tenth / 10, peer=f"198.51.100.9:{1024 + tenth % 60000}"))
        attempts += 1
    rows += folding.close_all()
    assert len(rows) == 2 * 60
    assert sum(row.count for row in rows) == attempts
    assert folding.folded_total == attempts - 60


def test_windows_are_per_listener_source_and_reason() -> None:
    folding = RefusalFolding(DECISIONS, WINDOW)
    opened = [
        refusal(0),
        refusal(1, reason="no-credentials"),
        refusal(2, listener="ws"),
        refusal(3, peer="203.0.113.8:40000"),
    ]
    for decision in opened:
        assert folding.add(decision) == (decision,)
    assert folding.open_windows == 4
    for decision in opened:
        assert folding.add(decision) == ()
    assert sorted((row.listener, row.peer, row.reason, row.count) for row in folding.close_all()) == [
        ("tcp", "203.0.113.7", "bad-credentials", 1),
        ("tcp", "203.0.113.7", "no-credentials", 1),
        ("tcp", "203.0.113.8", "bad-credentials", 1),
        ("ws", "203.0.113.7", "bad-credentials", 1),
    ]


@pytest.mark.parametrize(
    "decision",
    [
        refusal(0, identity_known=True, reason="device-inactive"),
        refusal(0, result="allow", reason="anonymous"),
        refusal(0, result="allow", reason="signature", identity_known=True),
    ],
    ids=["refusal-of-a-known-identity", "anonymous-allow", "allow"],
)
def test_allows_and_refusals_of_known_identities_are_never_folded(decision: DecisionEntry) -> None:
    folding = RefusalFolding(DECISIONS, WINDOW)
    for _ in range(5):
        assert folding.add(decision) == (decision,)
    assert folding.open_windows == 0 and folding.folded == {}


def test_a_window_of_zero_folds_nothing() -> None:
    folding = RefusalFolding(DECISIONS, datetime.timedelta(0))
    for second in range(5):
        decision = refusal(second)
        assert folding.add(decision) == (decision,)
    assert folding.open_windows == 0


def test_the_map_of_open_windows_is_bounded() -> None:
    """Past the bound, further sources share one window per listener and reason: the rows stay
    bounded however many addresses a flood comes from."""
    folding = RefusalFolding(DECISIONS, WINDOW, max_open_windows=100)
    rows: list[DecisionEntry] = []
    for n in range(10_000):
        rows += folding.add(refusal(n / 1000, peer=f"10.{n // 65536}.{n // 256 % 256}.{n % 256}:1"))
    assert folding.open_windows == 101
    rows += folding.close_all()
    assert sum(row.count for row in rows) == 10_000
    others = [row for row in rows if row.peer == OTHER_SOURCES]
    assert len(others) == 1 and others[0].count == 10_000 - 100 - 1
    assert len(rows) == 100 + 2


def test_a_folded_row_keeps_the_last_refusal_with_its_texts_cut() -> None:
    folding = RefusalFolding(DECISIONS, WINDOW)
    folding.add(refusal(0))
    folding.add(refusal(1, client_id="first"))
    folding.add(refusal(2, client_id="c" * 65_535, detail="d" * 10_000, cn="n" * 1000))
    (row,) = folding.close_all()
    assert (len(row.client_id), len(row.detail), len(row.cn)) == (FOLDED_TEXT_LIMIT,) * 3
    assert (row.count, row.first_seen, row.time, row.identity_known) == (2, at(1), at(2), False)


@pytest.mark.parametrize(
    ("peer", "source"),
    [
        ("203.0.113.7:40000", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6:40000", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::99:443", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::99]:443", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.9:1883", "198.51.100.9"),
        ("::1:8883", "::/64"),
        ("2001::5:6:7:8:40000", "2001::/64"),  # the port is not taken for a ninth group
        ("2001:db8::1", "2001:db8::/64"),
        ("unix-socket", "unix-socket"),
        ("", ""),
    ],
)
def test_the_source_is_the_ipv4_address_or_the_ipv6_64(peer: str, source: str) -> None:
    assert source_of(peer) == source


# --- the operations log: calls that were not authenticated, per source, action and code ----------


def call(
    seconds: float,
    peer: str = "198.51.100.9:50000",
    action: str = "DeleteCaCertificate",
    code: str = "SignatureDoesNotMatch",
    **fields: object,
) -> OperationEntry:
    values: dict[str, object] = {
        "request_id": f"REQUEST-{seconds}",
        "action": action,
        "status": 403,
        "code": code,
        "access_key_id": "LTAI-claimed",
        "authenticated": False,
        "signature_method": "HMAC-SHA1",
        "peer": peer,
        "parameters": {"Sn": "0a0b"},
        "message": "the request signature does not match",
        "time": at(seconds),
    }
    values.update(fields)
    return OperationEntry(**values)  # type: ignore[arg-type]


def test_calls_that_were_not_authenticated_fold_per_source_action_and_code() -> None:
    folding = RefusalFolding(OPERATIONS, WINDOW)
    kinds = [
        ("DeleteCaCertificate", "SignatureDoesNotMatch"),
        ("DeleteCaCertificate", "Throttling.User"),
        ("ListCaCertificate", "InvalidAccessKeyId.NotFound"),
        ("", "ParameterFieldCheckFailed"),
    ]
    rows: list[OperationEntry] = []
    for n in range(4000):  # ten seconds of a flood from one source, through ever new ports
        action, code = kinds[n % len(kinds)]
        rows += folding.add(call(n / 400, peer=f"198.51.100.9:{1024 + n}", action=action, code=code))
    assert len(rows) == len(kinds)  # the first call of each kind, written as it came
    rows += folding.close_all()
    assert len(rows) == 2 * len(kinds)
    assert sum(row.count for row in rows) == 4000
    folded = [row for row in rows if row.count > 1]
    assert sorted((row.peer, row.action, row.code, row.count) for row in folded) == sorted(
        ("198.51.100.9", action, code, 999) for action, code in kinds
    )
    assert all(row.first_seen is not None and row.first_seen < row.time for row in folded)
    assert folding.folded == {code: 999 for _, code in kinds}


def test_authenticated_calls_are_never_folded() -> None:
    folding = RefusalFolding(OPERATIONS, WINDOW)
    for second in range(20):
        for code in ("Success", "SystemOverFlow", "FindCaBySnError"):
            authenticated = call(second, code=code, authenticated=True)
            assert folding.add(authenticated) == (authenticated,)
    assert folding.open_windows == 0 and folding.folded == {}


def test_a_folded_call_keeps_the_last_one_with_its_parameters_cut() -> None:
    folding = RefusalFolding(OPERATIONS, WINDOW)
    folding.add(call(0))
    huge = {f"P{n:02d}": "v" * 16_384 for n in range(64)}
    folding.add(call(1, parameters=huge, message="m" * 5000, access_key_id="K" * 10_000))
    (row,) = folding.close_all()
    assert (row.count, row.peer, row.authenticated) == (1, "198.51.100.9", False)
    assert len(row.parameters) == 16 + 1 and row.parameters["…"] == "48 more parameters not kept"
    assert all(len(value) <= FOLDED_TEXT_LIMIT for value in row.parameters.values())
    assert row.parameters["P00"].endswith("…[cut from 16384 characters]")
    assert len(row.message) == len(row.access_key_id) == FOLDED_TEXT_LIMIT


def test_names_of_actions_the_api_does_not_serve_open_no_windows_of_their_own() -> None:
    """The action of a logged call is one the API serves, or "": a stranger who names a new
    action with every call folds into one window per source and code all the same."""
    folding = RefusalFolding(OPERATIONS, WINDOW)
    rows: list[OperationEntry] = []
    for n in range(5000):
        action, parameters = logged_call(f"MadeUp{n}", {"Action": f"MadeUp{n}", "MqttInstanceId": "x"})
        assert action == "" and parameters == {"Action": f"MadeUp{n}", "MqttInstanceId": "x"}
        rows += folding.add(call(n / 100, action=action, parameters=parameters))
    assert folding.open_windows == 1
    rows += folding.close_all()
    assert [row.count for row in rows] == [1, 4999]
    assert rows[1].parameters["Action"] == "MadeUp4999"
    for name in ACTIONS:
        assert logged_call(name, {"Action": name, "CaSn": "0a"}) == (name, {"CaSn": "0a"})
    assert logged_call("", {}) == ("", {})
