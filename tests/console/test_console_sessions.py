"""Console sessions against a real `certmq serve`: a logout lasts across a restart of the process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker_process import RunningBroker, start_broker

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def served(tmp_path: Path) -> Iterator[RunningBroker]:
    broker = start_broker(tmp_path / "certmq")
    yield broker
    assert broker.stop() == 0, broker.log_tail()


def log_in(client: httpx.Client, token: str) -> str:
    """Log in as a browser does; the CSRF token of the new session."""
    reply = client.post("/console/login", data={"token": token, "next": "/console"})
    assert reply.status_code == 303, reply.text
    page = client.get("/console")
    assert page.status_code == 200
    found = CSRF.search(page.text)
    assert found is not None
    return found.group(1)


def opens_the_console(url: str, cookie: str) -> bool:
    with httpx.Client(base_url=url, cookies={"certmq_console": cookie}) as client:
        reply = client.get("/console")
        return reply.status_code == 200


def test_a_logout_lasts_across_a_restart(served: RunningBroker) -> None:
    url, token = f"http://{served.host}:{served.http_port}", served.init_info["admin_token"]
    with httpx.Client(base_url=url) as browser:
        csrf = log_in(browser, token)
        closed = browser.cookies["certmq_console"]
        kept_open = httpx.Client(base_url=url)
        log_in(kept_open, token)
        still_open = kept_open.cookies["certmq_console"]
        kept_open.close()
        reply = browser.post("/console/logout", data={"csrf_token": csrf})
        assert reply.status_code == 303 and reply.headers["location"] == "/console/login"
    assert not opens_the_console(url, closed)
    assert opens_the_console(url, still_open)

    served.restart()

    # The same data directory and key: the closed session's cookie still verifies, and is refused;
    # the session that was not closed still opens the console.
    assert not opens_the_console(url, closed)
    assert opens_the_console(url, still_open)
