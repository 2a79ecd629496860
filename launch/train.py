"""Train a recipe on its mixture, then evaluate it (the main entry point).

    python launch/train.py recipe=baseline                      # build world data, train, eval, table
    torchrun --nproc_per_node=2 launch/train.py recipe=baseline # 2 ranks (gloo on CPU)
    python launch/train.py -m recipe=baseline seed=0,1,2        # Hydra multirun sweep
    python launch/train.py recipe=baseline model=micro train=smoke   # seconds: check a config runs

Installed from a wheel, the same runs are `mmkd-train recipe=baseline` and
`torchrun --nproc_per_node=2 -m mmkd.launch.train recipe=baseline`; configs come from `mmkd.recipes`.

Outputs go to runs/<recipe>/seed<seed>/: config.yaml, mixture.json, metrics.jsonl, checkpoints/,
eval/results.json and eval/report.md.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from mmkd.config import to_run_config
from mmkd.distributed import init_distributed, shutdown
from mmkd.errors import reported
from mmkd.launch._overrides import check_overrides
from mmkd.launch._pipeline import run
from mmkd.preemption import PREEMPTED_EXIT, Preempted


@hydra.main(config_path="pkg://mmkd.recipes", config_name="config", version_base=None)
def _main(dcfg: DictConfig) -> None:
    try:
        with reported():
            cfg = to_run_config(dcfg)
            run(cfg, init_distributed(cfg.train.dist_timeout_s, cfg.train.wait_timeout_s))
    except Preempted as e:  # saved at a committed checkpoint: the scheduler requeues, the rerun resumes
        print(e, file=sys.stderr)
        sys.exit(PREEMPTED_EXIT)
    finally:
        shutdown()


def main() -> None:
    """The command line's overrides checked in one line each, then Hydra composes and runs them (the
    console script `mmkd-train` calls this)."""
    with reported():
        check_overrides(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
