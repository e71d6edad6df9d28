"""A server process's interpreter settings (storyproject/runtime.py)."""

from __future__ import annotations

import gc
import pprint
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


def test_a_websocket_connection_no_longer_pretty_prints_autobahns_settings() -> None:
    # autobahn's WebSocketProtocol._connectionMade: ``self.log.debug("\n{attrs}", attrs=pformat(...))``,
    # the pformat run at every connection even with debug lines off (0.8-1.5 % of a busy process).
    from autobahn.websocket import protocol

    settings_list = [("openHandshakeTimeout", 5, "WebSocketServerFactory")]
    assert protocol.pformat is not pprint.pformat
    assert protocol.pformat(settings_list) is settings_list
