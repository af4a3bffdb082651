"""The auth modes of an instance (docs/configuration.md, ``instance.auth_mode``; switched at run
time with ``certmq mode set``, the API or the console).

In one-way mode clients verify the broker and authenticate with Signature credentials; in
mutual mode the TLS listener also asks for a device certificate of a registered CA and decides
CONNECT by it (:mod:`certmq.auth.decision`). Which listener admits whom in each mode is
:mod:`certmq.auth.admission`'s table.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class AuthMode(StrEnum):
    ONE_WAY = "one-way"
    MUTUAL = "mutual"


AuthModeName = Literal["one-way", "mutual"]
"""The values of :class:`AuthMode`, as the API and the console validate them: a request naming
another mode is told ``Input should be 'one-way' or 'mutual'``."""
