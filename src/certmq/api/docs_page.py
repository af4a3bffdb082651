"""``/api/v1/docs``: Swagger UI on the REST API's OpenAPI document, served whole by certmq.

Its script and stylesheet come from the ``swagger-ui-py`` package (Swagger UI 5, which reads
OpenAPI 3.1), and it is started by a script file of our own rather than an inline one: the page
works offline, loads nothing from another host, and keeps the console's strict
Content-Security-Policy (:data:`certmq.web.security_headers.SECURITY_HEADERS`).
"""

from __future__ import annotations

from html import escape

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from certmq import __version__
from certmq.web.security_headers import SECURITY_HEADERS

# Swagger UI's files, then ours (docs.js), under one path.
_ASSETS: list[str | tuple[str, str]] = [("swagger_ui", "static"), ("certmq.api", "static")]

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css?v={version}">
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{assets}/swagger-ui-bundle.js?v={version}"></script>
<script src="{assets}/docs.js?v={version}"></script>
</body>
</html>
"""


def install_docs_page(app: FastAPI, docs_url: str, openapi_url: str) -> None:
    """Serve Swagger UI at ``docs_url`` with its files under ``docs_url/assets``."""
    assets = f"{docs_url}/assets"
    page = _PAGE.format(
        title=escape(f"{app.title} {app.version}"),
        assets=assets,
        version=escape(__version__),
        openapi_url=escape(openapi_url),
    )

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    app.add_route(docs_url, docs, methods=["GET"], include_in_schema=False)
    app.mount(assets, StaticFiles(packages=_ASSETS), name="api-docs-assets")
