"""The REST API's documentation page in headless chromium against a real `certmq serve`, with
every request to a host other than this one refused: the page shows the API's operations from
what certmq itself serves, under its Content-Security-Policy, without a violation."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from console_browsing import VIEWPORT
from playwright.sync_api import Browser, Route, expect

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
# Chromium reports each violation of the page's policy both as an event and on the console.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def test_the_api_docs_work_offline_under_the_csp(
    browser: Browser, console_instance: Any, screenshots: Path
) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    outside: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    console: list[str] = []
    errors: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: errors.append(str(error)))

    reply = page.goto(f"{console_instance.url}/api/v1/docs")
    assert reply is not None and reply.ok
    assert "script-src 'self'" in reply.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("certmq REST API")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    assert operations.count() >= 20
    expect(page.locator(".opblock", has_text="/api/v1/ca-certificates").first).to_be_visible()
    # One operation opened: its description and responses show.
    page.locator(".opblock-summary", has_text="/api/v1/healthz").first.click()
    opened = page.locator(".opblock.is-open")
    expect(opened.locator(".responses-wrapper")).to_be_visible()
    # And tried out: the request goes to certmq, its answer shows.
    opened.get_by_role("button", name="Try it out").click()
    opened.get_by_role("button", name="Execute").click()
    expect(opened.locator(".live-responses-table tbody .response-col_status").first).to_contain_text("200")
    page.screenshot(path=str(screenshots / "api-docs.png"), full_page=False)

    violations = page.evaluate("window.cspViolations")
    context.close()
    assert outside == [], f"the page asked other hosts: {outside}"
    assert violations == [], f"the page broke its Content-Security-Policy: {violations}"
    refused = [line for line in console if "Content Security Policy" in line or "Refused to" in line]
    assert refused == [], refused
    assert errors == [], errors
