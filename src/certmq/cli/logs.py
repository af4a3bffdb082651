"""Log output of ``certmq serve``: readable text, or one JSON object per line."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

# Attributes every LogRecord has; anything else was passed with extra= and goes into the JSON object.
_STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _NodeLabel(logging.Filter):
    """Puts the node's name in every record (``node``), for the formats to write."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


def configure_logging(log_format: str = "text", level: str = "info", node: str = "") -> None:
    """Send the ``certmq`` logs to standard error in ``log_format``. ``node``: the name written in
    every line, for processes that share one standard error (the workers of ``serve --workers``)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        label = " [%(node)s]" if node else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s{label} %(name)s: %(message)s"))
    if node:
        handler.addFilter(_NodeLabel(node))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The broker logs each listener itself; the library's own start and stop lines repeat them.
    # Libraries that narrate routine work at INFO: the schema migrations, the HTTP server.
    for name in ("websockets.server", "alembic", "uvicorn.error"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
