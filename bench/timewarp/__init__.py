"""Time-warp fleet simulation (issue #8): the real service on a simulated clock,
through years of a fleet's life, with faults; no certificate may expire unnoticed.

`python -m bench.timewarp --stations 10000 --days 730 [--plot FILE]` prints one JSON
line: the scenario, the pass criteria with their figures, and the wall-clock time.
"""
