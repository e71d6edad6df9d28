from __future__ import annotations

from tests.stories.generation.conftest import cast, fake_anthropic, offline  # noqa: F401
