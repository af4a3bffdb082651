"""The codec against hand-written bytes: one vector per packet type and version, then one
test per rule the specifications make about malformed packets and protocol errors."""

from __future__ import annotations

import pytest

from certmq.mqtt.decoding import PacketDecoder
from certmq.mqtt.encoding import encode
from certmq.mqtt.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
from certmq.mqtt.fields import MAXIMUM_PACKET_SIZE
from certmq.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
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
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.reason_codes import ReasonCode

CONNECT_3_1_1 = bytes.fromhex("100f00044d5154540402003c0003636c69")  # client id "cli", clean, keep alive 60
CONNECT_5 = bytes.fromhex("101000044d5154540502003c000003636c69")  # same, level 5, no properties


def decode_one(data: bytes, protocol_version: int) -> Packet:
    """Decode exactly one packet with a decoder already speaking ``protocol_version``."""
    (packet,) = PacketDecoder(protocol_version=protocol_version).feed(data)
    return packet


def decode_from_client(data: bytes, protocol_version: int) -> list[Packet]:
    """Decode packets on the server side, after a CONNECT of ``protocol_version``."""
    decoder = PacketDecoder()
    decoder.feed(CONNECT_5 if protocol_version == 5 else CONNECT_3_1_1)
    return decoder.feed(data)


def assert_vector(packet: Packet, data: bytes, protocol_version: int) -> None:
    assert encode(packet, protocol_version) == data
    assert decode_one(data, protocol_version) == packet


# --------------------------------------------------------------------------------------
# Byte vectors


def test_connect_3_1_1_minimal() -> None:
    decoder = PacketDecoder()
    assert decoder.feed(CONNECT_3_1_1) == [Connect("cli", keep_alive=60)]
    assert decoder.protocol_version == 4
    assert encode(Connect("cli", keep_alive=60), 4) == CONNECT_3_1_1


def test_connect_3_1_mqisdp() -> None:
    data = bytes.fromhex("100f00064d514973647003020000000178")
    decoder = PacketDecoder()
    expected = Connect("x", protocol_version=3, protocol_name="MQIsdp", keep_alive=0)
    assert decoder.feed(data) == [expected]
    assert decoder.protocol_version == 3
    assert encode(Connect("x", protocol_version=3), 3) == data


def test_connect_3_1_1_full() -> None:
    packet = Connect(
        "id",
        clean_start=False,
        keep_alive=10,
        username="u",
        password=b"pw",
        will=Will("w", b"bye", qos=2, retain=True),
    )
    data = bytes.fromhex(
        "10"
        "1d"
        "00044d515454"  # "MQTT"
        "04"  # level
        "f4"  # user name, password, will retain, will QoS 2, will flag; not clean
        "000a"
        "00026964"  # "id"
        "000177"  # will topic "w"
        "0003627965"  # will payload "bye"
        "000175"  # "u"
        "00027077"  # b"pw"
    )
    assert encode(packet, 4) == data
    assert PacketDecoder().feed(data) == [packet]


def test_connect_5_with_properties_and_will_properties() -> None:
    packet = Connect(
        "c",
        protocol_version=5,
        keep_alive=0,
        will=Will("t", b"", properties={PropertyId.WILL_DELAY_INTERVAL: 7}),
        properties={
            PropertyId.SESSION_EXPIRY_INTERVAL: 3600,
            PropertyId.USER_PROPERTY: [("k", "v"), ("k", "w")],
        },
    )
    data = bytes.fromhex(
        "10"
        "2c"
        "00044d515454"
        "05"
        "06"  # will flag, clean start
        "0000"
        "13"  # property length 19
        "1100000e10"  # session expiry 3600
        "2600016b000176"  # user property k=v
        "2600016b000177"  # user property k=w
        "000163"  # "c"
        "05"  # will property length
        "1800000007"  # will delay 7
        "000174"  # will topic "t"
        "0000"  # empty will payload
    )
    assert encode(packet, 5) == data
    decoder = PacketDecoder()
    assert decoder.feed(data) == [packet]
    assert decoder.protocol_version == 5


def test_connack() -> None:
    assert_vector(ConnAck(0, session_present=True), b"\x20\x02\x01\x00", 4)
    assert_vector(ConnAck(5), b"\x20\x02\x00\x05", 4)
    assert_vector(ConnAck(0, True), b"\x20\x03\x01\x00\x00", 5)
    assert_vector(
        ConnAck(0x87, False, {PropertyId.REASON_STRING: "no"}), bytes.fromhex("2008008705 1f00026e6f"), 5
    )
    assert_vector(
        ConnAck(0, False, {PropertyId.MAXIMUM_QOS: 1, PropertyId.RETAIN_AVAILABLE: 0}),
        bytes.fromhex("200700000424012500"),
        5,
    )


def test_publish_qos0() -> None:
    assert_vector(Publish("a/b", b"hi"), bytes.fromhex("3007 0003612f62 6869"), 4)
    assert_vector(Publish("a/b", b"hi"), bytes.fromhex("3008 0003612f62 00 6869"), 5)


def test_publish_qos1_retain_dup() -> None:
    packet = Publish("t", b"", qos=1, retain=True, dup=True, packet_id=0x1234)
    assert_vector(packet, bytes.fromhex("3b05 000174 1234"), 4)
    assert_vector(packet, bytes.fromhex("3b06 000174 1234 00"), 5)


def test_publish_qos2_with_properties() -> None:
    packet = Publish(
        "t",
        b"\x00\xff",
        qos=2,
        packet_id=1,
        properties={
            PropertyId.PAYLOAD_FORMAT_INDICATOR: 0,
            PropertyId.MESSAGE_EXPIRY_INTERVAL: 30,
            PropertyId.RESPONSE_TOPIC: "r",
            PropertyId.CORRELATION_DATA: b"\x01",
            PropertyId.SUBSCRIPTION_IDENTIFIER: [1, 300],
        },
    )
    data = bytes.fromhex(
        "341c"
        "000174"
        "0001"
        "14"  # property length 20
        "0100"
        "020000001e"
        "08000172"
        "09000101"
        "0b01"
        "0bac02"  # 300 as a Variable Byte Integer
        "00ff"
    )
    assert_vector(packet, data, 5)


def test_publish_empty_topic_with_topic_alias() -> None:
    packet = Publish("", b"x", properties={PropertyId.TOPIC_ALIAS: 3})
    data = bytes.fromhex("3007 0000 03 230003 78")
    assert_vector(packet, data, 5)
    assert decode_from_client(data, 5) == [packet]


def test_publish_large_payload_uses_multi_byte_remaining_length() -> None:
    payload = bytes(range(256)) * 1000
    packet = Publish("big", payload, qos=1, packet_id=9)
    data = encode(packet, 4)
    remaining_length = 5 + 2 + len(payload)
    assert data[:4] == bytes(
        (0x32, remaining_length & 0x7F | 0x80, (remaining_length >> 7) & 0x7F | 0x80, remaining_length >> 14)
    )
    assert decode_one(data, 4) == packet


@pytest.mark.parametrize(
    ("packet_class", "first_byte"), [(PubAck, 0x40), (PubRec, 0x50), (PubRel, 0x62), (PubComp, 0x70)]
)
def test_publish_acknowledgements(packet_class: type[PubAck], first_byte: int) -> None:
    assert_vector(packet_class(0x0102), bytes((first_byte, 2, 1, 2)), 4)
    # 5.0 short forms: no reason code when it is 0 and there are no properties...
    assert_vector(packet_class(0x0102), bytes((first_byte, 2, 1, 2)), 5)
    reason = 0x92 if first_byte in (0x62, 0x70) else 0x10
    # ...and no property length when there are no properties.
    assert_vector(packet_class(0x0102, reason), bytes((first_byte, 3, 1, 2, reason)), 5)
    assert_vector(
        packet_class(7, reason, {PropertyId.REASON_STRING: "x"}),
        bytes((first_byte, 8, 0, 7, reason, 4, 0x1F, 0, 1, ord("x"))),
        5,
    )
    # The long form of a success without properties decodes too.
    assert decode_one(bytes((first_byte, 4, 0, 7, 0, 0)), 5) == packet_class(7)


def test_subscribe() -> None:
    packet = Subscribe(10, [Subscription("a/+", 1), Subscription("#", 2)])
    data = bytes.fromhex("820c 000a 0003612f2b 01 000123 02")
    assert encode(packet, 4) == data
    assert decode_from_client(data, 4) == [packet]

    packet = Subscribe(
        10,
        [Subscription("a", 2, no_local=True, retain_as_published=True, retain_handling=2), Subscription("b")],
        {PropertyId.SUBSCRIPTION_IDENTIFIER: [268_435_455]},
    )
    data = bytes.fromhex("8210 000a 05 0bffffff7f 000161 2e 000162 00")
    assert encode(packet, 5) == data
    assert decode_from_client(data, 5) == [packet]


def test_suback() -> None:
    assert_vector(SubAck(10, [0, 1, 2, 0x80]), bytes.fromhex("9006 000a 00010280"), 4)
    assert_vector(SubAck(10, [0, 0x87, 0xA2]), bytes.fromhex("9006 000a 00 0087a2"), 5)
    # A 5.0 failure code sent to a 3.1.1 client becomes the one failure code 3.1.1 knows.
    assert encode(SubAck(10, [0x87]), 4) == bytes.fromhex("9003 000a 80")


def test_unsubscribe() -> None:
    packet = Unsubscribe(3, ["a/b", "$share/g/c"])
    data_3_1_1 = bytes.fromhex("a213 0003 0003612f62 000a2473686172652f672f63")
    assert encode(packet, 4) == data_3_1_1
    assert decode_from_client(data_3_1_1, 4) == [packet]
    data_5 = bytes.fromhex("a214 0003 00 0003612f62 000a2473686172652f672f63")
    assert encode(packet, 5) == data_5
    assert decode_from_client(data_5, 5) == [packet]


def test_unsuback() -> None:
    assert_vector(UnsubAck(3), b"\xb0\x02\x00\x03", 4)
    assert encode(UnsubAck(3, [0x11]), 4) == b"\xb0\x02\x00\x03"
    assert_vector(UnsubAck(3, [0x00, 0x11]), b"\xb0\x05\x00\x03\x00\x00\x11", 5)


def test_ping() -> None:
    for version in (4, 5):
        assert_vector(PingReq(), b"\xc0\x00", version)
        assert_vector(PingResp(), b"\xd0\x00", version)


def test_disconnect() -> None:
    assert_vector(Disconnect(), b"\xe0\x00", 4)
    assert_vector(Disconnect(), b"\xe0\x00", 5)
    assert_vector(Disconnect(0x04), b"\xe0\x01\x04", 5)
    assert_vector(
        Disconnect(0x8B, {PropertyId.SESSION_EXPIRY_INTERVAL: 0}), bytes.fromhex("e007 8b 05 1100000000"), 5
    )
    assert decode_one(b"\xe0\x02\x00\x00", 5) == Disconnect()


def test_auth() -> None:
    assert_vector(Auth(), b"\xf0\x00", 5)
    packet = Auth(0x18, {PropertyId.AUTHENTICATION_METHOD: "m", PropertyId.AUTHENTICATION_DATA: b"\x01"})
    assert_vector(packet, bytes.fromhex("f00a 18 08 1500016d 16000101"), 5)
    with pytest.raises(ValueError):
        encode(Auth(), 4)


# --------------------------------------------------------------------------------------
# Streaming


def test_partial_packets_are_kept_across_feeds() -> None:
    data = CONNECT_5 + encode(Publish("a", b"x" * 1000, qos=1, packet_id=1), 5) + b"\xc0\x00"
    decoder = PacketDecoder()
    packets: list[Packet] = []
    for index in range(0, len(data), 7):
        packets += decoder.feed(data[index : index + 7])
    assert [type(packet) for packet in packets] == [Connect, Publish, PingReq]


def test_large_payload_in_many_chunks() -> None:
    payload = b"z" * 2_000_000
    data = encode(Publish("big", payload), 4)
    decoder = PacketDecoder(protocol_version=4)
    packets: list[Packet] = []
    for index in range(0, len(data), 1460):
        packets += decoder.feed(data[index : index + 1460])
    assert packets == [Publish("big", payload)]


def test_feed_accepts_bytearray_and_memoryview() -> None:
    data = encode(Publish("a", b"b"), 4)
    decoder = PacketDecoder(protocol_version=4)
    assert decoder.feed(bytearray(data)) == [Publish("a", b"b")]
    assert decoder.feed(memoryview(data)) == [Publish("a", b"b")]
    assert decoder.feed(b"") == []


def test_error_carries_the_good_packets_before_it_and_kills_the_decoder() -> None:
    decoder = PacketDecoder(protocol_version=4)
    good = encode(Publish("a", b"1"), 4) + b"\xc0\x00"
    with pytest.raises(MalformedPacket) as raised:
        decoder.feed(good + b"\xc0\x01\x00")
    assert raised.value.packets == [Publish("a", b"1"), PingReq()]
    with pytest.raises(MalformedPacket) as raised_again:
        decoder.feed(b"\xc0\x00")
    assert raised_again.value.packets == []


# --------------------------------------------------------------------------------------
# Fixed header


def test_packet_too_large_is_detected_from_the_header() -> None:
    decoder = PacketDecoder(max_packet_size=100, protocol_version=4)
    # Only the fixed header of a 1000-byte PUBLISH has arrived.
    with pytest.raises(PacketTooLarge) as raised:
        decoder.feed(b"\x30\xe5\x07")
    assert raised.value.reason_code == ReasonCode.PACKET_TOO_LARGE


def test_packet_size_counts_the_fixed_header() -> None:
    packet = encode(Publish("a", b"x" * 10), 4)
    assert PacketDecoder(max_packet_size=len(packet), protocol_version=4).feed(packet)
    with pytest.raises(PacketTooLarge):
        PacketDecoder(max_packet_size=len(packet) - 1, protocol_version=4).feed(packet)


def test_default_maximum_packet_size_allows_everything_the_wire_format_can_carry() -> None:
    assert MAXIMUM_PACKET_SIZE == 268_435_460
    assert PacketDecoder(protocol_version=4).feed(b"\x30\xff\xff\xff\x7f") == []


def test_remaining_length_over_four_bytes() -> None:
    with pytest.raises(MalformedPacket):
        PacketDecoder(protocol_version=4).feed(b"\x30\xff\xff\xff\xff\x01")


def test_remaining_length_not_minimal_in_5() -> None:
    with pytest.raises(MalformedPacket):
        PacketDecoder(protocol_version=5).feed(b"\xc0\x80\x00")
    # 3.1.1 does not forbid it.
    assert PacketDecoder(protocol_version=4).feed(b"\xc0\x80\x00") == [PingReq()]


def test_connect_5_with_non_minimal_remaining_length() -> None:
    body = CONNECT_5[2:]
    data = bytes((0x10, len(body) | 0x80, 0)) + body
    with pytest.raises(MalformedPacket):
        PacketDecoder().feed(data)
    body = CONNECT_3_1_1[2:]
    data = bytes((0x10, len(body) | 0x80, 0)) + body
    assert PacketDecoder().feed(data) == [Connect("cli", keep_alive=60)]


# --------------------------------------------------------------------------------------
# Connection start


def test_first_packet_must_be_connect() -> None:
    with pytest.raises(ProtocolError) as raised:
        PacketDecoder().feed(b"\xc0\x00")
    assert raised.value.reason_code == ReasonCode.PROTOCOL_ERROR


def test_second_connect_is_a_protocol_error() -> None:
    decoder = PacketDecoder()
    decoder.feed(CONNECT_3_1_1)
    with pytest.raises(ProtocolError):
        decoder.feed(CONNECT_3_1_1)


@pytest.mark.parametrize("level", [0, 1, 2, 3, 6, 0x84, 255])
def test_unsupported_protocol_level(level: int) -> None:
    data = bytearray(CONNECT_3_1_1)
    data[8] = level
    decoder = PacketDecoder()
    with pytest.raises(UnsupportedProtocolVersion) as raised:
        decoder.feed(bytes(data))
    assert raised.value.protocol_version == level
    assert raised.value.reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION
    assert decoder.protocol_version is None


def test_mqisdp_with_level_4_is_unsupported() -> None:
    data = bytes.fromhex("100f00064d514973647004020000000178")
    with pytest.raises(UnsupportedProtocolVersion):
        PacketDecoder().feed(data)


def test_wrong_protocol_name() -> None:
    data = bytes.fromhex("100f00044d5154580402003c0003636c69")  # "MQTX"
    with pytest.raises(ProtocolError):
        PacketDecoder().feed(data)


def test_protocol_version_is_known_even_when_connect_is_malformed() -> None:
    decoder = PacketDecoder()
    data = bytearray(CONNECT_5)
    data[9] |= 0x01  # reserved connect flag
    with pytest.raises(MalformedPacket):
        decoder.feed(bytes(data))
    assert decoder.protocol_version == 5


@pytest.mark.parametrize("first_byte", [0x20, 0x90, 0xB0, 0xD0])
def test_client_may_not_send_server_packets(first_byte: int) -> None:
    data = {
        0x20: b"\x20\x02\x00\x00",
        0x90: b"\x90\x03\x00\x01\x00",
        0xB0: b"\xb0\x02\x00\x01",
        0xD0: b"\xd0\x00",
    }
    with pytest.raises(ProtocolError):
        decode_from_client(data[first_byte], 4)


def test_errors_are_mqtt_errors() -> None:
    for error in (MalformedPacket, ProtocolError, PacketTooLarge, UnsupportedProtocolVersion):
        assert issubclass(error, MQTTError)


# --------------------------------------------------------------------------------------
# Malformed packets and protocol errors, one rule at a time.
#
# ``frame`` writes the fixed header so that each case shows only the body it is about.

MALFORMED = ReasonCode.MALFORMED_PACKET
PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR


def frame(first_byte: int, body_hex: str) -> bytes:
    body = bytes.fromhex(body_hex)
    assert len(body) < 128
    return bytes((first_byte, len(body))) + body


def string_hex(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return f"{len(raw):04x}{raw.hex()}"


def connect_body(
    *, level: int = 5, flags: int = 0x02, properties: str = "00", payload: str = string_hex("c")
) -> str:
    """A CONNECT body; ``properties`` (with its length) is left out below level 5."""
    return (
        string_hex("MQTT" if level != 3 else "MQIsdp")
        + f"{level:02x}{flags:02x}003c"
        + (properties if level >= 5 else "")
        + payload
    )


def rejected_from_client(data: bytes, protocol_version: int) -> MQTTError:
    with pytest.raises(MQTTError) as raised:
        decode_from_client(data, protocol_version)
    return raised.value


def rejected_by_client(data: bytes, protocol_version: int) -> MQTTError:
    with pytest.raises(MQTTError) as raised:
        PacketDecoder(protocol_version=protocol_version).feed(data)
    return raised.value


def rejected_connect(body_hex: str) -> MQTTError:
    with pytest.raises(MQTTError) as raised:
        PacketDecoder().feed(frame(0x10, body_hex))
    return raised.value


def assert_error(error: MQTTError, error_type: type[MQTTError], reason_code: int) -> None:
    assert type(error) is error_type, error
    assert error.reason_code == reason_code
    assert str(error)


# Fixed header ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "server_side"),
    [
        (frame(0x11, connect_body()), True),  # CONNECT (rebuilt for each version below)
        (frame(0x28, "0000"), False),  # CONNACK
        (frame(0x42, "0001"), False),  # PUBACK
        (frame(0x51, "0001"), False),  # PUBREC
        (frame(0x60, "0001"), False),  # PUBREL must be 0b0010
        (frame(0x72, "0001"), False),  # PUBCOMP
        (frame(0x80, "0001" + string_hex("a") + "00"), True),  # SUBSCRIBE must be 0b0010
        (frame(0x83, "0001" + string_hex("a") + "00"), True),
        (frame(0x92, "000100"), False),  # SUBACK
        (frame(0xA0, "0001" + string_hex("a")), True),  # UNSUBSCRIBE must be 0b0010
        (frame(0xB4, "0001"), False),  # UNSUBACK
        (frame(0xC8, ""), False),  # PINGREQ
        (frame(0xD1, ""), False),  # PINGRESP
        (frame(0xE2, ""), False),  # DISCONNECT
    ],
)
@pytest.mark.parametrize("version", [4, 5])
def test_reserved_fixed_header_flags(data: bytes, server_side: bool, version: int) -> None:
    if data[0] >> 4 == 1:
        with pytest.raises(MQTTError) as raised:
            PacketDecoder().feed(frame(0x11, connect_body(level=version)))
        error = raised.value
    elif server_side:
        error = rejected_from_client(data, version)
    else:
        error = rejected_by_client(data, version)
    assert_error(error, MalformedPacket, MALFORMED)


def test_reserved_flags_of_auth() -> None:
    assert_error(rejected_by_client(frame(0xF1, ""), 5), MalformedPacket, MALFORMED)


def test_packet_type_0_is_reserved() -> None:
    assert_error(rejected_by_client(b"\x00\x00", 5), MalformedPacket, MALFORMED)
    assert_error(rejected_from_client(b"\x00\x00", 4), MalformedPacket, MALFORMED)


def test_auth_does_not_exist_in_3_1_1() -> None:
    assert_error(rejected_from_client(b"\xf0\x00", 4), MalformedPacket, MALFORMED)


def test_publish_qos_3() -> None:
    data = frame(0x36, string_hex("t") + "0001")
    assert_error(rejected_from_client(data, 4), MalformedPacket, MALFORMED)


def test_publish_dup_with_qos_0() -> None:
    data = frame(0x38, string_hex("t") + "00")
    assert_error(rejected_from_client(data, 5), MalformedPacket, MALFORMED)


# Packet identifiers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "server_side"),
    [
        (frame(0x32, string_hex("t") + "0000"), True),  # PUBLISH QoS 1
        (frame(0x34, string_hex("t") + "0000"), True),  # PUBLISH QoS 2
        (frame(0x40, "0000"), False),
        (frame(0x50, "0000"), False),
        (frame(0x62, "0000"), False),
        (frame(0x70, "0000"), False),
        (frame(0x82, "0000" + string_hex("a") + "00"), True),
        (frame(0x90, "000000"), False),
        (frame(0xA2, "0000" + string_hex("a")), True),
        (frame(0xB0, "0000"), False),
    ],
)
def test_packet_identifier_0(data: bytes, server_side: bool) -> None:
    # 3.1.1 bodies: the packet id comes before anything version-specific.
    error = rejected_from_client(data, 4) if server_side else rejected_by_client(data, 4)
    assert_error(error, ProtocolError, PROTOCOL_ERROR)


def test_publish_acknowledgement_5_with_packet_identifier_0_in_long_form() -> None:
    assert_error(rejected_by_client(frame(0x40, "000010"), 5), ProtocolError, PROTOCOL_ERROR)


# Truncated packets and trailing bytes -----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (frame(0x30, "00"), 4),  # topic length cut short
        (frame(0x30, "0005616263"), 4),  # topic longer than the packet
        (frame(0x32, string_hex("t") + "00"), 4),  # packet id cut short
        (frame(0x30, string_hex("t")), 5),  # no property length
        (frame(0x30, string_hex("t") + "05 0200"), 5),  # property length past the end
        (frame(0x30, string_hex("t") + "02 0200"), 5),  # four-byte property cut by the property length
        (frame(0x30, string_hex("t") + "03 0800ff"), 5),  # string property cut by the property length
        (frame(0x30, string_hex("t") + "80"), 5),  # property length cut short
        (frame(0x40, "00"), 4),
        (frame(0x40, "00"), 5),
        (frame(0x40, "0001 00 05 1f0001"), 5),
        (frame(0x82, "0001" + string_hex("a")), 4),  # subscription options missing
        (frame(0x82, "0001 00 0005 61"), 5),
        (frame(0xA2, "0001 00 0005 61"), 5),
        (frame(0x90, "00"), 4),
        (frame(0x20, "00"), 4),
        (frame(0x20, "0000"), 5),  # 5.0 CONNACK needs a property length
        (frame(0xE0, "00 03 1100"), 5),
    ],
)
def test_truncated_fields(data: bytes, version: int) -> None:
    assert_error(rejected_by_client(data, version), MalformedPacket, MALFORMED)


@pytest.mark.parametrize(
    "body",
    [
        connect_body(level=4, payload=""),  # no client id
        connect_body(level=4, payload="0005 6162"),
        connect_body(
            level=5, flags=0x06, payload=string_hex("c") + "00" + string_hex("t")
        ),  # no will payload
        connect_body(level=4, flags=0x82, payload=string_hex("c")),  # user name flag, no user name
        connect_body(level=4, flags=0xC2, payload=string_hex("c") + string_hex("u")),  # no password
        string_hex("MQTT"),  # no level
        string_hex("MQTT") + "04",  # no flags
        string_hex("MQTT") + "0402",  # no keep alive
    ],
)
def test_truncated_connect(body: str) -> None:
    assert_error(rejected_connect(body), MalformedPacket, MALFORMED)


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (frame(0x40, "000100"), 4),
        (frame(0x62, "000100"), 4),
        (frame(0x40, "0001 00 00 00"), 5),
        (frame(0x20, "000000"), 4),
        (frame(0x20, "0000 00 00"), 5),
        (frame(0xB0, "000100"), 4),
        (frame(0xC0, "00"), 4),
        (frame(0xD0, "00"), 5),
        (frame(0xE0, "00"), 4),
        (frame(0xE0, "00 00 00"), 5),
        (frame(0xF0, "18 04 1500016d 00"), 5),
    ],
)
def test_trailing_bytes(data: bytes, version: int) -> None:
    assert_error(rejected_by_client(data, version), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("level", [4, 5])
def test_trailing_bytes_after_connect(level: int) -> None:
    assert_error(rejected_connect(connect_body(level=level) + "00"), MalformedPacket, MALFORMED)


# UTF-8 ------------------------------------------------------------------------------------

ILL_FORMED_UTF8 = [
    b"\xff",  # never valid
    b"\xc0\x80",  # overlong encoding of U+0000
    b"\xe0\x80\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # surrogate U+D800 (MQTT-1.5.4-1)
    b"a\xc3",  # cut in the middle of a character
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"a\x00b",  # U+0000 (MQTT-1.5.4-2)
]


@pytest.mark.parametrize("raw", ILL_FORMED_UTF8)
def test_ill_formed_utf8_topic_name(raw: bytes) -> None:
    data = frame(0x30, string_hex(raw) + "00")
    assert_error(rejected_from_client(data, 5), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("raw", ILL_FORMED_UTF8)
def test_ill_formed_utf8_client_identifier(raw: bytes) -> None:
    assert_error(rejected_connect(connect_body(level=4, payload=string_hex(raw))), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("raw", ILL_FORMED_UTF8)
def test_ill_formed_utf8_topic_filter(raw: bytes) -> None:
    data = frame(0x82, "0001" + string_hex(raw) + "00")
    assert_error(rejected_from_client(data, 4), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("raw", ILL_FORMED_UTF8)
def test_ill_formed_utf8_user_property(raw: bytes) -> None:
    properties = "26" + string_hex("k") + string_hex(raw)
    data = frame(0x30, string_hex("t") + f"{len(properties) // 2:02x}" + properties)
    assert_error(rejected_from_client(data, 5), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("raw", ILL_FORMED_UTF8)
def test_ill_formed_utf8_user_name(raw: bytes) -> None:
    body = connect_body(level=4, flags=0x82, payload=string_hex("c") + string_hex(raw))
    assert_error(rejected_connect(body), MalformedPacket, MALFORMED)


def test_byte_order_mark_is_kept() -> None:
    # MQTT-1.5.4-3: U+FEFF is a character like any other.
    (packet,) = decode_from_client(frame(0x30, string_hex("\ufefft") + "00"), 5)
    assert isinstance(packet, Publish)
    assert packet.topic == "\ufefft"


# Topic names ------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["a/+", "+", "#", "a/#", "a#b"])
@pytest.mark.parametrize("version", [4, 5])
def test_publish_topic_with_wildcard(topic: str, version: int) -> None:
    data = frame(0x30, string_hex(topic) + ("00" if version == 5 else ""))
    assert_error(rejected_from_client(data, version), MalformedPacket, MALFORMED)


def test_publish_empty_topic_in_3_1_1() -> None:
    assert_error(rejected_from_client(frame(0x30, "0000"), 4), MalformedPacket, MALFORMED)


def test_publish_empty_topic_without_topic_alias_in_5() -> None:
    assert_error(rejected_from_client(frame(0x30, "0000 00"), 5), ProtocolError, PROTOCOL_ERROR)


@pytest.mark.parametrize("level", [4, 5])
def test_will_topic_with_wildcard(level: int) -> None:
    will_properties = "00" if level == 5 else ""
    payload = string_hex("c") + will_properties + string_hex("a/#") + string_hex("x")
    assert_error(
        rejected_connect(connect_body(level=level, flags=0x06, payload=payload)), MalformedPacket, MALFORMED
    )


def test_response_topic_with_wildcard() -> None:
    properties = "08" + string_hex("r/+")
    data = frame(0x30, string_hex("t") + f"{len(properties) // 2:02x}" + properties)
    assert_error(rejected_from_client(data, 5), MalformedPacket, MALFORMED)


# Topic filters ----------------------------------------------------------------------------

INVALID_FILTERS = [
    "",
    "a#",
    "a/#/b",
    "#/",
    "a+",
    "+a/b",
    "$share/",
    "$share//a",
    "$share/g",
    "$share/g+/a",
    "$share/g/",
]


@pytest.mark.parametrize("topic_filter", INVALID_FILTERS)
@pytest.mark.parametrize("version", [4, 5])
def test_subscribe_invalid_topic_filter(topic_filter: str, version: int) -> None:
    data = frame(0x82, "0001" + ("00" if version == 5 else "") + string_hex(topic_filter) + "00")
    assert_error(rejected_from_client(data, version), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("topic_filter", INVALID_FILTERS)
@pytest.mark.parametrize("version", [4, 5])
def test_unsubscribe_invalid_topic_filter(topic_filter: str, version: int) -> None:
    data = frame(0xA2, "0001" + ("00" if version == 5 else "") + string_hex(topic_filter))
    assert_error(rejected_from_client(data, version), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("version", [4, 5])
def test_subscribe_without_topic_filter(version: int) -> None:
    data = frame(0x82, "0001" + ("00" if version == 5 else ""))
    assert_error(rejected_from_client(data, version), ProtocolError, PROTOCOL_ERROR)


@pytest.mark.parametrize("version", [4, 5])
def test_unsubscribe_without_topic_filter(version: int) -> None:
    data = frame(0xA2, "0001" + ("00" if version == 5 else ""))
    assert_error(rejected_from_client(data, version), ProtocolError, PROTOCOL_ERROR)


# Subscription options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "options", "error_type"),
    [
        (4, 0x03, MalformedPacket),  # QoS 3
        (4, 0x04, MalformedPacket),  # reserved bits in 3.1.1
        (4, 0x80, MalformedPacket),
        (5, 0x03, ProtocolError),  # QoS 3
        (5, 0x40, MalformedPacket),  # reserved bits 6 and 7
        (5, 0x80, MalformedPacket),
        (5, 0x30, ProtocolError),  # Retain Handling 3
    ],
)
def test_subscription_options(version: int, options: int, error_type: type[MQTTError]) -> None:
    data = frame(0x82, "0001" + ("00" if version == 5 else "") + string_hex("a") + f"{options:02x}")
    error = rejected_from_client(data, version)
    assert_error(error, error_type, MALFORMED if error_type is MalformedPacket else PROTOCOL_ERROR)


def test_no_local_on_shared_subscription() -> None:
    data = frame(0x82, "0001 00" + string_hex("$share/g/a") + "04")
    assert_error(rejected_from_client(data, 5), ProtocolError, PROTOCOL_ERROR)


def test_all_5_subscription_options_decode() -> None:
    data = frame(0x82, "0001 00" + string_hex("a") + "2e" + string_hex("$share/g/b") + "1a")
    (packet,) = decode_from_client(data, 5)
    assert packet == Subscribe(
        1,
        [
            Subscription("a", 2, no_local=True, retain_as_published=True, retain_handling=2),
            Subscription("$share/g/b", 2, no_local=False, retain_as_published=True, retain_handling=1),
        ],
    )


# CONNECT flags ----------------------------------------------------------------------------


@pytest.mark.parametrize("level", [4, 5])
def test_connect_reserved_flag(level: int) -> None:
    assert_error(rejected_connect(connect_body(level=level, flags=0x03)), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("flags", [0x0A, 0x12, 0x22])  # will QoS 1, will QoS 2, will retain; no will flag
@pytest.mark.parametrize("level", [4, 5])
def test_will_qos_or_retain_without_will_flag(flags: int, level: int) -> None:
    assert_error(rejected_connect(connect_body(level=level, flags=flags)), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("level", [4, 5])
def test_will_qos_3(level: int) -> None:
    payload = string_hex("c") + ("00" if level == 5 else "") + string_hex("w") + string_hex("x")
    body = connect_body(level=level, flags=0x1E, payload=payload)
    assert_error(rejected_connect(body), MalformedPacket, MALFORMED)


def test_password_without_user_name_in_3_1_1() -> None:
    body = connect_body(level=4, flags=0x42, payload=string_hex("c") + string_hex("pw"))
    assert_error(rejected_connect(body), ProtocolError, PROTOCOL_ERROR)


def test_password_without_user_name_in_5() -> None:
    body = connect_body(level=5, flags=0x42, payload=string_hex("c") + string_hex("pw"))
    (packet,) = PacketDecoder().feed(frame(0x10, body))
    assert isinstance(packet, Connect)
    assert (packet.username, packet.password) == (None, b"pw")


# Properties -------------------------------------------------------------------------------


def publish_with_properties(properties_hex: str) -> bytes:
    properties = bytes.fromhex(properties_hex)
    return frame(0x30, string_hex("t") + f"{len(properties):02x}" + properties.hex())


def connect_with_properties(properties_hex: str) -> str:
    properties = bytes.fromhex(properties_hex)
    return connect_body(level=5, properties=f"{len(properties):02x}" + properties.hex())


@pytest.mark.parametrize("identifier", ["00", "04", "0a", "2b", "7f"])
def test_unknown_property(identifier: str) -> None:
    assert_error(
        rejected_from_client(publish_with_properties(identifier + "00"), 5), MalformedPacket, MALFORMED
    )


def test_property_identifier_as_multi_byte_integer() -> None:
    # 0x81 0x00 would be a non-minimal encoding of 1; no defined identifier needs two bytes.
    assert_error(rejected_from_client(publish_with_properties("8100 00"), 5), MalformedPacket, MALFORMED)


@pytest.mark.parametrize(
    "properties",
    [
        "2300 01",  # Topic Alias belongs in PUBLISH
        "1800 000001",  # Will Delay Interval belongs in the will properties
        "0100",  # Payload Format Indicator likewise
        "1f" + string_hex("x"),  # Reason String is for acknowledgements
        "2400",  # Maximum QoS is for CONNACK
    ],
)
def test_property_not_allowed_in_connect(properties: str) -> None:
    assert_error(rejected_connect(connect_with_properties(properties)), ProtocolError, PROTOCOL_ERROR)


def test_property_not_allowed_in_will() -> None:
    payload = string_hex("c") + "03 110000" + string_hex("w") + string_hex("x")  # Session Expiry in will
    body = connect_body(level=5, flags=0x06, payload=payload)
    assert_error(rejected_connect(body.replace("0300110000", "05110000000a")), ProtocolError, PROTOCOL_ERROR)


def test_subscription_identifier_in_publish_from_client() -> None:
    data = publish_with_properties("0b01")
    assert_error(rejected_from_client(data, 5), ProtocolError, PROTOCOL_ERROR)
    # A server may send it, and several of them.
    (packet,) = PacketDecoder(protocol_version=5).feed(publish_with_properties("0b01 0b02"))
    assert isinstance(packet, Publish)
    assert packet.properties == {PropertyId.SUBSCRIPTION_IDENTIFIER: [1, 2]}


def test_property_not_allowed_in_acknowledgement() -> None:
    data = frame(0x40, "0001 00 02 2301")
    assert_error(rejected_by_client(data, 5), ProtocolError, PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "properties",
    [
        "0200000001 0200000002",  # Message Expiry Interval
        "0100 0101",
        "0800017208000172",  # Response Topic
        "2300012300 02",  # Topic Alias
    ],
)
def test_duplicated_property(properties: str) -> None:
    assert_error(rejected_from_client(publish_with_properties(properties), 5), ProtocolError, PROTOCOL_ERROR)


def test_repeated_user_property_is_allowed() -> None:
    user_property = "26" + string_hex("k") + string_hex("v")
    (packet,) = decode_from_client(publish_with_properties(user_property * 3), 5)
    assert isinstance(packet, Publish)
    assert packet.properties == {PropertyId.USER_PROPERTY: [("k", "v")] * 3}


def test_two_subscription_identifiers_in_subscribe() -> None:
    data = frame(0x82, "0001 04 0b01 0b02" + string_hex("a") + "00")
    assert_error(rejected_from_client(data, 5), ProtocolError, PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "properties",
    [
        "0102",  # Payload Format Indicator
        "2300 00",  # Topic Alias 0
    ],
)
def test_publish_property_out_of_range(properties: str) -> None:
    assert_error(rejected_from_client(publish_with_properties(properties), 5), ProtocolError, PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "properties",
    [
        "1702",  # Request Problem Information
        "1902",  # Request Response Information
        "2100 00",  # Receive Maximum 0
        "2700 000000",  # Maximum Packet Size 0
    ],
)
def test_connect_property_out_of_range(properties: str) -> None:
    assert_error(rejected_connect(connect_with_properties(properties)), ProtocolError, PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "properties",
    [
        "2402",  # Maximum QoS
        "2502",  # Retain Available
        "2802",  # Wildcard Subscription Available
        "2902",  # Subscription Identifier Available
        "2a02",  # Shared Subscription Available
        "2100 00",
        "2700 000000",
    ],
)
def test_connack_property_out_of_range(properties: str) -> None:
    body = bytes.fromhex(properties)
    data = frame(0x20, f"0000{len(body):02x}{body.hex()}")
    assert_error(rejected_by_client(data, 5), ProtocolError, PROTOCOL_ERROR)


def test_subscription_identifier_0() -> None:
    data = frame(0x82, "0001 02 0b00" + string_hex("a") + "00")
    assert_error(rejected_from_client(data, 5), ProtocolError, PROTOCOL_ERROR)


def test_subscription_identifier_longer_than_four_bytes() -> None:
    data = frame(0x82, "0001 06 0bffffffff01" + string_hex("a") + "00")
    assert_error(rejected_from_client(data, 5), MalformedPacket, MALFORMED)


def test_subscription_identifier_not_minimal() -> None:
    data = frame(0x82, "0001 03 0b8100" + string_hex("a") + "00")
    assert_error(rejected_from_client(data, 5), MalformedPacket, MALFORMED)


def test_property_length_not_minimal() -> None:
    data = frame(0x30, string_hex("t") + "8000")
    assert_error(rejected_from_client(data, 5), MalformedPacket, MALFORMED)


def test_authentication_data_without_method() -> None:
    assert_error(rejected_connect(connect_with_properties("16 0001 ff")), ProtocolError, PROTOCOL_ERROR)


def test_auth_without_authentication_method() -> None:
    assert_error(rejected_by_client(frame(0xF0, "18 00"), 5), ProtocolError, PROTOCOL_ERROR)
    assert_error(rejected_by_client(frame(0xF0, "18"), 5), ProtocolError, PROTOCOL_ERROR)


def test_property_values_decode_to_their_types() -> None:
    properties = (
        "11 0000003c"  # Session Expiry Interval
        "21 0010"  # Receive Maximum
        "27 00010000"  # Maximum Packet Size
        "22 0005"  # Topic Alias Maximum
        "19 01"  # Request Response Information
        "17 00"  # Request Problem Information
        "15" + string_hex("SCRAM") + "16 0002 0102"
    )
    (packet,) = PacketDecoder().feed(frame(0x10, connect_with_properties(properties)))
    assert isinstance(packet, Connect)
    assert packet.properties == {
        PropertyId.SESSION_EXPIRY_INTERVAL: 60,
        PropertyId.RECEIVE_MAXIMUM: 16,
        PropertyId.MAXIMUM_PACKET_SIZE: 65536,
        PropertyId.TOPIC_ALIAS_MAXIMUM: 5,
        PropertyId.REQUEST_RESPONSE_INFORMATION: 1,
        PropertyId.REQUEST_PROBLEM_INFORMATION: 0,
        PropertyId.AUTHENTICATION_METHOD: "SCRAM",
        PropertyId.AUTHENTICATION_DATA: b"\x01\x02",
    }


# Reason codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (frame(0x20, "0006"), 4),  # 3.1.1 CONNACK return codes stop at 5
        (frame(0x20, "0001 00"), 5),  # 0x01 is not a 5.0 CONNACK reason
        (frame(0x20, "008e 00"), 5),  # Session taken over is for DISCONNECT
        (frame(0x40, "0001 92"), 5),  # Packet identifier not found is for PUBREL/PUBCOMP
        (frame(0x50, "0001 01"), 5),
        (frame(0x62, "0001 10"), 5),  # No matching subscribers is for PUBACK/PUBREC
        (frame(0x70, "0001 80"), 5),
        (frame(0x90, "0001 03"), 4),
        (frame(0x90, "0001 87"), 4),  # 3.1.1 has one failure code
        (frame(0x90, "0001 00 03"), 5),
        (frame(0x90, "0001 00 11"), 5),
        (frame(0xB0, "0001 00 01"), 5),
        (frame(0xE0, "01"), 5),
        (frame(0xE0, "84"), 5),
        (frame(0xF0, "01 00"), 5),
    ],
)
def test_invalid_reason_code(data: bytes, version: int) -> None:
    assert_error(rejected_by_client(data, version), MalformedPacket, MALFORMED)


@pytest.mark.parametrize("version", [4, 5])
def test_connack_reserved_acknowledge_flags(version: int) -> None:
    data = frame(0x20, "0200" + ("00" if version == 5 else ""))
    assert_error(rejected_by_client(data, version), MalformedPacket, MALFORMED)


@pytest.mark.parametrize(("version", "code"), [(4, "05"), (5, "87")])
def test_connack_refusal_with_session_present(version: int, code: str) -> None:
    data = frame(0x20, "01" + code + ("00" if version == 5 else ""))
    assert_error(rejected_by_client(data, version), ProtocolError, PROTOCOL_ERROR)


# Directions -------------------------------------------------------------------------------


def test_client_side_decoder_reads_both_directions() -> None:
    """With a protocol version the decoder reads anything, as test clients and tools need."""
    packets: list[Packet] = [
        Connect("c", protocol_version=5),
        Subscribe(1, [Subscription("a")]),
        SubAck(1, [0]),
        PingReq(),
        PingResp(),
    ]
    data = b"".join(encode(packet, 5) for packet in packets)
    assert PacketDecoder(protocol_version=5).feed(data) == packets
