"""Helper for tests/test_train.py (not a test): launch/train.py with rank 0's periodic evaluation made
slower (a sleep of SLOW_EVAL_S seconds) than the process group's collective timeout.

    torchrun --nproc_per_node=2 tests/slow_rank0_train.py [launch/train.py overrides...]
"""

import os
import runpy
import sys
import time
from pathlib import Path

import mmkd.launch._pipeline

evaluate_checkpoint = mmkd.launch._pipeline.evaluate_checkpoint


def slow_evaluate_checkpoint(*args, **kwargs):
    time.sleep(float(os.environ["SLOW_EVAL_S"]))
    return evaluate_checkpoint(*args, **kwargs)


mmkd.launch._pipeline.evaluate_checkpoint = slow_evaluate_checkpoint
script = Path(__file__).resolve().parents[1] / "launch" / "train.py"
sys.argv = [str(script), *sys.argv[1:]]
runpy.run_path(str(script), run_name="__main__")
