"""The codec against hand-written bytes: one vector per packet type and version, then one
test per rule the specifications make about malformed packets and protocol errors."""

from __future__ import annotations

import pytest

from certmq.mqtt.codec import MAXIMUM_PACKET_SIZE, PacketDecoder, encode
from certmq.mqtt.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
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
