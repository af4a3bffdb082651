from certmq.auth.credentials import check_signature, signature_password, signature_username
from certmq.mqtt.reason_codes import ReasonCode

KEYS = {"LTAIexample": "XXXXX"}


def test_spec_check_vector() -> None:
    assert signature_password("XXXXX", "GID_Test@@@0001") == "vI009IZJZVGRwBwZvnbwjfuXxVM="


def test_valid_signature_is_accepted() -> None:
    outcome = check_signature(
        signature_username("LTAIexample", "mqtt-local-1"),
        b"vI009IZJZVGRwBwZvnbwjfuXxVM=",
        "GID_Test@@@0001",
        "mqtt-local-1",
        KEYS,
    )
    assert outcome.allowed
    assert outcome.identity.access_key_id == "LTAIexample"


def test_refusals_say_why() -> None:
    malformed = "username must be Signature|AccessKeyId|InstanceId"
    cases = {
        (None, None): "username and password are required",
        ("Signature|LTAIexample|mqtt-local-1", None): "username and password are required",
        ("Token|LTAIexample|mqtt-local-1", b"x"): malformed,
        ("Signature||mqtt-local-1", b"x"): malformed,
        ("Signature|LTAIexample", b"x"): malformed,
        ("Signature|LTAIexample|mqtt-other", b"x"): "unknown instance mqtt-other",
        ("Signature|LTAIexample|x|mqtt-local-1", b"x"): "unknown instance x|mqtt-local-1",
        ("Signature|LTAInobody|mqtt-local-1", b"x"): "unknown AccessKeyId",
        ("Signature|LTAIexample|mqtt-local-1", b"vI009IZJZVGRwBwZvnbwjfuXxVM="): "signature does not match",
    }
    for (username, password), reason in cases.items():
        outcome = check_signature(username, password, "GID_Test@@@0002", "mqtt-local-1", KEYS)
        assert (outcome.allowed, outcome.reason_code, outcome.reason) == (
            False,
            ReasonCode.BAD_USER_NAME_OR_PASSWORD,
            reason,
        ), username
