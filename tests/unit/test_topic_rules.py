from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certmq.auth.identity import ANONYMOUS, Identity
from certmq.auth.topics import (
    ClientPermissions,
    TopicRule,
    TopicRules,
    TopicRulesError,
    filter_covers,
    filters_overlap,
    may_publish,
    may_receive,
    may_subscribe,
)
from certmq.mqtt.topics import matches

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
    permissions = load(tmp_path).for_client("dev-1", None, Identity(cn="sensor-7"))
    assert permissions.can_publish("devices/sensor-7/temperature")
    assert permissions.can_publish("devices/sensor-7")
    assert not permissions.can_publish("devices/sensor-8/temperature")
    assert not permissions.can_publish("devices/sensor-7/secrets/key")
    assert not permissions.can_publish("ops/restart")


def test_subscriptions_must_stay_inside_an_allow_rule(tmp_path: Path) -> None:
    permissions = load(tmp_path).for_client("dev-1", None, ANONYMOUS)
    assert permissions.can_subscribe("commands/dev-1/reboot")
    assert permissions.can_subscribe("commands/dev-1/+")
    assert not permissions.can_subscribe("commands/dev-1/#")
    assert not permissions.can_subscribe("commands/+/reboot")
    assert not permissions.can_subscribe("devices/#")  # overlaps the deny rule


def test_a_missing_or_widening_variable_disables_the_rule(tmp_path: Path) -> None:
    rules = load(tmp_path)
    assert not rules.for_client("dev-1", None, ANONYMOUS).can_publish("devices//x")
    assert not rules.for_client("dev-1", None, Identity(cn="#")).can_publish("devices/a/b")
    assert not rules.for_client("a/b", None, ANONYMOUS).can_subscribe("commands/a/b/c")


def test_client_id_patterns_and_the_default(tmp_path: Path) -> None:
    rules = load(tmp_path, default_allow=True)
    assert rules.for_client("admin-1", None, ANONYMOUS).can_publish("ops/restart")
    assert rules.for_client("other", None, ANONYMOUS).can_publish("ops/restart")  # default allow
    assert not rules.for_client("admin-1", None, ANONYMOUS).can_subscribe("devices/x/secrets/y")


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('rule = ["a"]', "rule 1: expected a table"),
        ('[[rule]]\npermission = "allow"\ntopic = "a"\n[[rule]]\npermission = "allow"\ntopic = 7',
         "rule 2: topic must be a topic filter string"),
        ('[[rule]]\npermission = "allow"\ntopic = "a"\nusername = 7', "rule 1: username must be a string pattern"),
        ('[[rule]]\npermission = "allow"\ntopic = "a"\nsize = 1\ncolour = "red"',
         "rule 1: unknown keys colour, size"),
        ('[[rule]]\npermission = "allow"\naction = "read"\ntopic = "a"',
         "rule 1: action must be one of publish, subscribe, all, got 'read'"),
    ],
)  # fmt: skip
def test_a_bad_rule_is_named_by_its_number(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TopicRulesError) as raised:
        load(tmp_path, text)
    assert str(raised.value) == f"{tmp_path / 'acl.toml'}: {message}"


def test_an_empty_file_has_no_rules_and_both_defaults_allow(tmp_path: Path) -> None:
    path = tmp_path / "acl.toml"
    path.write_text("")
    assert TopicRules.load(path).rules == []
    assert TopicRules.load(path).for_client("c-1", None, ANONYMOUS).can_publish("a")
    assert TopicRules([]).for_client("c-1", None, ANONYMOUS).can_subscribe("a/#")


USERNAME_RULES = """
[[rule]]
permission = "deny"
topic = "users/#"
client_id = "admin-*"

[[rule]]
permission = "deny"
topic = "ops/#"
username = "guest-*"

[[rule]]
permission = "allow"
topic = "users/${username}/#"
username = "ops-*"

[[rule]]
permission = "allow"
topic = "ops/#"
"""


def test_username_patterns_and_the_username_variable(tmp_path: Path) -> None:
    rules = load(tmp_path, USERNAME_RULES)
    operator = rules.for_client("c-1", "ops-1", ANONYMOUS)
    assert operator.can_publish("users/ops-1/x") and not operator.can_publish("users/ops-2/x")
    # A rule whose pattern does not match is skipped, and the rules after it still apply.
    assert operator.can_publish("ops/restart") and operator.can_subscribe("ops/#")
    guest = rules.for_client("c-1", "guest-1", ANONYMOUS)
    assert not guest.can_publish("ops/restart") and not guest.can_publish("users/guest-1/x")
    # No username: no pattern matches it, and no ${username} is filled in.
    anonymous = rules.for_client("c-1", None, ANONYMOUS)
    assert anonymous.can_publish("ops/restart") and not anonymous.can_publish("users//x")


def test_a_variable_fills_in_any_value_but_an_empty_one(tmp_path: Path) -> None:
    rules = load(tmp_path)
    assert rules.for_client("dev-1", None, Identity(cn="sensor-X")).can_publish("devices/sensor-X/t")
    # A device certificate's CN is given even when empty; an empty value fills in nothing.
    device_without_cn = Identity(ca_sn="0a", device_sn="01", cn="")
    assert device_without_cn.fields()["cert.cn"] == ""
    assert not rules.for_client("dev-1", None, device_without_cn).can_publish("devices//t")
    assert not rules.for_client("dev-1", None, ANONYMOUS).can_publish("devices//t")


def test_a_publish_rule_does_not_end_the_search_for_a_subscribe_rule(tmp_path: Path) -> None:
    permissions = load(tmp_path).for_client("dev-1", None, Identity(cn="sensor-7"))
    assert permissions.can_subscribe("commands/dev-1/reboot")
    assert not permissions.can_subscribe("devices/sensor-7/t")


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
    assert not filters_overlap("a/+", "a")
    assert not filter_covers("a/b/c", "a/b")
    assert not filter_covers("a/+/c", "a/b")


# -- the one check every route makes ---------------------------------------------------------

ALLOW_EVERYTHING = TopicRules([], default_allow=True).for_client("dev-1", None, ANONYMOUS)


@pytest.mark.parametrize("permissions", [None, ALLOW_EVERYTHING], ids=["no rules", "acl_default allow"])
def test_no_client_publishes_under_sys(permissions: ClientPermissions | None) -> None:
    assert not may_publish(permissions, "$SYS/broker/version")
    assert not may_publish(permissions, "$SYS")
    assert may_publish(permissions, "$SYSTEM/x")  # another `$` topic: the rules decide
    assert may_publish(permissions, "devices/a")
    assert may_subscribe(permissions, "$SYS/#")  # subscribing is up to the rules
    assert may_receive(permissions, "$SYS/broker/version")


def test_a_shared_subscription_is_judged_by_its_filter(tmp_path: Path) -> None:
    permissions = load(tmp_path, default_allow=True).for_client("dev-1", None, ANONYMOUS)
    assert not may_subscribe(permissions, "devices/+/secrets/#")
    assert not may_subscribe(permissions, "$share/group/devices/+/secrets/#")
    assert not may_subscribe(permissions, "$share/group/devices/#")  # overlaps the deny rule
    assert may_subscribe(permissions, "$share/group/commands/dev-1/reboot")
    assert may_subscribe(None, "$share/group/#")


def test_receiving_applies_the_subscribe_rules_to_one_topic(tmp_path: Path) -> None:
    permissions = load(tmp_path).for_client("dev-1", None, Identity(cn="sensor-7"))
    assert may_receive(permissions, "commands/dev-1/reboot")
    assert not may_receive(permissions, "commands/dev-2/reboot")
    assert not may_receive(permissions, "devices/sensor-7/temperature")  # a publish rule only
    assert not may_receive(permissions, "devices/x/secrets/key")
    assert may_receive(None, "anything/at/all")


def test_a_first_level_wildcard_covers_no_dollar_filter() -> None:
    # `#` and `+/...` match no topic starting with `$` (MQTT 4.7.2): an allow rule written so
    # must not grant a subscription whose messages it would refuse one by one.
    assert not filter_covers("#", "$SYS/#")
    assert not filter_covers("+/status", "$private/status")
    assert filter_covers("$SYS/#", "$SYS/broker/+")
    permissions = TopicRules(
        [
            TopicRule(allow=True, publish=False, subscribe=True, topic="+/public/#"),
            TopicRule(allow=False, publish=False, subscribe=True, topic="$private/#"),
        ],
        default_allow=True,
    ).for_client("dev-1", None, ANONYMOUS)
    assert not may_receive(permissions, "$private/public/x")
    assert not may_subscribe(permissions, "$private/public/#")
    assert may_subscribe(permissions, "home/public/#")


LEVELS = st.sampled_from(["a", "b", "$s", "+", "#"])


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(LEVELS, min_size=1, max_size=4))
    if "#" in levels:
        levels = levels[: levels.index("#") + 1]
    return "/".join(levels)


def topic_names(topic_filter: str) -> st.SearchStrategy[str]:
    """Topic names that ``topic_filter`` matches (and a few it does not)."""
    parts = []
    for level in topic_filter.split("/"):
        if level == "+":
            parts.append(st.sampled_from(["a", "b", "$s"]).map(lambda name: [name]))
        elif level == "#":
            parts.append(st.lists(st.sampled_from(["a", "b"]), max_size=2))
        else:
            parts.append(st.just([level]))
    return st.tuples(*parts).map(lambda chunks: "/".join(level for chunk in chunks for level in chunk) or "a")


@given(
    rules=st.lists(
        st.builds(
            TopicRule,
            allow=st.booleans(),
            publish=st.just(False),
            subscribe=st.just(True),
            topic=topic_filters(),
        ),
        max_size=4,
    ),
    default_allow=st.booleans(),
    data=st.data(),
)
def test_an_allowed_subscription_is_allowed_every_topic_it_matches(
    rules: list[TopicRule], default_allow: bool, data: st.DataObject
) -> None:
    """What makes a subscription cost nothing per message: once granted, each message it matches
    would be allowed on its own too."""
    permissions = TopicRules(rules, default_allow).for_client("c", None, ANONYMOUS)
    topic_filter = data.draw(topic_filters())
    topic = data.draw(topic_names(topic_filter))
    if may_subscribe(permissions, topic_filter) and matches(topic_filter, topic):
        assert may_receive(permissions, topic)
