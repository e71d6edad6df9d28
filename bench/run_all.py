"""Run every benchmark in sequence: `make bench` (python -m bench.run_all)."""

from __future__ import annotations

import importlib

# One module per benchmark, each with a main() that prints its table and writes bench/results/.
BENCHMARKS = [
    "bench.personas_contexts",
    "bench.flow",
    # K=200 on one process, then K=400 on two under `make serve`'s supervisor, 60 s each.
    "bench.steady",
    "bench.parallel_mode",
    "bench.exports",
    "bench.run_log",
    "bench.run_replay",
    "bench.stream_cpu",
    "bench.run_writes",
    "bench.http_client",
]


def main() -> None:
    for name in BENCHMARKS:
        print(f"\n=== {name}", flush=True)
        importlib.import_module(name).main()


if __name__ == "__main__":
    main()
