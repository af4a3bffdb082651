"""Which characters certmq shows escaped, how, and the CLI's output, which escapes them all."""

from __future__ import annotations

import io
import json
import sys
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from certmq.cli.output import escaped_output, print_fields, print_json, print_table
from certmq.invisible_characters import (
    INVISIBLE,
    INVISIBLE_ON_ONE_LINE,
    character_name,
    escape_invisible,
    escape_sequence,
    holds_invisible,
)

LAYOUT = "\t\n\r"


def test_every_control_and_format_character_is_escaped() -> None:
    """Checked against this Python's Unicode database, so a newer one with more format
    characters says so here."""
    missed = [
        f"U+{code:04X}"
        for code in range(0x110000)
        if unicodedata.category(chr(code)) in ("Cc", "Cf", "Cs", "Zl", "Zp")
        and chr(code) not in LAYOUT
        and INVISIBLE.match(chr(code)) is None
    ]
    assert missed == []
    for character in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u200b\u3164\x1b":
        assert INVISIBLE.match(character), character_name(character)
    for layout in LAYOUT:
        assert INVISIBLE.match(layout) is None and INVISIBLE_ON_ONE_LINE.match(layout)


def test_the_quick_check_finds_each_of_them() -> None:
    for code in range(0x110000):
        character = chr(code)
        if INVISIBLE.match(character):
            assert holds_invisible(f"<p>line\n{character}·</p>"), f"U+{code:04X}"
    assert not holds_invisible("<p>sensor-001 · 传感器 …</p>\n\t")


@given(st.text())
def test_the_quick_check_agrees_with_the_pattern(text: str) -> None:
    assert holds_invisible(text) == (INVISIBLE.search(text) is not None)


def test_what_people_write_is_left_alone() -> None:
    names = ["sensor-001", "传感器-7", "חיישן", "مستشعر", "Ünïcødé ✓", "👍🏽", "❤️"]
    for name in names:
        assert escape_invisible(name) == name


def test_escapes_are_json_escapes() -> None:
    assert escape_invisible("sensor-\u202egnp.exe") == "sensor-\\u202egnp.exe"
    assert escape_sequence("\x1b") == "\\u001b"
    assert escape_sequence("\U000e0041") == "\\udb40\\udc41"
    assert character_name("\u202e") == "U+202E RIGHT-TO-LEFT OVERRIDE"


@given(st.dictionaries(st.text(), st.text()))
def test_escaped_json_is_the_same_json(value: dict[str, str]) -> None:
    text = json.dumps(value, ensure_ascii=False)
    escaped = escape_invisible(text)
    assert INVISIBLE.search(escaped) is None
    assert json.loads(escaped) == value


def test_the_cli_prints_every_invisible_character_escaped() -> None:
    captured = io.StringIO()
    saved = sys.stdout
    sys.stdout = captured
    try:
        with escaped_output():
            item = {"name": "sensor-\u202egnp.exe", "detail": "two\nlines\rover", "sn": "01"}
            print_table([("NAME", lambda i: i["name"]), ("SN", lambda i: i["sn"])], [[item]], "none")
            print_fields(item, [("name", "Name"), ("detail", "Detail")])
            print_json(item)
            print("registered sensor-\u202egnp.exe\x1b[2J\rhidden")
    finally:
        sys.stdout = saved
    out = captured.getvalue()
    assert INVISIBLE.search(out) is None and "\r" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SN"]
    assert lines[1].split() == ["sensor-\\u202egnp.exe", "01"]
    assert "Detail  two\\u000alines\\u000dover" in out
    assert json.loads(out[out.index("{") : out.index("}") + 1])["name"] == "sensor-\u202egnp.exe"
    assert "registered sensor-\\u202egnp.exe\\u001b[2J\\u000dhidden" in out
