"""How long each screenplay export takes, by screenplay size: `python -m bench.exports`.

Screenplays from bench.screenplays (three characters, six dialogue lines a scene); each figure is the
median of several runs in this process, after one warm-up run (font registration, imports).
Writes bench/results/exports.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from datetime import UTC, date, datetime
from importlib.metadata import version

from bench.harness import ROOT
from bench.screenplays import screenplay_build
from stories.exports import EXPORT_FORMATS, ExportMeta, screenplay_export

SIZES = (10, 40, 120)  # scenes; a feature-length screenplay has about 40 to 60
REPEATS = 5


def _median_ms(*, content: dict, fmt: str, meta: ExportMeta) -> tuple[float, int]:
    timings, size = [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        data, _, _ = screenplay_export(content=content, fmt=fmt, meta=meta)
        timings.append((time.perf_counter() - started) * 1000)
        size = len(data)
    return statistics.median(timings), size


def _machine() -> list[str]:
    # The exports are pure Python: no database or cache is involved, so none is described.
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- versions: Python {platform.python_version()}, screenplain {version('screenplain')}, "
        f"reportlab {version('reportlab')}",
    ]


def main() -> None:
    meta = ExportMeta(title="The Photograph", author="Bench Writer", draft_date=date(2026, 11, 25))
    rows = ["| scenes | format | median ms | bytes |", "|---:|---|---:|---:|"]
    for scenes in SIZES:
        content = screenplay_build(personas=["a", "b", "c"], scenes=scenes, lines=6)
        screenplay_export(content=content, fmt="pdf", meta=meta)  # warm-up
        for fmt in EXPORT_FORMATS:
            median, size = _median_ms(content=content, fmt=fmt, meta=meta)
            rows.append(f"| {scenes} | {fmt} | {median:.1f} | {size} |")
    report = "\n".join(["# Screenplay exports", "", *_machine(), "", *rows, ""])
    print(report)
    (ROOT / "bench" / "results" / "exports.md").write_text(report, "utf-8")


if __name__ == "__main__":
    main()
