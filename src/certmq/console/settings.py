"""What the console is configured with (:func:`certmq.console.install_console`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """``session_key`` signs the session cookies (see :func:`derive_session_key`); without one,
    sessions last as long as the process. ``credentials_file`` (where the admin token is kept)
    and ``server_ca_file`` (what clients verify the broker with) are named on the pages that
    tell an operator what to type."""

    session_key: bytes | None = None
    credentials_file: str | None = None
    server_ca_file: str | None = None
