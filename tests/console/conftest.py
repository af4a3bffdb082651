"""Fixtures of the console tests: a real `certmq serve` in mutual mode, Debian's chromium driven
by Playwright, and the certificate helpers of the mutual-TLS tests (openssl-made CAs and
devices, paho-mqtt devices over real TLS)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_browsing import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS, TESTS / "interop", TESTS / "mtls", TESTS / "console"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _mtls_fixtures() -> Any:
    """The mutual-TLS tests' conftest, loaded under a name of its own: its ``Instance`` (CLI,
    REST API and paho devices of a running certmq) and ``start_instance`` serve here too."""
    name = "certmq_mtls_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "mtls" / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


mtls = _mtls_fixtures()
Instance = mtls.Instance
start_instance = mtls.start_instance


@pytest.fixture(scope="module")
def console_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """certmq in mutual mode with no CA registered and no anonymous access."""
    broker, work = start_instance(
        tmp_path_factory, CERTMQ_INSTANCE_AUTH_MODE="mutual", CERTMQ_AUTH_ANONYMOUS="false"
    )
    instance = Instance(broker, work)
    yield instance
    instance.close()
    assert broker.stop() == 0, broker.log_tail()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless. Playwright never downloads a browser of its own here."""
    executable = shutil.which("chromium") or CHROMIUM
    if not Path(executable).exists():
        pytest.fail(
            "chromium is missing: install Debian's package (apt-get install chromium; make tools does)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
