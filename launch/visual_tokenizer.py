"""Train the discrete model's visual tokenizer on world renders (resumable; the same command resumes).

    python launch/visual_tokenizer.py out=data/visual_tokenizer
    python launch/visual_tokenizer.py out=DIR steps=4000 model.codebook_size=512 model.downsample=4

Writes `<out>/tokenizer/` (config.json, model.safetensors, metrics.json) and prints the metrics:
reconstruction error, codebook usage and perplexity, and the share of scene objects the scene reader
still finds in reconstructions of held-out renders (mmkd/visual_tokenizer_training.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmkd.config import ConfigError
from mmkd.errors import reported
from mmkd.launch._arguments import parse
from mmkd.visual_tokenizer_training import TokenizerTraining, train_tokenizer

USAGE = (
    "usage: python launch/visual_tokenizer.py out=DIR [steps=N batch=N lr=X seed=N model.KEY=V world.KEY=V]"
)


def main(argv: list[str] | None = None) -> None:
    """`argv` defaults to the command line: the console script `mmkd-visual-tokenizer` calls main()."""
    args = parse(argv, USAGE, __doc__, required=["out"])
    out = Path(args.pop("out"))
    with reported():
        try:
            cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TokenizerTraining), args))
            cfg.model.validate()
        except (OmegaConfBaseException, ValueError) as e:
            raise ConfigError(str(e).splitlines()[0]) from None
        metrics = train_tokenizer(cfg, out)
    print(json.dumps(metrics, indent=2))
    print(f"tokenizer: {out / 'tokenizer'}")


if __name__ == "__main__":
    main()
