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
    cases = {
        (None, None): "required",
        ("Token|LTAIexample|mqtt-local-1", b"x"): "Signature|",
        ("Signature|LTAIexample|mqtt-other", b"x"): "unknown instance",
        ("Signature|LTAInobody|mqtt-local-1", b"x"): "unknown AccessKeyId",
        ("Signature|LTAIexample|mqtt-local-1", b"vI009IZJZVGRwBwZvnbwjfuXxVM="): "does not match",
    }
    for (username, password), reason in cases.items():
        outcome = check_signature(username, password, "GID_Test@@@0002", "mqtt-local-1", KEYS)
        assert not outcome.allowed
        assert outcome.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
        assert reason in outcome.reason
