from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from personas.services import EDITORS_GROUP


@pytest.fixture
def editor_client(user_factory: Any) -> Client:
    """A client logged in as a member of the Editors group (persona permissions only)."""
    editor = user_factory("ed", is_staff=True)
    editor.groups.add(Group.objects.get(name=EDITORS_GROUP))
    client = Client()
    client.force_login(editor)
    return client
