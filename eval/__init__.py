"""Benchmark runners and the comparison report. Installed as `mmkd.eval` (see pyproject.toml)."""
