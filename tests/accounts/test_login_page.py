"""The site's login page as a writer meets it."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("username", "password"), [("   ", "pw-writer"), ("writer", "")])
def test_a_blank_field_is_said_beside_it_and_the_username_kept(username: str, password: str) -> None:
    # A username of spaces (which the browser's `required` lets through) or no password came back as the
    # same page with nothing said, and each field named an error id, in aria-describedby, that no element had.
    page = Client().post("/accounts/login/", {"username": username, "password": password}).content.decode()
    assert "This field is required." in page
    if username.strip():
        assert f'value="{username}"' in page
    described = {ref for refs in re.findall(r'aria-describedby="([^"]+)"', page) for ref in refs.split()}
    assert described
    for ref in described:
        assert f'id="{ref}"' in page, ref
