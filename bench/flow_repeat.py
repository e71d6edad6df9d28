"""bench.flow's load levels on several checkouts, interleaved and repeated: how far apart they really are.

`python -m bench.flow_repeat --rounds 2 /path/to/checkout-a /path/to/checkout-b ...` (each a git worktree
of a commit, sharing this checkout's virtualenv). Each round runs, for each checkout in turn, that
checkout's own bench.flow levels (1 stream x 10 generations, 50 at once x 2, 200 at once x 1, or
``--levels``) on one fresh daphne process of it, on a PostgreSQL database of its own
(``story_bench_<name>``, migrated by its own code) and a Redis key prefix of its own. Interleaving
spreads the machine's drift (its database round trip moved 4x within half an hour) over every
checkout alike, and the repeats show each checkout's own spread, which one run each cannot.

Nothing here asserts a timing: it prints one line per level and run, then a table per level (mean and
range over the runs) for bench/results/flow-noise.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.flow import REDIS_URL, SERVER_ENV
from bench.harness import postgres_ensure, redis_reachable

_CHILD = "BENCH_FLOW_REPEAT_LEVELS"
_FIGURES = ("overhead", "lag", "scene lag", "before", "after", "scene")
# An older checkout's bench.flow, before its first scene lag column.
_FIGURES_BEFORE = ("overhead", "lag", "before", "after", "scene")


def main(argv: list[str] | None = None) -> None:
    if os.environ.get(_CHILD):
        _child()
        return
    parser = argparse.ArgumentParser(prog="python -m bench.flow_repeat", description=__doc__.split("\n")[0])
    parser.add_argument("checkouts", nargs="+", type=Path, help="checkouts (git worktrees) to compare")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--levels", default="1:10,50:2,200:1", help="concurrency:rounds, comma-separated")
    options = parser.parse_args(argv)
    problem = redis_reachable(REDIS_URL)
    runs: list[dict[str, Any]] = []
    for _ in range(options.rounds):
        for checkout in options.checkouts:
            runs += _run(checkout.resolve(), options.levels, problem)
    print(_tables(runs, [c.resolve().name for c in options.checkouts]))


def _run(checkout: Path, levels: str, redis_problem: str) -> list[dict[str, Any]]:
    name = checkout.name.replace("-", "_")
    database = f"postgres://postgres@127.0.0.1:5432/story_bench_{name}"
    postgres_ensure(database)
    env = {
        **os.environ,
        **SERVER_ENV,
        "DATABASE_URL": database,
        "BENCH_DATABASE_URL": database,
        "BENCH_CACHE_KEY_PREFIX": f"repeat-{name}",
        "CACHE_KEY_PREFIX": f"repeat-{name}",
        "BENCH_REDIS_PROBLEM": redis_problem,
        _CHILD: levels,
        # The checkout's own code first: its bench, its project.
        "PYTHONPATH": str(checkout),
    }
    if not redis_problem:
        env["REDIS_URL"] = REDIS_URL
    load = os.getloadavg()[0]
    started = time.strftime("%H:%M:%S")
    # This file, run against the checkout's code (an older checkout has no such module).
    child = [sys.executable, str(Path(__file__).resolve())]
    output = subprocess.run(child, cwd=checkout, env=env, check=True, capture_output=True, text=True).stdout
    runs = []
    for line in output.splitlines():
        if line.startswith("{"):
            run = {**json.loads(line), "checkout": checkout.name, "started": started, "load": load}
            print(
                f"{started} {checkout.name} (load {load:.2f}) {run['level']} at once: {run['row']}",
                flush=True,
            )
            runs.append(run)
    return runs


def _child() -> None:
    """In the checkout: its own bench.flow helpers, one daphne process, the levels asked."""
    sys.path.insert(0, os.getcwd())
    import django

    from bench import flow
    from bench.harness import daphne_process, process_usage

    django.setup()
    setup = flow._data_prepare()
    levels = [tuple(int(part) for part in level.split(":")) for level in os.environ[_CHILD].split(",")]
    with flow.fake_server() as fake, daphne_process(env=flow._new_env(fake)) as (base, pid):
        flow._cold_note(setup, fake, base)  # the first generation after start-up is not counted
        for concurrency, rounds in levels:
            before = process_usage(pid).cpu_seconds
            row = flow._level_row(setup, fake, [(base, pid)], concurrency, rounds)
            cpu = process_usage(pid).cpu_seconds - before
            print(
                json.dumps({"level": concurrency, "cpu_ms": cpu * 1000 / (concurrency * rounds), "row": row})
            )


def _tables(runs: list[dict[str, Any]], checkouts: list[str]) -> str:
    lines = []
    for level in sorted({int(run["level"]) for run in runs}):
        lines += [
            f"\n### {level} at once\n",
            "| checkout | runs | CPU ms a generation | overhead p50 | overhead p95 | before model p50 "
            "| after model p50 | first scene beyond model p50 | first scene lag p95 |",
            "|---|---:|---|---|---|---|---|---|---|",
        ]
        for checkout in checkouts:
            mine = [run for run in runs if run["checkout"] == checkout and run["level"] == level]
            if not mine:
                continue
            figures = [_figures(str(run["row"])) for run in mine]
            cells = [_spread([float(run["cpu_ms"]) for run in mine])]
            cells.append(_spread([f["overhead"][0] for f in figures]))
            cells.append(_spread([f["overhead"][1] for f in figures]))
            cells += [_spread([f[name][0] for f in figures]) for name in ("before", "after", "scene")]
            lags = [f["scene lag"][1] for f in figures if "scene lag" in f]
            cells.append(_spread(lags) if lags else "-")
            lines.append(f"| {checkout} | {len(mine)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _figures(row: str) -> dict[str, list[float]]:
    """bench.flow's level row: its p50 / p95 / max cells, after concurrency, processes, runs, errors and
    before CPU and RSS."""
    cells = [cell.strip() for cell in row.strip("|").split("|")][4:-2]
    names = _FIGURES if len(cells) == len(_FIGURES) else _FIGURES_BEFORE
    return {name: [float(x) for x in cell.split(" / ")] for name, cell in zip(names, cells, strict=True)}


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.0f} ({min(values):.0f}-{max(values):.0f})"


if __name__ == "__main__":
    main()
