"""Benchmarks, run by `make bench` (bench/run_all.py). Never timed assertions in tests."""
