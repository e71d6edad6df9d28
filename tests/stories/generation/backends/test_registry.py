from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from stories.generation.backends.offline import OfflineBackend
from stories.generation.backends.registry import backend_class_load


def test_the_offline_back_end_loads_by_its_path() -> None:
    assert backend_class_load("stories.generation.backends.offline.OfflineBackend") is OfflineBackend


@pytest.mark.parametrize(
    "path",
    ["nope.Backend", "stories.generation.backends.offline.Nope", "NoDots"],
)
def test_a_path_that_does_not_import_is_refused_naming_the_setting(path: str) -> None:
    # It was import_string's ModuleNotFoundError or ImportError, naming neither the setting nor the fix.
    with pytest.raises(ImproperlyConfigured, match=f"STORY_BACKEND '{path}' cannot be imported: "):
        backend_class_load(path)


def test_a_class_that_is_not_a_back_end_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="is not a GenerationBackend"):
        backend_class_load("stories.models.Story")
