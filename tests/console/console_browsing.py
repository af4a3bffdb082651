"""How the console tests run a browser: Debian's chromium, headless, on a laptop-sized screen.
(A module of its own, not the conftest, so that test modules can import it under any run.)"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A laptop screen: what the console is laid out for.
VIEWPORT = {"width": 1366, "height": 768}
SCREENSHOTS = PROJECT_ROOT / "test-output" / "console"
