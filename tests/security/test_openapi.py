from __future__ import annotations

from io import StringIO

import pytest
import yaml
from django.core.management import call_command


def test_the_openapi_schema_is_valid_and_every_view_is_described(db: None) -> None:
    out = StringIO()
    # --fail-on-warn: a view drf-spectacular cannot describe is a failure, not a log line.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/stories/",
        "/api/stories/{id}/",
        "/api/stories/{story_id}/versions/",
        "/api/stories/{story_id}/versions/{number}/",
        "/api/runs/",
    ):
        assert path in paths
    assert set(paths["/api/stories/{id}/"]) == {"get", "patch", "delete"}
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])
    # A generation needs a plot and at least one persona: the schema says so, as the server does.
    generate = schema["components"]["schemas"]["GenerateScreenplayRequest"]
    assert set(generate["required"]) == {"plot", "personas"}
    assert generate["properties"]["personas"]["minItems"] == 1


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_are_served_without_a_login(client: object, url: str, db: None) -> None:
    response = client.get(url)  # type: ignore[attr-defined]
    assert response.status_code == 200
