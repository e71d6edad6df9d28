"""Without Chromium the browser tests say what to install, and CI can forbid that skip.

No ``browser`` marker: these run in every pass, including ``-m "not browser"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import CHROMIUM_MISSING, REQUIRE_BROWSER, chromium_executable


def test_a_missing_chromium_skips_with_the_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REQUIRE_BROWSER, raising=False)
    missing = tmp_path / "chromium"
    with pytest.raises(pytest.skip.Exception) as skipped:
        chromium_executable(path=str(missing))
    assert str(skipped.value) == f"{missing} not found: install Debian's chromium: apt-get install chromium"


def test_a_missing_chromium_fails_when_the_browser_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REQUIRE_BROWSER, "1")
    with pytest.raises(pytest.fail.Exception) as failed:
        chromium_executable(path=str(tmp_path / "chromium"))
    assert CHROMIUM_MISSING in str(failed.value)
    assert REQUIRE_BROWSER in str(failed.value)


@pytest.mark.parametrize("required", ["0", "1"])
def test_an_installed_chromium_is_used_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, required: str
) -> None:
    monkeypatch.setenv(REQUIRE_BROWSER, required)
    executable = tmp_path / "chromium"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    assert chromium_executable(path=str(executable)) == str(executable)


def test_a_file_that_cannot_run_counts_as_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_BROWSER, raising=False)
    not_executable = tmp_path / "chromium"
    not_executable.write_text("not a browser")
    with pytest.raises(pytest.skip.Exception):
        chromium_executable(path=str(not_executable))
