"""MQTT topics and filters as NATS subjects, exactly, and the other names a node gives NATS.

Each MQTT topic level becomes exactly one NATS token, so that NATS's wildcards do MQTT's: ``+``
is ``*`` and ``#`` is ``>``. A token must be non-empty, hold no whitespace and no ``.``, and never
be ``*`` or ``>``; and the same tokens name JetStream key-value keys, whose characters are
``-/_=.a-zA-Z0-9``. So a level keeps its characters in ``[A-Za-z0-9_-]`` and every other
character becomes ``=XX`` for each byte of its UTF-8 encoding (upper-case hex, ``=`` itself
included); the empty level is the token ``=`` alone, which no escape can be mistaken for since an
escape always has two hex digits::

    sensors/room.1/temp  ->  <prefix>.sensors.room=2E1.temp
    a//b                 ->  <prefix>.a.=.b
    $SYS/x               ->  <prefix>.=24SYS.x

Every function here is pure: no I/O, no state.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from certmq.mqtt.errors import MalformedPacket
from certmq.mqtt.topics import SHARED_SUBSCRIPTION_PREFIX, validate_topic_filter, validate_topic_name

_KEPT = "A-Za-z0-9_-"
EMPTY_LEVEL_TOKEN = "="
SINGLE_LEVEL_WILDCARD = "*"
MULTI_LEVEL_WILDCARD = ">"

# What each byte of a level's UTF-8 encoding becomes: itself when kept, =XX otherwise (every byte
# of a character beyond ASCII is 0x80 or more, so escaping bytes one by one escapes characters).
_token_of_byte = tuple(
    chr(byte) if re.fullmatch(f"[{_KEPT}]", chr(byte)) else f"={byte:02X}" for byte in range(256)
).__getitem__
_token = re.compile(f"(?:[{_KEPT}]|=[0-9A-F]{{2}})+")
_escape_run = re.compile("(?:=[0-9A-F]{2})+")
# The hot path: most topics are plain words, whose subject is the topic with its slashes as dots.
_plain_topic: Callable[[str], re.Match[str] | None] = re.compile(f"[{_KEPT}]+(?:/[{_KEPT}]+)*").fullmatch
_plain_tokens: Callable[[str], re.Match[str] | None] = re.compile(f"[{_KEPT}]+(?:\\.[{_KEPT}]+)*").fullmatch


def _unescape(run: re.Match[str]) -> str:
    return bytes.fromhex(run.group().replace("=", "")).decode()


def level_token(level: str) -> str:
    """``level`` as one NATS token; any text to be named in one token (a client id, a shared
    subscription) is escaped the same way."""
    if not level:
        return EMPTY_LEVEL_TOKEN
    return "".join(map(_token_of_byte, level.encode()))


def token_level(token: str) -> str:
    """The text that :func:`level_token` made ``token`` of.

    Raises :class:`ValueError` for a token that :func:`level_token` does not make: a character it
    escapes, a lower-case or single hex digit, an escape of a kept character (``=41`` for ``A``),
    bytes that are not UTF-8.
    """
    if token == EMPTY_LEVEL_TOKEN:
        return ""
    if _token.fullmatch(token) is None:
        raise ValueError(f"{token!r} is not a token of an MQTT topic level")
    try:
        text = _escape_run.sub(_unescape, token)
    except UnicodeDecodeError:
        raise ValueError(f"{token!r} escapes bytes that are not UTF-8") from None
    if level_token(text) != token:
        raise ValueError(
            f"{token!r} escapes a character that is kept as it is; expected {level_token(text)!r}"
        )
    return text


def client_token(client_id: str) -> str:
    """A client id as one token, for subjects and key-value keys of one client."""
    return level_token(client_id)


def queue_group(group: str, topic_filter: str) -> str:
    """The NATS queue group of the shared subscription ``$share/{group}/{topic_filter}``.

    It names the filter as well as the group: NATS hands a message to one member of each queue
    group *name* among all the subscriptions it matches, whatever their subjects, whereas MQTT
    makes ``$share/g/a/+`` and ``$share/g/a/b`` two shared subscriptions, each of which gets the
    message published to ``a/b``. A group name holds no ``/``, so the first ``/`` ends it.
    """
    return level_token(f"{group}/{topic_filter}")


def topic_subject(prefix: str, topic: str) -> str:
    """The NATS subject of the topic name ``topic`` (as the codec checked it) under ``prefix``.

    ``prefix`` is one or more tokens joined by ``.`` (no wildcard), the same on every node. An
    escaped character takes three to twelve bytes, so a subject can be up to four times as long as
    its topic; nats-server refuses a protocol line longer than its ``max_control_line`` (4 KiB
    unless configured).
    """
    if _plain_topic(topic) is not None:
        return prefix + "." + topic.replace("/", ".")
    return prefix + "." + ".".join(map(level_token, topic.split("/")))


def subject_topic(prefix: str, subject: str) -> str:
    """The topic name whose subject under ``prefix`` is ``subject``: the inverse of :func:`topic_subject`.

    Raises :class:`ValueError` for a subject that :func:`topic_subject` does not make of a legal
    topic name.
    """
    head = prefix + "."
    if not subject.startswith(head):
        raise ValueError(f"subject {subject!r} is not under {head!r}")
    tokens = subject[len(head) :]
    if _plain_tokens(tokens) is not None:
        return tokens.replace(".", "/")
    levels = [token_level(token) for token in tokens.split(".")]
    if any("/" in level for level in levels):
        raise ValueError(f"subject {subject!r} has a token that escapes '/', which no topic level holds")
    topic = "/".join(levels)
    try:
        validate_topic_name(topic)
    except MalformedPacket as error:
        raise ValueError(f"subject {subject!r} is not the subject of a topic name: {error}") from None
    return topic


def filter_subjects(prefix: str, topic_filter: str) -> tuple[str, ...]:
    """The NATS subjects under ``prefix`` that, together, match the topics that ``topic_filter`` matches.

    ``+`` becomes ``*``; a last ``#`` becomes ``>`` and, since ``a/#`` matches ``a`` as well,
    also the subject of its parent (``#`` alone is ``<prefix>.>``, every topic). One rule of MQTT
    cannot be said in NATS: a filter that starts with a wildcard does not match a topic that
    starts with ``$``. Its subjects do match those topics' subjects, and the receiving node's own
    topic tree leaves them out.

    A shared subscription ``$share/{group}/{filter}`` is mapped from its ``filter`` (and
    :func:`queue_group`); raises :class:`ValueError` for it and for an ill-formed filter.
    """
    if topic_filter.startswith(SHARED_SUBSCRIPTION_PREFIX):
        raise ValueError(f"{topic_filter!r} is a shared subscription: map the filter after its group")
    try:
        validate_topic_filter(topic_filter)
    except MalformedPacket as error:
        raise ValueError(str(error)) from None
    levels = topic_filter.split("/")
    every_level_below = levels[-1] == "#"
    if every_level_below:
        levels.pop()
    subject = ".".join(
        [prefix, *(SINGLE_LEVEL_WILDCARD if level == "+" else level_token(level) for level in levels)]
    )
    if not every_level_below:
        return (subject,)
    if not levels:
        return (f"{prefix}.{MULTI_LEVEL_WILDCARD}",)
    return (subject, f"{subject}.{MULTI_LEVEL_WILDCARD}")
