"""A server process's interpreter settings (storyproject/runtime.py)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import storyproject.asgi  # noqa: F401  (the server's entry point applies the settings at import)
from storyproject.runtime import server_runtime_tune


@pytest.fixture
def interpreter_restored() -> Iterator[None]:
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    yield
    sys.setswitchinterval(interval)
    gc.set_threshold(*thresholds)


def test_the_asgi_entry_point_runs_with_the_default_settings() -> None:
    assert sys.getswitchinterval() == pytest.approx(0.001)
    assert gc.get_threshold()[0] == 50_000
    # What start-up loaded is out of the collector's sight.
    assert gc.get_freeze_count() > 10_000


def test_the_settings_are_applied(settings: Any, interpreter_restored: None) -> None:
    settings.STORY_GIL_SWITCH_INTERVAL_MS = 7
    settings.STORY_GC_THRESHOLD = 1234
    server_runtime_tune()
    assert sys.getswitchinterval() == pytest.approx(0.007)
    assert gc.get_threshold()[0] == 1234
