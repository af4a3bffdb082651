"""Characters that change how the text around them reads without being seen, and how certmq shows
them: as the escape ``\\u202e``, never raw.

A certificate's subject is chosen by whoever made the certificate. A right-to-left override
(U+202E) before ``gnp.exe`` in a CN makes it read ``exe.png``; a zero-width space makes two names
that look the same differ; an ANSI escape rewrites a terminal. So wherever certmq shows a string
that came from outside (the console's pages, the output of the ``certmq`` commands), these
characters are shown escaped. Escapes use JSON's form (a pair of ``\\uXXXX`` for a character
beyond U+FFFF), so that escaped JSON stays valid JSON with the same value.

The characters: controls (Cc), but for tab, line feed and carriage return, which some places
keep as layout; format characters (Cf: the bidirectional controls U+200E/F, U+202A-E, U+2066-9,
U+061C, zero-width spaces and joiners, U+FEFF, the tag characters U+E0000 block...); line and
paragraph separators (U+2028/9); lone surrogates; and the letters that draw nothing (Hangul
fillers, U+034F, U+17B4/5).
"""

from __future__ import annotations

import re
import unicodedata

# The letters and marks that draw nothing: str.isprintable() counts them as printable.
_BLANK_LETTERS = "\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0"
_CHARACTERS = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891"
    "\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff"
    "\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    f"\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f{_BLANK_LETTERS}"
)
# Tab, line feed and carriage return kept: a web page's text, JSON (which escapes them itself).
INVISIBLE = re.compile(f"[{_CHARACTERS}]")
# A terminal's output: lines stay lines, but a carriage return would write over one.
INVISIBLE_ON_A_TERMINAL = re.compile(f"[\r{_CHARACTERS}]")
# A value shown on one line (a table cell, a field): every control.
INVISIBLE_ON_ONE_LINE = re.compile(f"[\t\n\r{_CHARACTERS}]")


def holds_invisible(text: str) -> bool:
    """Whether ``text`` holds a character of :data:`INVISIBLE`. Most texts are answered by
    str.isprintable(), at C speed (ten times faster than the regular expression on a page)."""
    if text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable():
        return any(letter in text for letter in _BLANK_LETTERS)
    return INVISIBLE.search(text) is not None


def escape_sequence(character: str) -> str:
    """``\\u202e`` for U+202E; ``\\udb40\\udc41`` (JSON's pair) for U+E0041."""
    code = ord(character)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def character_name(character: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE``: what an escape stands for, for a tooltip."""
    name = unicodedata.name(character, "")
    return f"U+{ord(character):04X} {name}".rstrip()


def escape_invisible(text: str, pattern: re.Pattern[str] = INVISIBLE) -> str:
    """``text`` with each character that ``pattern`` finds escaped."""
    if pattern.search(text) is None:
        return text
    return pattern.sub(lambda found: escape_sequence(found.group()), text)
