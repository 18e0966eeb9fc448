"""Benchmarks: figures measured beside the bare trio ceiling of the same run.

A package (rather than loose scripts) so every benchmark runs as
``python -m benchmarks.NAME`` from the repository root and can import the shared
helpers in :mod:`benchmarks.report` and the ceiling in :mod:`benchmarks.ceiling`.
"""
