"""Benchmarks and load generators; not part of the test run (DESIGN.md, bench/).

Each benchmark is a module runnable as ``python -m bench.<name> --help``, prints one JSON
line per result, compares against a baseline measured in the same run (ratios, not
absolute times), is bounded in time and touches only a temporary directory.
"""
