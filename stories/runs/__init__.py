"""Durable generation runs: the per-run event log, the runner that feeds it, and following a run.

A run's events go through one log (``stories.runs.log``) with an address each (``run_id``, ``seq``);
every interface (the socket, SSE, the blocking REST views and the command) follows that log rather
than the pipeline itself, so a run outlives whoever asked for it (docs/generation.md, "Durable runs").
"""
