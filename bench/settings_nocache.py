"""The project's settings with Django's cache turned off, for the old path of persona contexts."""

from storyproject.settings import *  # noqa: F403

CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
