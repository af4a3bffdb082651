"""How registry commands talk to a running instance: its REST API (docs/cli.md, "Registry commands").

They find it with ``--data-dir DIR`` (the HTTP listener address in the configuration, the admin
token in ``credentials.json``) or ``--url URL --token TOKEN``. A failed request becomes a
:class:`CommandError` whose message starts with the API's error code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from certmq.cli.errors import CommandError
from certmq.cli.init import DEFAULT_DATA_DIR
from certmq.config import ConfigError, load_config, parse_address
from certmq.instance import read_credentials

API_PREFIX = "/api/v1"
TIMEOUT = 30.0  # seconds; replacing a certificate or inactivating a large CA is not instant
PAGE_SIZE = 100  # the API's largest page
PROGRESS_THRESHOLD = 1000  # listings longer than this show their progress on stderr


def add_instance_arguments(parser: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    """The options every registry command takes to find the instance, and ``--json``."""
    where = parser.add_argument_group("instance (default: the one in ./data)")
    where.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="the instance's data directory: its config gives the API address, "
                       "its credentials.json the admin token (default: ./data)")  # fmt: skip
    where.add_argument("--config", type=Path, metavar="FILE",
                       help="the instance's configuration file (default: DIR/certmq.toml)")  # fmt: skip
    where.add_argument("--url", default=os.environ.get("CERTMQ_URL"), metavar="URL",
                       help="the API's base URL, e.g. http://127.0.0.1:8080 (env CERTMQ_URL)")  # fmt: skip
    where.add_argument("--token", default=os.environ.get("CERTMQ_TOKEN"), metavar="TOKEN",
                       help="the admin token, with --url (env CERTMQ_TOKEN)")  # fmt: skip
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def segment(value: str) -> str:
    """``value`` as one segment of a URL path (Sns are hex; client ids may hold anything)."""
    return quote(value, safe="")


def _url_of_listener(address: str) -> str:
    host, port = parse_address(address)
    # A listener on every address is reached on loopback from this machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def locate_instance(args: argparse.Namespace) -> tuple[str, str]:
    """The API's base URL and the admin token, from the command's options."""
    url: str | None = args.url
    token: str | None = args.token
    data_dir: Path | None = args.data_dir
    if url and token:
        return url.rstrip("/"), token
    data_dir = (data_dir or DEFAULT_DATA_DIR).absolute()
    if url is None:
        if not data_dir.is_dir():
            raise CommandError(
                f"{data_dir} is not an instance's data directory; use --data-dir DIR, or --url URL --token TOKEN"
            )
        try:
            config = load_config(data_dir, args.config)
        except ConfigError as error:
            raise CommandError(str(error)) from None
        if not config.listeners.http:
            raise CommandError(
                f'the HTTP listener of the instance in {data_dir} is disabled ([listeners] http = ""); '
                f"enable it, or use --url URL --token TOKEN"
            )
        url = _url_of_listener(config.listeners.http)
    if token is None:
        token = str(read_credentials(data_dir).get("admin_token", ""))
        if not token:
            raise CommandError(f"{data_dir}/credentials.json holds no admin token; use --token TOKEN")
    return url.rstrip("/"), token


class ApiClient:
    """A client of one instance's REST API v1."""

    def __init__(self, url: str, token: str, timeout: float = TIMEOUT) -> None:
        self.url = url
        self._http = httpx.Client(
            base_url=url + API_PREFIX,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "certmq-cli"},
            timeout=timeout,
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiClient:
        return cls(*locate_instance(args))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        """The decoded JSON reply (None for 204); CommandError with the API's code otherwise."""
        if params is not None:
            params = {key: value for key, value in params.items() if value is not None}
        try:
            response = self._http.request(method, path, params=params, json=json)
        except httpx.ConnectError as error:
            raise CommandError(
                f"cannot reach the certmq API at {self.url} ({error}); is `certmq serve` running?"
            ) from None
        except httpx.TimeoutException:
            raise CommandError(f"the certmq API at {self.url} did not answer in time") from None
        except httpx.HTTPError as error:
            raise CommandError(f"request to the certmq API at {self.url} failed: {error}") from None
        if response.status_code >= 400:
            raise CommandError(_error_message(response))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CommandError(
                f"{self.url} answered {method} {path} with something that is not JSON; is it a certmq API?"
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> Any:
        return self.request("POST", path, json=json)

    def put(self, path: str, json: Any) -> Any:
        return self.request("PUT", path, json=json)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def pages(
        self,
        path: str,
        *,
        limit: int | None = None,
        what: str = "records",
        on_page: Callable[[dict[str, Any]], None] | None = None,
        **params: Any,
    ) -> Iterator[list[Any]]:
        """Every item of a paged listing, page by page (at most ``limit`` items); progress on
        stderr for long listings. ``on_page`` is given each page as it arrives, whole."""
        page_no, fetched = 1, 0
        progress = Progress(what)
        try:
            while True:
                page_size = PAGE_SIZE if limit is None else max(1, min(PAGE_SIZE, limit - fetched))
                page = self.get(path, page_no=page_no, page_size=page_size, **params)
                if on_page is not None:
                    on_page(page)
                items: list[Any] = page["items"]
                if limit is not None:
                    items = items[: limit - fetched]
                fetched += len(items)
                total = int(page["total"]) if limit is None else min(int(page["total"]), limit)
                progress.update(fetched, total)
                if items:
                    yield items
                if not items or fetched >= total or (limit is not None and fetched >= limit):
                    return
                page_no += 1
        finally:
            progress.finish()


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        code, message = body["code"], body["message"]
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
        return f"HTTP {response.status_code}: {text}"
    return f"{code}: {message}"


class Progress:
    """``fetched 1200/5000 device certificates`` on stderr, for listings longer than
    PROGRESS_THRESHOLD: one line updated in place on a terminal, a line per tenth otherwise."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.shown = False
        self.last_tenth = 0
        self.terminal = sys.stderr.isatty()

    def update(self, done: int, total: int) -> None:
        if total <= PROGRESS_THRESHOLD:
            return
        line = f"fetched {done}/{total} {self.what}"
        if self.terminal:
            sys.stderr.write(f"\r{line}")
            sys.stderr.flush()
            self.shown = True
            return
        tenth = done * 10 // total
        if tenth > self.last_tenth or done == total:
            self.last_tenth = tenth
            print(line, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.shown = False
