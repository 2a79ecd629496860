"""Ask a checkpoint about one image, for a quick look: a question, or no question for a caption.

    python launch/ask.py checkpoint=runs/baseline/seed0 image=sign.png question="What word is on the sign?"
    python launch/ask.py checkpoint=runs/baseline/seed0 image=scene.png              # describe it
    python launch/ask.py checkpoint=runs/baseline/seed0/checkpoints/step-00002560 image=scene.png

The model answers greedily, as the benchmarks ask it (a question's answer ends at its line, a caption
at EOS or, with `eval.caption_prompt`, its line); the image is resized to the model's input as in
training. A file that is not an image, or a decompression bomb, is refused in one line.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mmkd.bench_item import BenchItem
from mmkd.checkpoint import check_checkpoint, read_meta
from mmkd.config import ConfigError, saved_run_config
from mmkd.distributed import local_device
from mmkd.errors import reported
from mmkd.eval.inference import generate
from mmkd.eval.suites import load_model
from mmkd.launch._arguments import parse
from mmkd.shards import UNDECODABLE
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import templates_for

USAGE = 'usage: python launch/ask.py checkpoint=PATH image=FILE [question="..."] [max_new_tokens=N]'


def main(argv: list[str] | None = None) -> None:
    """`argv` defaults to the command line: the console script `mmkd-ask` calls main()."""
    args = parse(
        argv,
        USAGE,
        __doc__,
        required=["checkpoint", "image"],
        allowed=["checkpoint", "image", "question", "max_new_tokens"],
    )
    with reported():
        print(
            ask(
                Path(args.checkpoint),
                Path(args.image),
                str(args.get("question", "")),
                int(args.get("max_new_tokens", 40)),
            )
        )


def ask(checkpoint: Path, image_path: Path, question: str, max_new_tokens: int) -> str:
    """The checkpoint's greedy answer to `question` about the image (a caption when empty)."""
    ckpt = check_checkpoint(checkpoint)
    meta = read_meta(ckpt)
    cfg = saved_run_config(meta["config"])
    try:
        with Image.open(image_path) as opened:
            image = opened.convert("RGB")
    except FileNotFoundError:
        raise ConfigError(f"image={image_path}: no such file") from None
    except UNDECODABLE as e:
        raise ConfigError(f"image={image_path}: not a readable image ({type(e).__name__}: {e})") from None
    tokenizer = Tokenizer.from_str(meta["tokenizer"], meta.get("special_tokens"))
    model = load_model(ckpt, cfg, tokenizer, local_device())
    templates = templates_for(cfg, tokenizer)
    item = BenchItem("ask", "ask", "ask", question, "", image=image)
    at_newline = bool(question or templates.caption_prompt)  # as the benchmarks' answers end
    (answer,) = generate(model, templates, [item], 1, max_new_tokens, stop_at_newline=at_newline)
    return answer


if __name__ == "__main__":
    main()
