from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from screenplain import types
from screenplain.parsers.fountain import parse

from stories.models import GenerationRun, ScreenplayVersion, Story
from stories.runs import memory_log
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.stories.generation.conftest import screenplay

pytestmark = pytest.mark.django_db(transaction=True)

PERSONAS = ["--persona", "noir-detective", "--persona", "femme-fatale"]


def _generate(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("generate_screenplay", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_offline_model_streams_fountain_and_saves_the_story(
    writer: Any, cast: Any, offline: None
) -> None:
    out, err = _generate("--plot", "A statue, a lie, a fog.", *PERSONAS, "--title", "Fog")
    story = Story.objects.get(owner=writer)
    version = ScreenplayVersion.objects.get(story=story)
    assert f"Saved story {story.pk} ('Fog'), version 1: /stories/{story.pk}/" in err
    parsed = parse(io.StringIO("\n" + out))
    slugs = [p for p in parsed.paragraphs if isinstance(p, types.Slug)]
    assert len(slugs) == len(version.content["scenes"])
    speeches = sum(e["type"] == "dialogue" for s in version.content["scenes"] for e in s["elements"])
    assert sum(isinstance(p, types.Dialog) for p in parsed.paragraphs) == speeches
    assert GenerationRun.objects.get().status == "succeeded"


def test_the_fake_server_run_prints_json_and_adds_a_version(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    first, second = screenplay(scenes=2), screenplay(scenes=3)
    fake_anthropic.script(
        Reply(text=screenplay_text(first), tokens_per_second=4000),
        Reply(text=screenplay_text(second), tokens_per_second=4000),
    )
    _generate("--plot", "Fog.", *PERSONAS, "--user", "writer")
    story = Story.objects.get()
    plot_file = tmp_path / "plot.txt"
    plot_file.write_text("The fog lifts.")
    out, err = _generate(
        "--plot-file", str(plot_file), *PERSONAS, "--story", str(story.pk), "--format", "json"
    )
    assert json.loads(out) == second
    assert f"version 2: /stories/{story.pk}/" in err
    assert list(story.versions.values_list("number", flat=True)) == [2, 1]
    assert fake_anthropic.requests[-1].body["max_tokens"] > 0
    assert "The fog lifts." in json.dumps(fake_anthropic.requests[-1].body)


def test_no_save_prints_the_screenplay_records_the_run_and_saves_no_story(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=2)
    fake_anthropic.script(Reply(text=screenplay_text(expected), tokens_per_second=4000, output_tokens=321))
    out, err = _generate("--plot", "Fog.", *PERSONAS, "--no-save", "--format", "json")
    assert json.loads(out) == expected
    run = GenerationRun.objects.get()
    assert f"Not saved (--no-save); run {run.pk}" in err
    assert (run.status, run.story_id, run.output_tokens) == ("succeeded", None, 321)
    assert run.total_ms is not None and run.save_ms is None
    assert not Story.objects.exists() and not ScreenplayVersion.objects.exists()


def test_a_model_failure_exits_non_zero_with_its_code_and_saves_nothing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Reply(text=screenplay_text(screenplay()), error_event_after=2, tokens_per_second=4000)
    )
    with pytest.raises(CommandError, match=r"^llm_overloaded: .*retry") as failure:
        _generate("--plot", "Fog.", *PERSONAS)
    assert failure.value.returncode == 1
    assert not Story.objects.exists()
    assert GenerationRun.objects.get().status == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plot", "Fog.", "--persona", "nobody"], "unknown_personas: unknown personas: nobody"),
        (["--plot", "   ", "--persona", "noir-detective"], "invalid_request: plot must not be empty"),
        (["--plot", "Fog.", "--persona", "bad name!"], "invalid_request"),
        (["--plot-file", "/nonexistent/plot.txt", "--persona", "noir-detective"], "Cannot read"),
        (["--plot", "Fog.", *PERSONAS, "--user", "ghost"], "No active user named 'ghost'"),
        (["--plot", "Fog.", *PERSONAS, "--story", "999999"], "forbidden"),
    ],
)
def test_bad_requests_exit_with_status_2_and_save_nothing(
    writer: Any, cast: Any, offline: None, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message) as failure:
        _generate(*args)
    assert failure.value.returncode == 2
    assert not Story.objects.exists()


def test_a_plot_with_a_control_character_is_refused_with_status_2(
    writer: Any, cast: Any, offline: None, tmp_path: Path
) -> None:
    message = "invalid_request: plot contains a control character (U+001B); only tabs and line breaks"
    with pytest.raises(CommandError, match=re.escape(message)) as failure:
        _generate("--plot", "Fog.\x1b[2J", *PERSONAS)
    assert failure.value.returncode == 2
    plot_file = tmp_path / "plot.txt"
    plot_file.write_text("Act one:\tfog.\r\nAct two:\x7f rain.\n", encoding="utf-8")
    with pytest.raises(CommandError, match=re.escape("plot contains a control character (U+007F)")):
        _generate("--plot-file", str(plot_file), *PERSONAS)
    with pytest.raises(CommandError, match=re.escape("title contains a line break or another control")):
        _generate("--plot", "Fog.", "--title", "Fog\x07", *PERSONAS)
    assert not GenerationRun.objects.exists()


def test_a_plot_file_that_is_not_utf8_is_refused_not_garbled(
    writer: Any, cast: Any, offline: None, tmp_path: Path
) -> None:
    # A Latin-1 file was read with its accents replaced by U+FFFD, and the run went ahead on that plot.
    plot_file = tmp_path / "plot.txt"
    plot_file.write_bytes("Zoë's café burns down.".encode("latin-1"))
    with pytest.raises(CommandError, match=r"plot\.txt is not UTF-8 text \(byte 3 is not\)") as failure:
        _generate("--plot-file", str(plot_file), *PERSONAS)
    assert failure.value.returncode == 2
    assert not GenerationRun.objects.exists()


def test_a_plot_file_saved_with_a_byte_order_mark_gives_the_plot_without_it(
    writer: Any, cast: Any, offline: None, tmp_path: Path
) -> None:
    # Windows' Notepad saves UTF-8 with a byte-order mark: it became an invisible U+FEFF at the start of
    # the story's plot (and of the prompt), which Regenerate then sent again.
    plot_file = tmp_path / "plot.txt"
    plot_file.write_bytes("\ufeffThe fog lifts.\r\nA lie.".encode())
    _generate("--plot-file", str(plot_file), *PERSONAS)
    assert Story.objects.get().plot == "The fog lifts.\r\nA lie."


def test_a_plot_file_over_the_limit_is_too_long_even_when_cut_inside_a_character(
    writer: Any, cast: Any, offline: None, tmp_path: Path, settings: Any
) -> None:
    settings.STORY_MAX_PLOT_CHARS = 100
    plot_file = tmp_path / "plot.txt"
    plot_file.write_text("é" * 1000, encoding="utf-8")  # up to 401 bytes are read: half an "é" at the end
    with pytest.raises(CommandError, match="plot") as failure:
        _generate("--plot-file", str(plot_file), *PERSONAS)
    assert "UTF-8" not in str(failure.value)
    assert failure.value.returncode == 2


def test_attach_to_a_finished_run_whose_events_are_gone_prints_its_screenplay(
    writer: Any, cast: Any, offline: None
) -> None:
    # A run of another process, or one past the log's retention: only its end is in the database. Was:
    # nothing on stdout in Fountain, exit 0.
    first, _ = _generate("--plot", "A statue, a lie, a fog.", *PERSONAS, "--title", "Fog")
    run = GenerationRun.objects.get()
    memory_log.LOG.runs.pop(run.pk, None)  # as another process sees it: no events of it in memory
    out, err = _generate("--attach", str(run.pk))
    assert out == first
    assert f"version 1: /stories/{run.story_id}/" in err


@pytest.mark.parametrize("events_kept", [True, False], ids=["events-in-the-log", "events-gone"])
def test_attach_to_a_run_whose_story_was_deleted_says_so_without_a_traceback(
    writer: Any, cast: Any, offline: None, events_kept: bool
) -> None:
    # The run succeeded and saved its story, which the writer then deleted (the run is kept). Was: a
    # JSONDecodeError traceback (its end read from the database) or ScreenplayVersion.DoesNotExist (its
    # `saved` event still in the log).
    _generate("--plot", "A statue, a lie, a fog.", *PERSONAS, "--title", "Fog")
    run = GenerationRun.objects.get()
    Story.objects.get().delete()
    if not events_kept:
        memory_log.LOG.runs.pop(run.pk, None)
    with pytest.raises(
        CommandError, match=rf"^run {run.pk} succeeded, but its story was deleted since"
    ) as failure:
        _generate("--attach", str(run.pk))
    assert failure.value.returncode == 1
    assert GenerationRun.objects.get().status == "succeeded"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--plot", "Fog."], "--plot"),
        (["--persona", "noir-detective", "--no-save"], "--persona, --no-save"),
        (["--detach"], "--detach"),
        (["--story", "1", "--mode", "parallel"], "--story, --mode"),
    ],
)
def test_attach_with_options_that_start_a_run_is_refused_not_ignored(
    writer: Any, cast: Any, offline: None, args: list[str], named: str
) -> None:
    # They were ignored without a word: `--attach 5 --detach` followed run 5 in the foreground.
    _generate("--plot", "A statue, a lie, a fog.", *PERSONAS)
    run = GenerationRun.objects.get()
    with pytest.raises(
        CommandError, match=f"^--attach follows a run that exists and takes no {named}:"
    ) as failure:
        _generate("--attach", str(run.pk), *args)
    assert failure.value.returncode == 2
    assert GenerationRun.objects.count() == 1


def test_attach_to_a_run_no_process_runs_says_it_waits_for_a_server_to_resume_it(
    writer: Any, cast: Any, offline: None
) -> None:
    # Its process was killed and no server is up to resume it: --attach waited without a word.
    run = GenerationRun.objects.create(
        user=writer,
        model="offline",
        max_tokens=1024,
        status="streaming",
        lease_owner="a-dead-process",
        lease_expires_at=timezone.now() - timedelta(seconds=5),
    )
    # What follows here: a resume that ends in a cancel (the command waits for whatever comes).
    memory_log.LOG.append_now(run.pk, {"type": "cancelled", "run_id": run.pk})
    err = io.StringIO()
    with pytest.raises(CommandError, match="cancelled"):
        call_command("generate_screenplay", "--attach", str(run.pk), stdout=io.StringIO(), stderr=err)
    assert (
        f"Run {run.pk} is not running anywhere now (its server process stopped); waiting for a server to "
        "resume it"
    ) in " ".join(err.getvalue().split())


def test_a_long_unknown_user_is_quoted_short(writer: Any, cast: Any, offline: None) -> None:
    with pytest.raises(CommandError) as failure:
        _generate("--plot", "Fog.", *PERSONAS, "--user", "u" * 5000)
    assert (
        str(failure.value) == "No active user named '" + "u" * 80 + "…' (5000 characters); pass --user NAME."
    )


class _ClosedAfterOneWrite(io.StringIO):
    """stdout piped into `head -1`: the first write reaches it, the next finds the pipe closed."""

    def write(self, text: str) -> int:
        if self.getvalue():
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_closed_stdout_stops_the_run_with_one_line_not_a_traceback(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Was: `generate_screenplay ... | head -1` ended in a BrokenPipeError traceback.
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=3)), tokens_per_second=4000))
    with pytest.raises(CommandError, match=r"standard output was closed \(its reader ended\) while run \d+"):
        call_command(
            "generate_screenplay",
            "--plot",
            "Fog.",
            *PERSONAS,
            "--mode",
            "single",
            stdout=_ClosedAfterOneWrite(),
            stderr=io.StringIO(),
        )
    run = GenerationRun.objects.get()
    assert run.status == "cancelled"
    assert not Story.objects.exists()


def test_the_finished_progress_line_gives_the_runs_tokens_and_no_eta(
    writer: Any, cast: Any, offline: None
) -> None:
    # The last progress event's ETA stayed on the finished bar: "Saved ... 4 tokens, ETA 42 s".
    _out, err = _generate("--plot", "A statue, a lie, a fog.", *PERSONAS, "--mode", "single")
    output_tokens = GenerationRun.objects.get().output_tokens
    finished = [line for line in err.splitlines() if line.lstrip().startswith("Saved ━")]
    assert finished, err
    assert "ETA" not in finished[-1]
    assert finished[-1].rstrip().endswith(f"{output_tokens} tokens")


def test_a_screenplay_in_another_script_is_written_in_utf8_whatever_the_locale(
    writer: Any, offline: None, persona_factory: Any
) -> None:
    # Standard output in the locale's encoding (cp1252 for a file on Windows, Latin-1 here): the first
    # Japanese name was a UnicodeEncodeError traceback, and the run ended with it.
    persona_factory("poet", "松尾 葵")
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="latin-1")
    call_command(
        "generate_screenplay",
        "--plot",
        "東京の夜。雨。",
        "--persona",
        "poet",
        stdout=out,
        stderr=io.StringIO(),
    )
    out.flush()
    assert "@松尾 葵\n" in raw.getvalue().decode("utf-8")
    assert GenerationRun.objects.get().status == "succeeded"
