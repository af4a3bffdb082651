"""Limits on what one client can make the broker hold (docs/configuration.md, "Limits").

Queues are bounded in messages and bytes (``Session.queue``, ``Session.hold``), the retained
messages in count and bytes, a client's subscriptions in number, topics and filters in length
and levels. The checks here are pure functions of the settings and of what is held; the packet
handlers call them and answer with the reason code the protocol has for each refusal.
"""

from __future__ import annotations

from certmq.broker.messages import Message
from certmq.broker.retained import RetainedStore
from certmq.config import MqttSection

# A character is at most 4 bytes in UTF-8.
_MAX_UTF8_BYTES_PER_CHARACTER = 4


def longest_unchecked_topic(settings: MqttSection) -> int:
    """Topics and filters up to this many characters are within both topic limits without a
    look at them (n characters have at most n + 1 levels and 4 n bytes), so that the common
    short topic costs one comparison."""
    return min(settings.max_topic_length // _MAX_UTF8_BYTES_PER_CHARACTER, settings.max_topic_levels - 1)


def topic_within_limits(topic: str, settings: MqttSection) -> bool:
    """Whether a topic name or filter (a shared subscription's included) is within
    ``max_topic_length`` bytes and ``max_topic_levels`` levels."""
    return topic.count("/") < settings.max_topic_levels and len(topic.encode()) <= settings.max_topic_length


def retained_fits(store: RetainedStore, message: Message, settings: MqttSection) -> bool:
    """Whether storing retained ``message`` keeps the store within ``max_retained_messages``
    and ``max_retained_bytes``. Replacing a topic's message with one no larger always fits."""
    growth, adds_message = store.growth(message)
    if adds_message and len(store) >= settings.max_retained_messages:
        return False
    return growth <= 0 or store.size + growth <= settings.max_retained_bytes
