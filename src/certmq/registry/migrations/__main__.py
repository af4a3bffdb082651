"""``python -m certmq.registry.migrations revision MESSAGE``: write the next migration, from the
difference between :mod:`certmq.registry.models` and a fresh database at the current head.

Revisions are numbered (``0002``, ``0003`` …) and their files named ``vNNNN_message.py``, so that
they read in order and are importable module names. Read the generated file before committing
it: autogeneration misses some changes (renames, server defaults) and SQLite needs batch mode,
which ``env.py`` turns on.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from certmq.registry.database import REGISTRY_FILE, alembic_config
from certmq.registry.store import open_registry


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "revision":
        print("usage: python -m certmq.registry.migrations revision MESSAGE", file=sys.stderr)
        return 2
    config = alembic_config()
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    head = ScriptDirectory.from_config(config).get_current_head()
    next_revision = f"{int(head or '0') + 1:04d}"
    with tempfile.TemporaryDirectory() as directory:
        store = open_registry(Path(directory) / REGISTRY_FILE)
        try:
            with store.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.revision(config, message=args[1], autogenerate=True, rev_id=next_revision)
        finally:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
