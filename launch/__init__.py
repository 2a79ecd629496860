"""Entry points, one per pipeline stage: train, build, eval, convert, export, report.

Run from a checkout as `python launch/<stage>.py ...`; installed as `mmkd.launch` (pyproject.toml),
they are also the console scripts `mmkd-<stage>` and `torchrun -m mmkd.launch.train ...`.
"""
