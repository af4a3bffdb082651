"""Topic authorization: which topics a client may publish to and subscribe to.

Rules live in a TOML file (``auth.acl_file``; docs/configuration.md, "Topic authorization rules")
and are checked in order; the first rule that applies decides, and ``auth.acl_default`` decides
when none does::

    [[rule]]
    permission = "allow"              # "allow" | "deny"
    action = "publish"                # "publish" | "subscribe" | "all"
    topic = "devices/${cert.cn}/#"    # a topic filter; variables are filled per client
    client_id = "GID_*"               # optional: shell-style pattern on the client id
    username = "*"                    # optional: shell-style pattern on the username

Variables: ``${client_id}``, ``${username}`` and every identity value the authentication step
provides (``${cert.cn}``, ``${cert.sn}``, ``${cert.ca_sn}``, ``${access_key_id}``...). A rule
whose variable has no value for a client, or a value holding ``+``, ``#`` or ``/``, does not
apply to that client: a variable can never widen a rule.

Rules are compiled once per client, when it connects (and again when the rules are reloaded),
so a PUBLISH costs one topic match per rule and nothing when no rules are configured.

Every route by which a client makes the broker publish, or gets messages from it, asks one of
:func:`may_publish`, :func:`may_subscribe` and :func:`may_receive` when it takes effect: PUBLISH
(point-to-point topics too), the will (at CONNECT and again when it is published), SUBSCRIBE
(a shared subscription by its filter), the retained messages a SUBSCRIBE hands out, and routed
and point-to-point messages to a client whose rights no longer cover all of a subscription.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from certmq.auth.identity import Identity
from certmq.mqtt.errors import MQTTError
from certmq.mqtt.topics import matches, parse_shared_subscription, validate_topic_filter

ACTIONS = ("publish", "subscribe", "all")
# The broker's own statistics (sys_topics): no client may publish there, whatever the rules say.
SYSTEM_TOPIC = "$SYS"
# The audit log's reason for a CONNECT refused because the rules deny the topic of its will.
WILL_TOPIC_DENIED = "will-topic-denied"
PERMISSIONS = ("allow", "deny")
_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


class TopicRulesError(Exception):
    """The rules file is not valid; the message names the rule and the problem."""


@dataclass(frozen=True, slots=True)
class TopicRule:
    allow: bool
    publish: bool
    subscribe: bool
    topic: str
    client_id: str | None = None
    username: str | None = None


def filter_covers(outer: str, inner: str) -> bool:
    """True when every topic that ``inner`` matches is also matched by ``outer``."""
    outer_levels = outer.split("/")
    inner_levels = inner.split("/")
    if outer_levels[0] in ("+", "#") and inner.startswith("$"):
        # A wildcard in the first level matches no `$` topic (MQTT 4.7.2): it covers no `$` filter.
        return False
    for index, level in enumerate(outer_levels):
        if level == "#":
            return True
        if index >= len(inner_levels):
            return False
        other = inner_levels[index]
        if other == "#":
            return False
        if level != "+" and (other == "+" or other != level):
            return False
    return len(inner_levels) == len(outer_levels)


def filters_overlap(first: str, second: str) -> bool:
    """True when some topic is matched by both filters."""
    first_levels = first.split("/")
    second_levels = second.split("/")
    for index in range(max(len(first_levels), len(second_levels))):
        a = first_levels[index] if index < len(first_levels) else None
        b = second_levels[index] if index < len(second_levels) else None
        if a == "#" or b == "#":
            return True
        if a is None or b is None:
            return False
        if a != b and a != "+" and b != "+":
            return False
    return True


class ClientPermissions:
    """The rules as they apply to one client."""

    __slots__ = ("_default", "_rules")

    def __init__(self, rules: list[tuple[bool, bool, bool, str]], default_allow: bool) -> None:
        self._rules = rules
        self._default = default_allow

    def can_publish(self, topic: str) -> bool:
        for allow, publish, _, topic_filter in self._rules:
            if publish and matches(topic_filter, topic):
                return allow
        return self._default

    def can_subscribe(self, topic_filter: str) -> bool:
        """Whether the subscription as a whole is allowed (take the filter of a shared subscription
        without its `$share/<group>/`)."""
        for allow, _, subscribe, rule_filter in self._rules:
            if not subscribe:
                continue
            # An allow rule must cover the whole subscription; a deny rule applies to any overlap.
            if allow and filter_covers(rule_filter, topic_filter):
                return True
            if not allow and filters_overlap(rule_filter, topic_filter):
                return False
        return self._default

    def can_receive(self, topic: str) -> bool:
        """Whether a message on the topic name ``topic`` may be delivered to the client: the
        subscribe rules, applied to one topic."""
        for allow, _, subscribe, rule_filter in self._rules:
            if subscribe and matches(rule_filter, topic):
                return allow
        return self._default


def is_system_topic(topic: str) -> bool:
    return topic == SYSTEM_TOPIC or topic.startswith(SYSTEM_TOPIC + "/")


def may_publish(permissions: ClientPermissions | None, topic: str) -> bool:
    """Whether a client may make the broker publish on ``topic`` (by PUBLISH or by its will).
    ``permissions`` None: no rules are configured."""
    if is_system_topic(topic):
        return False
    return permissions is None or permissions.can_publish(topic)


def may_subscribe(permissions: ClientPermissions | None, topic_filter: str) -> bool:
    """Whether a client may subscribe to ``topic_filter``; a shared subscription is judged by its
    filter, without `$share/<group>/`."""
    if permissions is None:
        return True
    _, real_filter = parse_shared_subscription(topic_filter)
    return permissions.can_subscribe(real_filter)


def may_receive(permissions: ClientPermissions | None, topic: str) -> bool:
    """Whether a message on ``topic`` may be delivered to a client."""
    return permissions is None or permissions.can_receive(topic)


class TopicRules:
    def __init__(self, rules: list[TopicRule], default_allow: bool = True) -> None:
        self.rules = rules
        self.default_allow = default_allow

    @classmethod
    def load(cls, path: Path, default_allow: bool = True) -> TopicRules:
        try:
            document = tomllib.loads(path.read_text())
        except OSError as error:
            raise TopicRulesError(f"{path}: cannot read the topic rules: {error}") from None
        except tomllib.TOMLDecodeError as error:
            raise TopicRulesError(f"{path}: not valid TOML: {error}") from None
        entries = document.get("rule", [])
        if not isinstance(entries, list) or set(document) - {"rule"}:
            raise TopicRulesError(f"{path}: expected only [[rule]] tables")
        return cls(
            [_parse_rule(entry, f"{path}: rule {number}") for number, entry in enumerate(entries, 1)],
            default_allow,
        )

    def for_client(self, client_id: str, username: str | None, identity: Identity) -> ClientPermissions:
        values = identity.fields()
        values["client_id"] = client_id
        if username is not None:
            values["username"] = username
        compiled: list[tuple[bool, bool, bool, str]] = []
        for rule in self.rules:
            if rule.client_id is not None and not fnmatch.fnmatchcase(client_id, rule.client_id):
                continue
            if rule.username is not None and not fnmatch.fnmatchcase(username or "", rule.username):
                continue
            topic = _substitute(rule.topic, values)
            if topic is not None:
                compiled.append((rule.allow, rule.publish, rule.subscribe, topic))
        return ClientPermissions(compiled, self.default_allow)


def _substitute(template: str, values: Mapping[str, str]) -> str | None:
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if value is None or not value or any(c in value for c in "+#/"):
            missing = True
            return ""
        return value

    topic = _VARIABLE.sub(fill, template)
    return None if missing else topic


def _parse_rule(entry: object, where: str) -> TopicRule:
    if not isinstance(entry, dict):
        raise TopicRulesError(f"{where}: expected a table")
    unknown = set(entry) - {"permission", "action", "topic", "client_id", "username"}
    if unknown:
        raise TopicRulesError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    permission = entry.get("permission")
    action = entry.get("action", "all")
    topic = entry.get("topic")
    if permission not in PERMISSIONS:
        raise TopicRulesError(f"{where}: permission must be allow or deny, got {permission!r}")
    if action not in ACTIONS:
        raise TopicRulesError(f"{where}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if not isinstance(topic, str):
        raise TopicRulesError(f"{where}: topic must be a topic filter string")
    try:
        validate_topic_filter(_VARIABLE.sub("x", topic))
    except MQTTError as error:
        raise TopicRulesError(f"{where}: topic {topic!r} is not a valid filter: {error}") from None
    patterns = {key: entry.get(key) for key in ("client_id", "username")}
    for key, value in patterns.items():
        if value is not None and not isinstance(value, str):
            raise TopicRulesError(f"{where}: {key} must be a string pattern")
    return TopicRule(
        allow=permission == "allow",
        publish=action in ("publish", "all"),
        subscribe=action in ("subscribe", "all"),
        topic=topic,
        client_id=patterns["client_id"],
        username=patterns["username"],
    )
