"""Property-based test of the REST API against its own OpenAPI document (schemathesis): every
operation, with generated valid and invalid input, never answers 500 and answers with a status,
content type, headers and body that the document declares. Bounded to a few examples per
operation, so that it takes seconds.

Three of schemathesis' default checks are left out, each for a reason that is not a defect:
``positive_data_acceptance`` (a schema-valid string is not yet a PEM certificate: 400 is right),
``negative_data_rejection`` (pydantic's lax mode reads ``0`` as ``false`` and a number as a Unix
time, as documented by FastAPI) and ``allow_header_conformance`` (Starlette's 405 names the
methods of the route it matched, not of every route on the path)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from certmq.http_application import create_app

from .live_api import LiveApi


def openapi_document() -> dict[str, Any]:
    """The document that /api/v1/openapi.json serves; it does not depend on the instance."""
    nothing = cast(Any, None)
    app = create_app(
        registry=nothing,
        control=nothing,
        instance_id="mqtt-schema",
        admin_token="schema",
        access_keys_manager=cast(Any, SimpleNamespace(secrets={})),
    )
    return app.openapi()


schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    running = LiveApi(tmp_path_factory.mktemp("rest-schema")).start()
    yield running
    running.stop()


def test_the_served_document_is_the_one_tested(rest: LiveApi) -> None:
    with rest.rest() as client:
        assert client.get("/openapi.json").json() == openapi_document()


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_rest_api_answers_as_documented(case: schemathesis.Case, rest: LiveApi) -> None:
    case.call_and_validate(
        base_url=rest.url,
        headers={"Authorization": f"Bearer {rest.admin_token}"},
        excluded_checks=[
            checks.positive_data_acceptance,
            checks.negative_data_rejection,
            checks.allow_header_conformance,
        ],
    )
