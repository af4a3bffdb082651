"""The checks of what every interface passes to the registry (paging, serial numbers, statuses)
and their bounds, one home for the RPC API, the REST API, the console and the CLI. Each error
says what was expected."""

from __future__ import annotations

from certmq.registry.errors import ParameterFieldCheckFailed
from certmq.registry.models import Status

MAX_PAGE_SIZE = 100
# Far beyond any real listing, and small enough that (PageNo - 1) * PageSize fits a 64-bit offset.
MAX_PAGE_NO = 1_000_000_000
# The furthest a search of a log may skip: within a 64-bit offset, far beyond any real log.
MAX_OFFSET = 1_000_000_000_000


def check_paging(page_no: int, page_size: int) -> None:
    if isinstance(page_no, bool) or not isinstance(page_no, int) or not 1 <= page_no <= MAX_PAGE_NO:
        raise ParameterFieldCheckFailed(f"PageNo must be an integer from 1 to {MAX_PAGE_NO}, not {page_no!r}")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ParameterFieldCheckFailed(
            f"PageSize must be an integer from 1 to {MAX_PAGE_SIZE}, not {page_size!r}"
        )


def check_sn(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ParameterFieldCheckFailed(f"{what} is required")


def parse_status(value: Status | str | None, what: str = "status") -> Status | None:
    if value is None or isinstance(value, Status):
        return value
    try:
        return Status(value)
    except ValueError:
        raise ParameterFieldCheckFailed(f"{what} must be 'active' or 'inactive', not {value!r}") from None
