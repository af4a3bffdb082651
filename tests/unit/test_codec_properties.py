"""Property-based tests of the codec: round trips of every packet type in both versions,
arbitrary bytes never escaping as anything but an MQTTError, and streams split anywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certmq.mqtt.decoding import PacketDecoder
from certmq.mqtt.encoding import encode
from certmq.mqtt.errors import MQTTError
from certmq.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from certmq.mqtt.properties import ALLOWED_IN, PROPERTY_TYPES, WILL, PropertyId, PropertyType
from certmq.mqtt.reason_codes import VALID_REASON_CODES

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strings: any character MQTT allows in a UTF-8 string (no surrogates, no U+0000).
_characters = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
texts = st.text(_characters, max_size=12)
_level_characters = st.characters(exclude_categories=["Cs"], exclude_characters="\x00/+#")
_levels = st.text(_level_characters, max_size=6)
topic_names = st.lists(_levels, min_size=1, max_size=4).map("/".join).filter(bool)
packet_ids = st.integers(1, 0xFFFF)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(_levels, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    topic_filter = "/".join(levels) or "#"
    if levels[0] == "$share":
        # Only a shared subscription may start with $share (drawn below).
        topic_filter = "x" + topic_filter
    if draw(st.integers(0, 4)) == 0:
        group = draw(st.text(_level_characters, min_size=1, max_size=5))
        topic_filter = f"$share/{group}/{topic_filter}"
    return topic_filter


# Properties ---------------------------------------------------------------------------------

_NON_ZERO = {PropertyId.RECEIVE_MAXIMUM, PropertyId.TOPIC_ALIAS, PropertyId.MAXIMUM_PACKET_SIZE}


def _property_values(identifier: int) -> st.SearchStrategy[Any]:
    property_type = PROPERTY_TYPES[identifier]
    low = 1 if identifier in _NON_ZERO else 0
    if identifier == PropertyId.RESPONSE_TOPIC:
        return topic_names
    if identifier == PropertyId.SUBSCRIPTION_IDENTIFIER:
        return st.lists(st.integers(1, 268_435_455), min_size=1, max_size=3)
    if identifier == PropertyId.USER_PROPERTY:
        return st.lists(st.tuples(texts, texts), min_size=1, max_size=3)
    if property_type == PropertyType.BYTE:
        return st.integers(0, 1)
    if property_type == PropertyType.TWO_BYTE_INTEGER:
        return st.integers(low, 0xFFFF)
    if property_type == PropertyType.FOUR_BYTE_INTEGER:
        return st.integers(low, 0xFFFF_FFFF)
    if property_type == PropertyType.UTF8_STRING:
        return texts
    assert property_type == PropertyType.BINARY
    return st.binary(max_size=12)


@st.composite
def properties_for(draw: st.DrawFn, context: int, *, from_client: bool = False) -> Properties:
    """Valid properties for a packet type (or WILL)."""
    allowed = sorted(identifier for identifier, where in ALLOWED_IN.items() if context in where)
    if context == PacketType.PUBLISH and from_client:
        allowed.remove(PropertyId.SUBSCRIPTION_IDENTIFIER)
    chosen = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=4)) if allowed else []
    properties: Properties = {identifier: draw(_property_values(identifier)) for identifier in chosen}
    if context == PacketType.SUBSCRIBE and PropertyId.SUBSCRIPTION_IDENTIFIER in properties:
        properties[PropertyId.SUBSCRIPTION_IDENTIFIER] = properties[PropertyId.SUBSCRIPTION_IDENTIFIER][:1]
    if PropertyId.AUTHENTICATION_DATA in properties and PropertyId.AUTHENTICATION_METHOD not in properties:
        properties[PropertyId.AUTHENTICATION_METHOD] = draw(texts)
    return properties


def _reason_codes(packet_type: PacketType) -> st.SearchStrategy[int]:
    return st.sampled_from(sorted(VALID_REASON_CODES[packet_type]))


# Packets --------------------------------------------------------------------------------------


@st.composite
def connects(draw: st.DrawFn, level: int) -> Connect:
    v5 = level == 5
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(topic_names),
            draw(st.binary(max_size=20)),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(properties_for(WILL)) if v5 else {},
        )
    username = draw(st.none() | texts)
    # 3.1.1 allows a password only with a user name.
    password = draw(st.none() | st.binary(max_size=10)) if v5 or username is not None else None
    return Connect(
        client_id=draw(texts),
        protocol_version=level,
        protocol_name="MQIsdp" if level == 3 else "MQTT",
        clean_start=draw(st.booleans()),
        keep_alive=draw(st.integers(0, 0xFFFF)),
        username=username,
        password=password,
        will=will,
        properties=draw(properties_for(PacketType.CONNECT)) if v5 else {},
    )


@st.composite
def connacks(draw: st.DrawFn, level: int) -> ConnAck:
    if level < 5:
        code = draw(st.integers(0, 5))
        return ConnAck(code, draw(st.booleans()) if code == 0 else False)
    code = draw(_reason_codes(PacketType.CONNACK))
    return ConnAck(
        code, draw(st.booleans()) if code == 0 else False, draw(properties_for(PacketType.CONNACK))
    )


@st.composite
def publishes(draw: st.DrawFn, level: int, *, from_client: bool) -> Publish:
    qos = draw(st.integers(0, 2))
    properties = draw(properties_for(PacketType.PUBLISH, from_client=from_client)) if level == 5 else {}
    topic = draw(topic_names)
    if PropertyId.TOPIC_ALIAS in properties and draw(st.booleans()):
        topic = ""
    return Publish(
        topic,
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(packet_ids) if qos else None,
        properties,
    )


_ACKNOWLEDGEMENTS: list[type[PubAck] | type[PubRec] | type[PubRel] | type[PubComp]] = [
    PubAck,
    PubRec,
    PubRel,
    PubComp,
]


@st.composite
def acknowledgements(draw: st.DrawFn, level: int) -> PubAck | PubRec | PubRel | PubComp:
    packet_class = draw(st.sampled_from(_ACKNOWLEDGEMENTS))
    if level < 5:
        return packet_class(draw(packet_ids))
    packet_type = packet_class.packet_type
    return packet_class(draw(packet_ids), draw(_reason_codes(packet_type)), draw(properties_for(packet_type)))


@st.composite
def subscribes(draw: st.DrawFn, level: int) -> Subscribe:
    subscriptions = []
    for topic_filter in draw(st.lists(topic_filters(), min_size=1, max_size=4)):
        if level < 5:
            subscriptions.append(Subscription(topic_filter, draw(st.integers(0, 2))))
            continue
        shared = topic_filter.startswith("$share/")
        subscriptions.append(
            Subscription(
                topic_filter,
                draw(st.integers(0, 2)),
                False if shared else draw(st.booleans()),
                draw(st.booleans()),
                draw(st.integers(0, 2)),
            )
        )
    properties = draw(properties_for(PacketType.SUBSCRIBE)) if level == 5 else {}
    return Subscribe(draw(packet_ids), subscriptions, properties)


@st.composite
def subacks(draw: st.DrawFn, level: int) -> SubAck:
    if level < 5:
        return SubAck(
            draw(packet_ids), draw(st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=4))
        )
    return SubAck(
        draw(packet_ids),
        draw(st.lists(_reason_codes(PacketType.SUBACK), min_size=1, max_size=4)),
        draw(properties_for(PacketType.SUBACK)),
    )


@st.composite
def unsubscribes(draw: st.DrawFn, level: int) -> Unsubscribe:
    return Unsubscribe(
        draw(packet_ids),
        draw(st.lists(topic_filters(), min_size=1, max_size=4)),
        draw(properties_for(PacketType.UNSUBSCRIBE)) if level == 5 else {},
    )


@st.composite
def unsubacks(draw: st.DrawFn, level: int) -> UnsubAck:
    if level < 5:
        return UnsubAck(draw(packet_ids))
    return UnsubAck(
        draw(packet_ids),
        draw(st.lists(_reason_codes(PacketType.UNSUBACK), min_size=1, max_size=4)),
        draw(properties_for(PacketType.UNSUBACK)),
    )


@st.composite
def disconnects(draw: st.DrawFn, level: int) -> Disconnect:
    if level < 5:
        return Disconnect()
    return Disconnect(draw(_reason_codes(PacketType.DISCONNECT)), draw(properties_for(PacketType.DISCONNECT)))


@st.composite
def auths(draw: st.DrawFn) -> Auth:
    if draw(st.booleans()):
        return Auth()
    properties = draw(properties_for(PacketType.AUTH))
    properties[PropertyId.AUTHENTICATION_METHOD] = draw(texts)
    return Auth(draw(_reason_codes(PacketType.AUTH)), properties)


def packets_from_client(level: int) -> st.SearchStrategy[Packet]:
    choices: list[st.SearchStrategy[Any]] = [
        publishes(level, from_client=True),
        acknowledgements(level),
        subscribes(level),
        unsubscribes(level),
        st.just(PingReq()),
        disconnects(level),
    ]
    if level == 5:
        choices.append(auths())
    return st.one_of(choices)


def packets_from_server(level: int) -> st.SearchStrategy[Packet]:
    choices: list[st.SearchStrategy[Any]] = [
        connacks(level),
        publishes(level, from_client=False),
        acknowledgements(level),
        subacks(level),
        unsubacks(level),
        st.just(PingResp()),
        disconnects(level),
    ]
    if level == 5:
        choices.append(auths())
    return st.one_of(choices)


levels = st.sampled_from([3, 4, 5])


@st.composite
def client_streams(draw: st.DrawFn) -> tuple[int, list[Packet]]:
    """What a client sends: a CONNECT, then anything a client may send."""
    level = draw(levels)
    return level, [draw(connects(level)), *draw(st.lists(packets_from_client(level), max_size=6))]


@st.composite
def server_streams(draw: st.DrawFn) -> tuple[int, list[Packet]]:
    level = draw(levels)
    return level, draw(st.lists(packets_from_server(level), min_size=1, max_size=6))


# Round trips ------------------------------------------------------------------------------


@SETTINGS
@given(client_streams())
def test_client_packets_round_trip(stream: tuple[int, list[Packet]]) -> None:
    level, packets = stream
    decoder = PacketDecoder()
    assert decoder.feed(b"".join(encode(packet, level) for packet in packets)) == packets
    assert decoder.protocol_version == level


@SETTINGS
@given(server_streams())
def test_server_packets_round_trip(stream: tuple[int, list[Packet]]) -> None:
    level, packets = stream
    decoder = PacketDecoder(protocol_version=level)
    assert decoder.feed(b"".join(encode(packet, level) for packet in packets)) == packets


@SETTINGS
@given(client_streams(), st.data())
def test_split_stream_decodes_the_same_packets(stream: tuple[int, list[Packet]], data: st.DataObject) -> None:
    level, packets = stream
    encoded = b"".join(encode(packet, level) for packet in packets)
    assert fed_in_pieces(PacketDecoder().feed, encoded, data, 12) == packets


def fed_in_pieces(
    feed: Callable[[bytes], list[Any]], stream: bytes, data: st.DataObject, pieces: int
) -> list[Any]:
    """What ``feed`` returns, all together, for ``stream`` cut at up to ``pieces`` drawn places."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=pieces)))
    decoded: list[Any] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        decoded += feed(stream[previous:cut])
        previous = cut
    return decoded


# Arbitrary input ----------------------------------------------------------------------------


def _feed_in_chunks(decoder: PacketDecoder, data: bytes, chunk_size: int) -> None:
    try:
        for index in range(0, len(data), chunk_size):
            decoder.feed(data[index : index + chunk_size])
    except MQTTError:
        pass


@SETTINGS
@given(st.binary(max_size=300), st.integers(1, 64))
def test_random_bytes_to_a_server(data: bytes, chunk_size: int) -> None:
    _feed_in_chunks(PacketDecoder(), data, chunk_size)


@SETTINGS
@given(levels, st.binary(max_size=300), st.integers(1, 64))
def test_random_bytes_after_connect(level: int, data: bytes, chunk_size: int) -> None:
    decoder = PacketDecoder()
    decoder.feed(encode(Connect("c", protocol_version=level), level))
    _feed_in_chunks(decoder, data, chunk_size)


@SETTINGS
@given(st.binary(max_size=300), st.integers(1, 64))
def test_random_bytes_to_a_5_client(data: bytes, chunk_size: int) -> None:
    _feed_in_chunks(PacketDecoder(protocol_version=5), data, chunk_size)


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[bool, int, bytes]:
    """Valid encodings with a few bytes changed, inserted or removed: close enough to valid
    packets to reach the checks deep inside each decoder."""
    from_client = draw(st.booleans())
    level, packets = draw(client_streams() if from_client else server_streams())
    data = bytearray(b"".join(encode(packet, level) for packet in packets))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "replace" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data.insert(position, draw(st.integers(0, 255)))
        elif data:
            del data[position]
    return from_client, level, bytes(data)


@SETTINGS
@given(mutated_streams(), st.integers(1, 64))
def test_mutated_packets_raise_only_mqtt_errors(stream: tuple[bool, int, bytes], chunk_size: int) -> None:
    from_client, level, data = stream
    decoder = PacketDecoder() if from_client else PacketDecoder(protocol_version=level)
    _feed_in_chunks(decoder, data, chunk_size)


@st.composite
def framed_random_bodies(draw: st.DrawFn) -> bytes:
    """Packets with a correct fixed header around a random body, so that every packet
    type's decoder sees arbitrary bodies of every short length."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        body = draw(st.one_of(st.binary(max_size=3), st.binary(max_size=40)))
        first_byte = draw(st.one_of(_VALID_FIRST_BYTES, st.integers(0, 255)))
        parts.append(bytes((first_byte, len(body))) + body)
    return b"".join(parts)


# Fixed-header bytes with valid flags, so that most generated packets reach their body decoder.
_VALID_FIRST_BYTES = st.sampled_from(
    [
        *(0x10, 0x20, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0),
        *(0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x3A, 0x3B, 0x3C, 0x3D),  # PUBLISH with valid QoS and DUP
    ]
)


@SETTINGS
@given(levels, framed_random_bodies())
def test_framed_random_bodies_after_connect(level: int, data: bytes) -> None:
    decoder = PacketDecoder()
    decoder.feed(encode(Connect("c", protocol_version=level), level))
    _feed_in_chunks(decoder, data, len(data))


@SETTINGS
@given(levels, framed_random_bodies())
def test_framed_random_bodies_to_a_client(level: int, data: bytes) -> None:
    _feed_in_chunks(PacketDecoder(protocol_version=level), data, len(data))
