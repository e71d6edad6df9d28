"""Which back-end serves a model: the offline model its own, every other the ``STORY_BACKEND`` class.

Like Django's mail back-ends, ``STORY_BACKEND`` is a dotted path to a GenerationBackend subclass,
loaded at start-up (storyproject.asgi, and ``make serve``'s checks) so that a wrong path fails then. The interface
(backends.base) knows none of its implementations; this module is where they are named.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from stories.generation.backends.base import GenerationBackend

OFFLINE_BACKEND = "stories.generation.backends.offline.OfflineBackend"


def backend_class_load(path: str | None = None) -> type[GenerationBackend]:
    """The back-end class at ``path`` (``STORY_BACKEND`` by default); ImproperlyConfigured if it is none."""
    path = path or settings.STORY_BACKEND
    try:
        backend_class = import_string(path)
    except ImportError as error:  # no such module or class, or the module's own import failed
        raise ImproperlyConfigured(f"STORY_BACKEND {path!r} cannot be imported: {error}") from None
    if not (isinstance(backend_class, type) and issubclass(backend_class, GenerationBackend)):
        raise ImproperlyConfigured(f"STORY_BACKEND {path!r} is not a GenerationBackend")
    return backend_class


def backend_for_model(model: str) -> GenerationBackend:
    """The back-end for ``model``: the offline one for the offline model, whatever STORY_BACKEND says."""
    path = OFFLINE_BACKEND if model == settings.OFFLINE_MODEL else settings.STORY_BACKEND
    return backend_class_load(path)()
