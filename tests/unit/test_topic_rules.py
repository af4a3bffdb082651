from pathlib import Path

import pytest

from certmq.auth.topics import TopicRules, TopicRulesError, filter_covers, filters_overlap

RULES = """
[[rule]]
permission = "deny"
action = "all"
topic = "devices/+/secrets/#"

[[rule]]
permission = "allow"
action = "publish"
topic = "devices/${cert.cn}/#"

[[rule]]
permission = "allow"
action = "subscribe"
topic = "commands/${client_id}/+"

[[rule]]
permission = "allow"
action = "all"
topic = "ops/#"
client_id = "admin-*"
"""


def load(tmp_path: Path, text: str = RULES, default_allow: bool = False) -> TopicRules:
    path = tmp_path / "acl.toml"
    path.write_text(text)
    return TopicRules.load(path, default_allow=default_allow)


def test_a_device_publishes_only_under_its_own_name(tmp_path: Path) -> None:
    permissions = load(tmp_path).for_client("dev-1", None, {"cert.cn": "sensor-7"})
    assert permissions.can_publish("devices/sensor-7/temperature")
    assert permissions.can_publish("devices/sensor-7")
    assert not permissions.can_publish("devices/sensor-8/temperature")
    assert not permissions.can_publish("devices/sensor-7/secrets/key")
    assert not permissions.can_publish("ops/restart")


def test_subscriptions_must_stay_inside_an_allow_rule(tmp_path: Path) -> None:
    permissions = load(tmp_path).for_client("dev-1", None, {})
    assert permissions.can_subscribe("commands/dev-1/reboot")
    assert permissions.can_subscribe("commands/dev-1/+")
    assert not permissions.can_subscribe("commands/dev-1/#")
    assert not permissions.can_subscribe("commands/+/reboot")
    assert not permissions.can_subscribe("devices/#")  # overlaps the deny rule


def test_a_missing_or_widening_variable_disables_the_rule(tmp_path: Path) -> None:
    rules = load(tmp_path)
    assert not rules.for_client("dev-1", None, {}).can_publish("devices//x")
    assert not rules.for_client("dev-1", None, {"cert.cn": "#"}).can_publish("devices/a/b")
    assert not rules.for_client("a/b", None, {}).can_subscribe("commands/a/b/c")


def test_client_id_patterns_and_the_default(tmp_path: Path) -> None:
    rules = load(tmp_path, default_allow=True)
    assert rules.for_client("admin-1", None, {}).can_publish("ops/restart")
    assert rules.for_client("other", None, {}).can_publish("ops/restart")  # default allow
    assert not rules.for_client("admin-1", None, {}).can_subscribe("devices/x/secrets/y")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rule]]\npermission = "maybe"\ntopic = "a"', "permission"),
        ('[[rule]]\npermission = "allow"\naction = "read"\ntopic = "a"', "action"),
        ('[[rule]]\npermission = "allow"\ntopic = "a/#/b"', "not a valid filter"),
        ('[[rule]]\npermission = "allow"\ntopic = "a"\ncolour = "red"', "unknown keys"),
        ("[other]\nx = 1", "expected only"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_rule_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TopicRulesError, match=message):
        load(tmp_path, text)


def test_filter_covering_and_overlap() -> None:
    assert filter_covers("a/#", "a/b/+")
    assert filter_covers("a/+", "a/b")
    assert filter_covers("#", "a/#")
    assert not filter_covers("a/+", "a/#")
    assert not filter_covers("a/b", "a/+")
    assert not filter_covers("a/+", "a/b/c")
    assert filters_overlap("a/+/c", "a/b/#")
    assert filters_overlap("+/b", "a/+")
    assert not filters_overlap("a/b", "a/c")
    assert not filters_overlap("a/b", "a/b/c")
