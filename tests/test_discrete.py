"""The discrete model (seed 003): factorised visual embeddings from the codebook, LoRA that trains
exactly the intended parameters, the objective's knobs on hand-made samples, constrained generation
through the KV cache, a whole run with both evaluations, export to transformers, the paper-scale
config on the meta device, and every tensor on the configured device."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from mmkd.config import ConfigError, to_run_config
from mmkd.data_builders.sources import source_dirs
from mmkd.discrete_templates import DiscreteTemplates
from mmkd.distributed import DistInfo
from mmkd.engines.base import Engine
from mmkd.errors import DataError
from mmkd.eval.image_generation import generate_codes, markdown, prompt_gain, score_image, visual_losses
from mmkd.launch._pipeline import run
from mmkd.model.build import model_on_meta
from mmkd.model.discrete import DiscreteVLM
from mmkd.model.lora import trainable_share, trains
from mmkd.model.visual_tokenizer import VisualTokenizer, VQConfig
from mmkd.objective import objective_for
from mmkd.schema import Sample
from mmkd.templates import IGNORE
from mmkd.trainer import accumulate_gradients, build_model
from mmkd.visual_tokenizer_training import TokenizerTraining, train_tokenizer
from mmkd.world.read import truth
from mmkd.world.scene import WorldConfig, sample_scene
from tests.conftest import REPO, hf_llama, model_config
from tests.fake_device import FakeDevice
from tests.html_page import read_page

N = 36  # discrete_micro: 6 x 6 visual ids per image


@pytest.fixture(scope="session")
def visual_tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("visual_tokenizer")
    shape = VQConfig(downsample=8, width=16, codebook_size=64)
    train_tokenizer(TokenizerTraining(model=shape, steps=4, batch=8, eval_images=8), out)
    return out / "tokenizer"


def discrete_config(data, run_dir, visual_tokenizer, model=None, **train):
    cfg = to_run_config(
        {
            "run_dir": str(run_dir),
            "model": {
                **OmegaConf.to_container(OmegaConf.load(REPO / "recipes/model/discrete_micro.yaml")),
                "visual_tokenizer": str(visual_tokenizer),
                **(model or {}),
            },
            "recipe": OmegaConf.load(REPO / "recipes/recipe/baseline.yaml"),
            "train": {"budget_samples": 64, "global_batch": 16, "micro_batch": 8, "log_every": 1, **train},
            "eval": {
                "max_items": 3,
                "abilities": ["existence", "captioning"],
                "generation_prompts": 6,
                "html": False,
            },
        }
    )
    cfg.data = data
    return cfg


def caption(codes: list[int], text: str = "a red circle") -> Sample:
    return Sample(
        id="hand-made",
        kind="caption",
        source="caption0",
        images=[None],
        text=text,
        metadata={"visual_ids": [codes]},
    )


def test_visual_embeddings_start_as_codebook_times_projection(world, tokenizer, tmp_path, visual_tokenizer):
    cfg = discrete_config(world[0], tmp_path, visual_tokenizer)
    model = build_model(cfg, tokenizer)
    codebook = VisualTokenizer.from_pretrained(visual_tokenizer).codebook
    assert torch.equal(model.visual_codes.weight, codebook)
    ids = torch.arange(64)[None] + model.vocab.first_code
    rows = model.embed(ids)[0]
    assert torch.allclose(rows, codebook @ model.visual_proj.weight.T, atol=1e-6)
    assert model.lm_head.weight.shape == (tokenizer.vocab_size + 2 + 64, 32)


def test_meta_built_model_matches_one_built_directly(world, tokenizer, tmp_path, visual_tokenizer):
    """Materialising replays every draw, LoRA's included, so every engine starts from the same weights."""
    llama = tmp_path / "llama"
    hf_llama(model_config("discrete_micro"), tokenizer.vocab_size, tie=True, out=llama)
    cfg = discrete_config(world[0], tmp_path, visual_tokenizer, {"tune": "lora", "init_decoder": str(llama)})
    cfg.model.vocab_size = tokenizer.vocab_size
    torch.manual_seed(cfg.seed)
    direct = DiscreteVLM(cfg.model, tokenizer.image_id)
    from mmkd.model.lora import apply_lora

    apply_lora(direct, cfg.model.lora_rank, cfg.model.lora_alpha)
    from mmkd.materialize import materialize

    meta = model_on_meta(cfg.model, tokenizer.image_id)
    materialize(meta, torch.device("cpu"), cfg.seed)
    a, b = direct.state_dict(), meta.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_trains_exactly_the_new_vocabulary_adapters_norms_and_head(
    world, tokenizer, tmp_path, visual_tokenizer
):
    llama = tmp_path / "llama"
    hf = hf_llama(model_config("discrete_micro"), tokenizer.vocab_size, tie=True, out=llama)
    cfg = discrete_config(world[0], tmp_path, visual_tokenizer, {"tune": "lora", "init_decoder": str(llama)})
    cfg.model.vocab_size = tokenizer.vocab_size
    model = build_model(cfg, tokenizer)
    # The pretrained decoder sits under the adapters; the untied head starts from its tied embeddings.
    q = model.decoder.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(q, hf.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(model.lm_head.weight[: tokenizer.vocab_size], hf.model.embed_tokens.weight)
    templates = DiscreteTemplates(tokenizer, cfg.model, 0)
    enc = templates.encode(caption(list(range(N))))
    ids, labels = torch.tensor([enc.input_ids]), torch.tensor([enc.labels])
    model.lm_head.weight.data.normal_()  # so every trainable part has a non-zero gradient path
    for m in model.modules():
        if hasattr(m, "lora_B"):
            m.lora_B["default"].weight.data.normal_()
    sums, _ = model(ids, labels=labels)
    sums.sum().backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    want = {n for n, _ in model.named_parameters() if trains(n)}
    assert got == want
    assert {"marker_embed.weight", "visual_codes.weight", "visual_proj.weight", "lm_head.weight"} <= got
    assert not any("base_layer" in n or "embed_tokens" in n for n in got)
    share = trainable_share(model)
    assert share["trainable"] == sum(p.numel() for n, p in model.named_parameters() if n in want)


def test_paper_scale_config_builds_on_meta_with_under_8_percent_trainable():
    cfg = model_config("discrete_7b")
    cfg.vocab_size = 32000  # LLaMA-2's tokenizer
    model = model_on_meta(cfg.validate(), image_token_id=3)
    share = trainable_share(model)
    assert all(p.is_meta for p in model.parameters())
    assert 6.5e9 < share["total"] < 7.2e9 and 0.01 < share["fraction"] < 0.08
    assert model.lm_head.weight.shape == (32000 + 2 + 16384, 4096) and model.visual_codes.weight.shape == (
        16384,
        32,
    )


@pytest.mark.parametrize(
    ("image_first", "mask_prob", "dropout", "text_loss", "visual_loss", "has_text"),
    [
        (1.0, 1.0, 0.0, True, False, True),  # image-first, masked: only the caption
        (1.0, 0.0, 0.0, True, True, True),  # image-first, unmasked: caption and codes
        (0.0, 1.0, 0.0, False, True, True),  # text-first, masked: only the codes
        (0.0, 0.0, 0.0, True, True, True),  # text-first, unmasked: both
        (0.0, 0.0, 1.0, False, True, False),  # text-first, caption dropped: the unconditional image
    ],
)
def test_template_and_mask_prob_choose_the_supervised_tokens(
    tokenizer, image_first, mask_prob, dropout, text_loss, visual_loss, has_text
):
    cfg = model_config("discrete_micro")
    cfg.vocab_size = tokenizer.vocab_size
    cfg.image_first_prob, cfg.mask_prob, cfg.caption_dropout = image_first, mask_prob, dropout
    t = DiscreteTemplates(tokenizer, cfg, seed=0)
    codes = [(7 * i) % 64 for i in range(N)]
    enc = t.encode(caption(codes))
    text = tokenizer.encode("a red circle")
    vocab = t.vocab
    span = [vocab.img, *(c + vocab.first_code for c in codes), vocab.end_img]
    body = ([*span, *text] if image_first else [*text, *span]) if has_text else span
    assert enc.input_ids == [tokenizer.bos_id, *body, tokenizer.eos_id]
    supervised = [i for i, label in zip(enc.input_ids, enc.labels, strict=True) if label != IGNORE]
    want = ([*text] if text_loss else []) + ([c + vocab.first_code for c in codes] if visual_loss else [])
    assert sorted(supervised) == sorted([*want, tokenizer.eos_id])  # the markers are never targets


def test_visual_loss_scale_weighs_the_visual_mean(world, tokenizer, tmp_path, visual_tokenizer):
    """L = alpha * mean over visual targets + mean over text targets, each over the whole batch."""
    cfg = discrete_config(world[0], tmp_path, visual_tokenizer, {"mask_prob": 0.0})
    model = build_model(cfg, tokenizer)
    t = DiscreteTemplates(tokenizer, cfg.model, 0)
    encs = [t.encode(caption([(i + k) % 64 for i in range(N)], text="a big blue star")) for k in range(3)]
    length = max(len(e) for e in encs)
    ids = torch.full((3, length), tokenizer.pad_id)
    labels = torch.full((3, length), IGNORE)
    for b, e in enumerate(encs):
        ids[b, : len(e)], labels[b, : len(e)] = torch.tensor(e.input_ids), torch.tensor(e.labels)
    batch = {"input_ids": ids, "labels": labels, "pixels": None}
    sums, counts = model(ids, labels=labels)
    assert counts.tolist() == objective_for(cfg.model).counts(labels).tolist() and int(counts[1]) == 3 * N
    for alpha in (0.1, 0.0, 1.0):
        cfg.model.visual_loss_scale = alpha
        got = accumulate_gradients(Engine(model, None), [batch], objective=objective_for(cfg.model))
        text, visual = (sums / counts).tolist()
        assert got["loss"] == pytest.approx(text + alpha * visual, rel=1e-5)
        assert got["loss_text"] == pytest.approx(text, rel=1e-5) and got["loss_visual"] == pytest.approx(
            visual
        )
        model.zero_grad()


def test_samples_without_visual_ids_are_named(tokenizer):
    cfg = model_config("discrete_micro")
    t = DiscreteTemplates(tokenizer, cfg, seed=0)
    with pytest.raises(DataError, match="sample 'hand-made' of source 'caption0' has no visual ids"):
        t.encode(Sample(id="hand-made", kind="caption", source="caption0", images=[None], text="x"))
    with pytest.raises(DataError, match="visual id 64 outside the codebook of 64"):
        t.encode(caption([64] * N))


def test_constrained_generation_gives_n_codes_and_the_cache_matches_full_recompute(
    world, tokenizer, tmp_path, visual_tokenizer
):
    cfg = discrete_config(world[0], tmp_path, visual_tokenizer)
    model = build_model(cfg, tokenizer).eval()
    t = DiscreteTemplates(tokenizer, cfg.model, 0)
    texts = ["a small red circle at the top left", "a blue star"]
    greedy = generate_codes(model, t, texts)
    assert greedy.shape == (2, N) and int(greedy.min()) >= 0 and int(greedy.max()) < 64
    # Without a cache: the whole sequence again at each step, argmax over the codes.
    for b, text in enumerate(texts):
        ids = t.generation_prompt(text)
        for _ in range(N):
            logits = model(torch.tensor([ids]))[0, -1, model.vocab.first_code :]
            ids.append(int(logits.argmax()) + model.vocab.first_code)
        assert [i - model.vocab.first_code for i in ids[-N:]] == greedy[b].tolist()
    guided = generate_codes(model, t, texts, scale=3.0, temperature=1.0, top_k=5, generator=torch.Generator())
    assert guided.shape == (2, N) and int(guided.max()) < 64
    assert torch.equal(generate_codes(model, t, texts, scale=1.0), greedy)


def test_prompt_gain_is_the_paired_drop_in_teacher_forced_visual_loss(
    world, tokenizer, tmp_path, visual_tokenizer
):
    cfg = discrete_config(world[0], tmp_path, visual_tokenizer)
    model = build_model(cfg, tokenizer).eval()
    t = DiscreteTemplates(tokenizer, cfg.model, 0)
    texts = ["a small red circle at the top left", "a blue star", ""]  # left-padded to the longest
    codes = torch.randint(64, (3, N), generator=torch.Generator().manual_seed(0))
    for text, row, got in zip(texts, codes, visual_losses(model, t, texts, codes, batch_size=2), strict=True):
        ids = t.generation_prompt(text) + (row + model.vocab.first_code).tolist()  # one row, no padding
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -N - 1 : -1, model.vocab.first_code :]
        assert got == pytest.approx(float(torch.nn.functional.cross_entropy(logits, row)), abs=1e-5)
    gain, per_prompt = prompt_gain(model, t, texts, codes)
    assert gain["score"] == pytest.approx(gain["loss_without_prompt"] - gain["loss_with_prompt"], abs=1e-9)
    assert len(per_prompt) == 3 and gain["score"] == pytest.approx(sum(per_prompt) / 3, abs=1e-12)
    assert prompt_gain(model, t, ["", ""], codes[:2])[1] == [0.0, 0.0]  # no prompt, nothing gained


def test_the_scene_score_is_exact_on_the_truth():
    scene = sample_scene(WorldConfig(), "generation", 3, layout="objects")
    want = truth(scene)
    assert set(score_image(want, want).values()) == {1.0}
    nothing = score_image(type(want)("objects", want.theme), want)
    assert nothing["object_p"] == 0.0 and nothing["object_r"] == 0.0 and nothing["scene_exact"] == 0.0


def test_generation_beats_the_floor_when_the_paired_difference_clears_zero():
    def result(gain: float, ci: float) -> dict:
        return {
            "n": 64,
            "score": 0.2,
            "ci95": 0.05,
            "random_ids": 0.2 - gain,
            "floor_ci95": 0.04,
            "reconstruction": 1.0,
            "real": 1.0,
            "vs_floor": gain,
            "vs_floor_ci95": ci,
        }

    rows = markdown({"object_p": result(0.06, 0.05), "colour_p": result(0.06, 0.07)}, "t").splitlines()
    assert rows[4].endswith("| 6.0 [1.0, 11.0] | yes |")  # the two CIs overlap; the paired one clears 0
    assert rows[5].endswith("| 6.0 [-1.0, 13.0] | no |")


def test_lora_without_a_pretrained_decoder_and_a_tokenizer_of_another_shape_are_refused(
    world, tmp_path, visual_tokenizer
):
    with pytest.raises(ConfigError, match=r"model\.tune=lora trains adapters on a pretrained decoder"):
        discrete_config(world[0], tmp_path, visual_tokenizer, {"tune": "lora"})
    cfg = discrete_config(world[0], tmp_path / "r", visual_tokenizer, {"visual_grid": 12, "max_seq_len": 200})
    with pytest.raises(ConfigError, match=r"downsample=8 \(the model expects 4\)"):
        run(cfg, DistInfo())


def test_a_run_trains_evaluates_both_directions_and_exports_to_transformers(
    world, tokenizer, tmp_path, visual_tokenizer
):
    cfg = discrete_config(world[0], tmp_path / "run", visual_tokenizer)
    cfg.eval.html = True
    results = run(cfg, DistInfo())
    assert set(results) == {"world", "generation"}
    gen = results["generation"]
    assert gen["object_p"]["real"] == 1.0 and gen["scene_exact"]["real"] == 1.0  # the reader's ceiling
    assert {"random_ids", "reconstruction", "ci95", "score"} <= set(gen["colour_p"])
    for measure in ("object_p", "colour_p"):  # paired over the same prompts: a mean of differences
        r = gen[measure]
        assert r["vs_floor"] == pytest.approx(r["score"] - r["random_ids"], abs=1e-12)
    assert (tmp_path / "run" / "eval" / "generation" / "000-generated.png").exists()
    report = (tmp_path / "run" / "eval" / "report.md").read_text()
    assert "random ids (floor)" in report and "Prompt gain (teacher-forced" in report
    assert gen["prompt_gain"]["n"] == 6 and gen["prompt_gain"]["codes_per_image"] == N
    records = [json.loads(line) for line in (tmp_path / "run" / "eval" / "predictions.jsonl").open()]
    gains = [r["score"] for r in records if r["suite"] == "generation" and r["benchmark"] == "prompt_gain"]
    assert len(gains) == 6 and sum(gains) / 6 == pytest.approx(gen["prompt_gain"]["score"], abs=1e-12)
    page = read_page(tmp_path / "run" / "eval" / "report.html")  # the generated images beside their prompts
    assert "Generated images" in page.headings
    generated = [i for i in page.images if i.startswith("report_files/generation/")]
    assert any(i.endswith("-000-generated.png") for i in generated) and any(
        i.endswith("-000-real.png") for i in generated
    )
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss", "loss_text", "loss_visual"} <= set(record)
    mixture = json.loads((tmp_path / "run" / "mixture.json").read_text())
    assert (
        "visual_ids" in mixture["sources"]["caption0"]["path"]
        and "visual_ids" not in mixture["sources"]["text"]["path"]
    )

    from transformers import AutoTokenizer, LlamaForCausalLM

    from mmkd.launch.export import main as export

    export([f"checkpoint={tmp_path / 'run'}", f"out={tmp_path / 'hf'}"])
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    model = build_model(cfg, tokenizer)
    from mmkd.checkpoint import latest_checkpoint, load_checkpoint

    load_checkpoint(latest_checkpoint(tmp_path / "run"), model)
    t = DiscreteTemplates(tokenizer, cfg.model, 0)
    ids = torch.tensor([t.generation_prompt("a red circle") + [model.vocab.first_code + c for c in range(9)]])
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, model(ids), atol=1e-4)
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert len(hf_tok) == model.vocab.size and hf_tok.convert_ids_to_tokens(model.vocab.first_code) == "<v_0>"

    # Eval-only, generation alone with other settings, into a directory of its own.
    from mmkd.launch.eval import main as eval_only

    args = ["abilities=[]", "generation_prompts=5", "cfg_scale=1", f"out={tmp_path / 'gen5'}"]
    eval_only([f"checkpoint={tmp_path / 'run'}", *args])
    again = json.loads((tmp_path / "gen5" / "results.json").read_text())
    assert list(again["suites"]) == ["generation"] and again["suites"]["generation"]["object_p"]["n"] == 5
    assert again["config"]["eval"]["cfg_scale"] == 1.0


def test_discrete_training_and_generation_run_on_the_device(world, tokenizer, tmp_path, visual_tokenizer):
    """On the fake accelerator: any tensor of the discrete path left on the CPU fails the op it meets."""
    data, root = world

    def train_on(device, run_dir):
        from mmkd.data_builders.visual_ids import discrete_sources
        from mmkd.eval.suites import evaluate_checkpoint
        from mmkd.trainer import train

        run_dir.mkdir()
        cfg = discrete_config(data, run_dir, visual_tokenizer, budget_samples=32, checkpoint_every=0)
        sources = source_dirs(sorted(cfg.recipe.active()), cfg, root)  # ids encoded on the device too
        dirs = discrete_sources(sources, visual_tokenizer, run_dir / "ids", cfg.build, device)
        final = train(cfg, dirs, tokenizer, run_dir, DistInfo(device=device))
        cfg.eval.abilities = ["existence"]
        return evaluate_checkpoint(final, cfg, tokenizer, root, run_dir / "eval", "t", False, device)

    cpu = train_on(torch.device("cpu"), tmp_path / "cpu")["generation"]
    with FakeDevice() as device:
        got = train_on(device, tmp_path / "device")["generation"]
        # The sampled codes and what the reader finds match exactly; a loss, to float rounding.
        gain, cpu_gain = got.pop("prompt_gain"), cpu.pop("prompt_gain")
        assert got == cpu
        for key in ("score", "loss_with_prompt", "loss_without_prompt"):
            assert gain[key] == pytest.approx(cpu_gain[key], rel=1e-5)
        embed = DiscreteVLM.embed  # planted: the ids go back to the CPU inside the model
        DiscreteVLM.embed = lambda self, ids, pixels=None: embed(self, ids.cpu(), pixels)
        try:
            with pytest.raises(RuntimeError, match="left behind on the wrong device"):
                train_on(device, tmp_path / "planted")
        finally:
            DiscreteVLM.embed = embed


def test_partial_training_starts_from_a_decoder_trained_on_the_worlds_text(world, tmp_path, visual_tokenizer):
    """docs/discrete.md's chain: a text-only dense run, its decoder exported, the discrete model under
    LoRA on it; the frozen base weights end the run as they started."""
    from mmkd.checkpoint import latest_checkpoint, load_checkpoint
    from mmkd.launch.export import main as export
    from mmkd.tokenizer import Tokenizer
    from tests.conftest import micro_run_config

    text = micro_run_config(world[0], tmp_path / "text_lm", budget_samples=32)
    text.recipe.name, text.recipe.mixture = "text_only", {"text": 1.0}  # recipes/recipe/text_only.yaml
    text.eval.after_train = False
    run(text, DistInfo())
    export([f"checkpoint={tmp_path / 'text_lm'}", f"out={tmp_path / 'exports'}", "format=llama"])
    lora = {"tune": "lora", "init_decoder": str(tmp_path / "exports")}
    cfg = discrete_config(world[0], tmp_path / "lora", visual_tokenizer, lora, budget_samples=32)
    cfg.eval.after_train = False
    run(cfg, DistInfo())
    tokenizer = Tokenizer.from_pretrained(tmp_path / "exports")
    start, end = build_model(cfg, tokenizer), build_model(cfg, tokenizer)
    load_checkpoint(latest_checkpoint(tmp_path / "lora"), end)
    a, b = start.state_dict(), end.state_dict()
    frozen = [k for k in a if not trains(k)]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)
    share = trainable_share(end)
    log = (tmp_path / "lora" / "train.log").read_text()
    assert f"{share['trainable']:,} trainable ({share['fraction']:.1%})" in log
    assert not torch.equal(a["visual_codes.weight"], b["visual_codes.weight"])


@pytest.mark.slow  # two torchrun jobs (~30 s); the engines' equality for the dense model runs by default
def test_lora_under_each_engine_gives_the_same_losses(world, tmp_path, visual_tokenizer):
    """Frozen base weights, adapters and the new vocabulary on two ranks, replicated (DDP) or sharded
    (FSDP2): the same losses, both parts of the objective (their means are global). DeepSpeed ZeRO-2
    gave the same losses by hand (bench/RESULTS.md); its first start compiles for ~40 s."""
    from mmkd.launch.export import main as export
    from tests.conftest import micro_run_config, run_python, torchrun

    data = world[0]
    text = micro_run_config(data, tmp_path / "text_lm", budget_samples=32)
    text.recipe.name, text.recipe.mixture, text.eval.after_train = "text_only", {"text": 1.0}, False
    run(text, DistInfo())
    export([f"checkpoint={tmp_path / 'text_lm'}", f"out={tmp_path / 'lm'}", "format=llama"])
    sizes = [f"data.sizes.{k}={v}" for k, v in data.sizes.items()]
    args = [
        *torchrun(2),
        str(REPO / "launch/train.py"),
        "model=discrete_micro",
        "model.tune=lora",
        f"model.init_decoder={tmp_path / 'lm'}",
        f"model.visual_tokenizer={visual_tokenizer}",
        "train=smoke",
        "train.budget_samples=128",
        "eval.after_train=false",
        f"data.root={data.root}",
        f"data.world.image_size={data.world.image_size}",
        f"data.bench_per_ability={data.bench_per_ability}",
        f"data.vocab_size={data.vocab_size}",
        f"data.samples_per_shard={data.samples_per_shard}",
        *sizes,
    ]

    def losses(engine: str) -> list[float]:
        run_dir = tmp_path / engine
        run_python(
            [*args, f"train.engine={engine}", f"run_dir={run_dir}"], 600, env={"DS_ACCELERATOR": "cpu"}
        )
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)[k] for x in lines for k in ("loss", "loss_text", "loss_visual")]

    assert losses("fsdp2") == pytest.approx(losses("ddp"), rel=1e-4)


def test_mmgic_documents_train_the_discrete_model_on_visual_ids_of_images_and_regions(
    world, tmp_path, visual_tokenizer
):
    cfg = discrete_config(world[0], tmp_path / "run", visual_tokenizer, model={"max_seq_len": 400})
    cfg.recipe.name, cfg.recipe.mixture, cfg.recipe.mmgic_parts = "mmgic_cldr", {"mmgic": 1.0}, "cldr"
    cfg.build.min_object_count, cfg.eval.after_train = 1, False
    run(cfg, DistInfo())
    mixture = json.loads((tmp_path / "run" / "mixture.json").read_text())
    ids_dir = mixture["sources"]["mmgic"]["path"]
    assert "visual_ids" in ids_dir
    from mmkd.shards import open_dataset

    sample = next(iter(open_dataset(ids_dir)))
    assert len(sample.metadata["visual_ids"]) == len(sample.images) >= 1  # the image and its regions
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["loss_text"] > 0 and record["loss_visual"] > 0


def test_lora_without_peft_installed_is_named(monkeypatch):
    import sys

    from mmkd.model.lora import apply_lora

    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"model\.tune=lora needs peft: pip install 'mmkd\[lora\]'"):
        cfg = model_config("discrete_micro")
        cfg.vocab_size = 100
        apply_lora(model_on_meta(cfg.validate(), 3), 4, 8.0)
