"""docs/architecture.md maps the code: every module of the package has its line there."""

from __future__ import annotations

import re
from pathlib import Path

import certmq

PACKAGE_ROOT = Path(certmq.__file__).parent
ARCHITECTURE = PACKAGE_ROOT.parents[1] / "docs" / "architecture.md"


def test_every_module_is_on_the_map() -> None:
    named = {
        name.removeprefix("src/certmq/") for name in re.findall(r"`([\w/.]+\.py)`", ARCHITECTURE.read_text())
    }
    modules = {
        path.relative_to(PACKAGE_ROOT).as_posix()
        for path in PACKAGE_ROOT.rglob("*.py")
        if path.name != "__init__.py" and "migrations" not in path.parts
    }
    assert not sorted(modules - named), "modules missing from docs/architecture.md"
    assert not sorted(name for name in named - modules if "/" in name and not name.startswith("tests/")), (
        "docs/architecture.md names modules that do not exist"
    )
