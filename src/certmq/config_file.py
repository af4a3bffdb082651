"""The commented ``certmq.toml`` that ``certmq init`` writes: every key with its default and
what it means, generated from the definitions in :mod:`certmq.config`, so that the file and the
code cannot drift apart."""

from __future__ import annotations

import json

from certmq.config import definitions, section_note

HEADER = """\
# certmq configuration. Every key can be overridden by an environment variable
# CERTMQ_<SECTION>_<KEY>, for example CERTMQ_LISTENERS_TCP="0.0.0.0:1883".
# See docs/configuration.md for each key."""
COMMENT_COLUMN = 29  # where the comments beside the keys start


def render_config(instance_id: str) -> str:
    """The file, with ``instance_id`` as the instance's id and every other key at its default."""
    lines = HEADER.split("\n")
    section = ""
    for definition in definitions():
        if definition.section != section:
            section = definition.section
            lines.append("")
            lines.append(_beside(f"[{section}]", section_note(section)))
        value = instance_id if (section, definition.key) == ("instance", "id") else definition.default
        first, *more = definition.doc.split("\n")
        lines.append(_beside(f"{definition.key} = {_toml_value(value)}", first))
        lines.extend(_beside("", line) for line in more)
    return "\n".join(lines) + "\n"


def _beside(text: str, comment: str) -> str:
    if not comment:
        return text
    return f"{text.ljust(COMMENT_COLUMN - 1)} # {comment}" if text else f"{' ' * COMMENT_COLUMN}# {comment}"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)
