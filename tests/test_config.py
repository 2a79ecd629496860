"""Configs compose through Hydra, and every mistake names the key that is wrong."""

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from mmkd.config import ConfigError, RecipeConfig, to_run_config
from mmkd.data_builders.sources import SourceError, check_sources
from tests.conftest import REPO, composed, micro_run_config, small_data, torchrun

RECIPES = ["baseline", "caption_only", "synthetic_vqa", "pair_caption_v1", "pair_caption_v2", "interleaved"]
RECIPES += sorted(
    p.stem for p in (REPO / "recipes/recipe").glob("caption_*.yaml") if p.stem != "caption_only"
)
# scale_clip10 needs a CLIP directory (tests/test_scale.py builds it with one, and without is an error).
RECIPES += sorted(p.stem for p in (REPO / "recipes/recipe").glob("scale_*.yaml") if p.stem != "scale_clip10")


@pytest.mark.parametrize("model", sorted(p.stem for p in (REPO / "recipes/model").glob("*.yaml")))
def test_every_model_file_composes_and_validates(model, tmp_path):
    """A named size is read only when someone trains it: a misspelt key or a bad value in its file
    must fail here, not minutes into a run (the tests train discrete_micro, not discrete_tiny). A LoRA
    model is refused without the pretrained decoder it adapts, so it gets the config.json of one of
    the file's shape (its weights are not read here), whose shape then leaves the file's unchanged."""
    size = OmegaConf.load(REPO / "recipes/model" / f"{model}.yaml")
    init = []
    if size.get("tune") == "lora":
        config = {
            "hidden_size": size.width,
            "num_hidden_layers": size.layers,
            "num_attention_heads": size.heads,
            "num_key_value_heads": size.kv_heads,
            "intermediate_size": size.ffn,
            "rms_norm_eps": size.norm_eps,
            "rope_theta": size.rope_theta,
        }
        (tmp_path / "config.json").write_text(json.dumps(config))
        init = [f"model.init_decoder={tmp_path}"]
    cfg = to_run_config(composed(f"model={model}", *init))
    assert cfg.model.name == model
    assert {k: getattr(cfg.model, k) for k in size if k != "rope_scaling"} == dict(size)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_and_sums_to_one(recipe):
    cfg = to_run_config(composed(f"recipe={recipe}"))
    assert cfg.recipe.name == recipe and cfg.run_dir == f"runs/{recipe}/seed0"
    assert abs(sum(cfg.recipe.active().values()) - 1) < 1e-9
    check_sources(cfg.recipe.name, cfg.recipe.sources(), cfg)  # every source is buildable


def test_the_papers_protocol_is_the_default_and_pretrain_keeps_the_former_runs():
    """protocol=instruct (default): world foundations, seed 000's rate, the common instruction stage on
    the world's instruction data; a recipe's own SFT data and the smoke models' scratch start win;
    protocol=pretrain is how the committed tables before docs/protocol.md were made."""

    def settings(*overrides):
        cfg = to_run_config(composed(*overrides))
        return cfg.model.init, cfg.train.lr, cfg.recipe.sft_fraction, cfg.recipe.plan()[-1].mixture

    assert settings("recipe=baseline") == ("world", 2e-4, 0.2, {"instruct": 1.0})
    assert settings("recipe=pair_caption_v2", "model=discrete_tiny")[:3] == ("world", 2e-4, 0.2)
    assert settings("recipe=scale_top10") == ("world", 2e-4, 0.2, {"scale": 1.0})
    assert settings("recipe=baseline", "model=micro", "train=smoke")[0] == "scratch"
    assert settings("recipe=baseline", "protocol=pretrain")[:3] == ("scratch", 1e-3, 0.0)
    assert settings("recipe=scale_top10", "protocol=pretrain")[2:] == (0.2, {"scale": 1.0})
    assert settings("recipe=baseline", "train.lr=5e-4", "recipe.sft_fraction=0.1")[1:3] == (5e-4, 0.1)


def test_the_smoke_config_brings_a_small_world_of_its_own_and_the_command_line_still_wins():
    """train=smoke runs in seconds after install because it does not build the full world: its data
    settings give a world directory of their own (a full world beside it is never rebuilt small), the
    training keys stay quickstart's but for the budget, and an explicit data key still wins. A
    discrete smoke run trains a short visual tokenizer (35 s from a fresh install, not 5 minutes)."""
    from mmkd.data_builders.sources import world_dir

    smoke = to_run_config(composed("recipe=baseline", "model=micro", "train=smoke"))
    full = to_run_config(composed("recipe=baseline", "model=micro"))
    assert sum(smoke.data.sizes.values()) * 20 < sum(full.data.sizes.values())
    assert smoke.data.bench_per_ability < full.data.bench_per_ability
    assert world_dir(smoke.data) != world_dir(full.data)
    assert smoke.train.budget_samples == 512 and smoke.train.lr == full.train.lr
    assert smoke.data.world == full.data.world  # the same world, fewer samples of it
    # The discrete models' world visual tokenizer (a foundation) trains for a few steps.
    discrete = to_run_config(composed("model=discrete_micro", "train=smoke"))
    default = to_run_config(composed("model=discrete_micro"))
    assert discrete.foundations.visual_tokenizer_steps * 10 < default.foundations.visual_tokenizer_steps
    explicit = to_run_config(composed("train=smoke", "data.bench_per_ability=20", "data.sizes.text=50"))
    assert (explicit.data.bench_per_ability, explicit.data.sizes["text"]) == (20, 50)


def test_child_recipes_state_only_their_difference():
    base = to_run_config(composed("recipe=baseline")).recipe.active()
    v2 = to_run_config(composed("recipe=pair_caption_v2")).recipe.active()
    assert base == {"caption0": 0.28, "vqa0": 0.17, "text": 0.40, "other": 0.15}
    assert v2 == {"pair_caption": 0.28, "vqa0": 0.17, "text": 0.40, "other": 0.15}


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"train": {"lrr": 1}}, "train.lrr"),
        ({"model": {"width": "wide"}}, "model.width"),
        ({"data": {"world": {"colours": 3}}}, "data.world.colours"),
    ],
)
def test_unknown_keys_and_bad_types_name_the_key(cfg, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_run_config(cfg)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"recipe": {"mixture": {"caption0": 0.5, "text": 0.4}}}, "sum to 0.9000"),
        ({"recipe": {"mixture": {"caption0": -0.1, "text": 1.1}}}, r"recipe\.mixture\.caption0=-0\.1"),
        ({"model": {"kv_heads": 3}}, r"model\.kv_heads=3"),
        ({"model": {"image_size": 50}}, r"model\.image_size=50"),
        ({"train": {"global_batch": 64, "micro_batch": 24}}, r"train\.global_batch=64"),
        ({"eval": {"abilities": ["existence", "telepathy"]}}, "telepathy"),
        ({"data": {"world": {"max_objects": 12}}}, r"world\.max_objects=12"),
        ({"train": {"packing": True}}, r"train\.packing=true needs train\.budget_tokens"),
        ({"train": {"budget_tokens": 10**6}}, r"train\.budget_tokens=1000000 needs train\.packing=true"),
        ({"train": {"engine": "deepspeed", "zero_stage": 4}}, r"train\.zero_stage=4"),
        ({"eval": {"judge_url": "http://127.0.0.1:8001/v1"}}, r"eval\.judge_model='': set both"),
        ({"data": {"world": {"holdout_fraction": 1.0}}}, r"world\.holdout_fraction=1\.0"),
        ({"eval": {"noise_checkpoints": 1}}, r"eval\.noise_checkpoints=1: must be 0 \(off\) or in 2\.\."),
        ({"eval": {"noise_checkpoints": 4}}, r"in 2\.\.train\.keep_checkpoints \+ 1 = 3"),
    ],
)
def test_bad_values_are_rejected_before_compute(cfg, message):
    valid = {"recipe": {"name": "t", "mixture": {"caption0": 0.5, "text": 0.5}}}
    with pytest.raises(ConfigError, match=message):
        to_run_config(OmegaConf.merge(valid, cfg))


def test_sources_are_checked_before_compute():
    cfg = to_run_config(composed("recipe=caption_only"))
    check_sources(cfg.recipe.name, sorted(cfg.recipe.active()), cfg)  # caption1 is buildable
    with pytest.raises(SourceError, match="unknown source 'captoin0'"):
        check_sources("mine", ["captoin0"], cfg)
    real = to_run_config(composed("+data.sources.caption1=/nonexistent"))
    with pytest.raises(SourceError, match=r"data\.sources\.caption1="):
        check_sources("mine", ["caption1"], real)
    no_input = to_run_config(composed("recipe=caption_only"))
    del no_input.build.inputs["caption1"]
    with pytest.raises(SourceError, match=r"build\.inputs has no entry.*build\.inputs\.caption1"):
        check_sources("mine", ["caption1"], no_input)
    loop = to_run_config(composed("build.inputs.caption1=vqa1"))
    with pytest.raises(SourceError, match=r"build\.inputs loops: caption1 -> vqa1 -> caption1"):
        check_sources("mine", ["caption1"], loop)


def test_a_dataset_no_weight_uses_is_named(tmp_path):
    """+data.sources.foo=DIR with no weight for foo (a typo in the mixture, say) would train without it."""
    from mmkd.shards import ShardWriter

    with ShardWriter(tmp_path / "coco", "coco", {"builder": "test"}):
        pass
    cfg = to_run_config(composed(f"+data.sources.cocoo={tmp_path / 'coco'}"))
    with pytest.raises(SourceError, match=r"data\.sources\.cocoo is used by no weight of the mixture"):
        check_sources(cfg.recipe.name, cfg.recipe.sources(), cfg)
    reads = to_run_config(composed("recipe=caption_only", f"+data.sources.photos={tmp_path / 'coco'}"))
    reads.build.inputs["caption1"] = "photos"  # read by a builder the recipe needs: used
    reads.annotator.backend = "openai"
    check_sources(reads.recipe.name, reads.recipe.sources(), reads)


def test_world_oracle_refuses_real_images(tmp_path):
    from PIL import Image

    from mmkd.schema import Sample
    from mmkd.shards import ShardWriter

    with ShardWriter(tmp_path / "coco", "coco", {"builder": "test"}) as w:
        w.write(Sample("a", "caption", "coco", [Image.new("RGB", (8, 8))], "a cat", caption_tag="COCO"))
    cfg = to_run_config(
        composed(
            "recipe=pair_caption_v2",
            f"+data.sources.photos={tmp_path / 'coco'}",
            "build.inputs.pair_caption=photos",
        )
    )
    with pytest.raises(SourceError, match=r"world oracle.*annotator=openai"):
        check_sources(cfg.recipe.name, ["pair_caption"], cfg)
    cfg.annotator.backend = "openai"
    check_sources(cfg.recipe.name, ["pair_caption"], cfg)


def test_cli_rejects_a_misspelt_key_and_an_annotated_recipe_without_compute(tmp_path):
    def cli(*args):
        return subprocess.run(
            [
                sys.executable,
                str(REPO / "launch/train.py"),
                f"run_dir={tmp_path}/r",
                f"data.root={tmp_path}/data",
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    # Hydra's own errors are six lines or a listing of every recipe: each is one line naming what is near.
    bad = cli("train.lrr=1")
    assert bad.returncode == 1 and bad.stderr == (
        "config error: train.lrr: no key 'lrr' in train (did you mean lr?); "
        "+train.lrr=... adds a key the schema does not have\n"
    )
    group = cli("-m", "recipe=baseline,caption_onli", "seed=0,1")
    assert group.returncode == 1 and group.stderr.splitlines() == [
        "config error: recipe=caption_onli: no such recipe "
        "(did you mean caption_only or caption_ssc or caption_dsc?)"
    ]
    assert cli("modle=tiny").stderr.startswith(
        "config error: modle: no key 'modle' in the config (did you mean model?)"
    )
    # Under torchrun every rank reads the same config: the job says it once.
    ranks = subprocess.run(
        [sys.executable, *torchrun(2), str(REPO / "launch/train.py"), "train.lrr=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ranks.returncode != 0 and ranks.stderr.count("config error: train.lrr") == 1
    typo = cli("+train.lrr=1")
    assert typo.returncode != 0 and "config error: config key 'train.lrr'" in typo.stderr
    oracle_on_photos = cli("recipe=pair_caption_v2", f"+data.sources.caption0={tmp_path}/none")
    assert oracle_on_photos.returncode != 0 and "data.sources.caption0=" in oracle_on_photos.stderr
    assert not (tmp_path / "data").exists()  # failed before building anything


def test_own_data_replaces_the_world_mixture_and_a_users_recipe_folder_is_found(tmp_path):
    """recipe=own_data starts from no source and no world instruction stage, so a user's datasets are
    the whole mixture; without one the error says how to add it. A recipe folder of the user's own
    (hydra.searchpath, the way a wheel install adds recipes) is read, checked and named in errors."""
    own = to_run_config(
        composed("recipe=own_data", "+recipe.mixture.mine=1", f"+data.sources.mine={tmp_path}")
    )
    assert own.recipe.active() == {"mine": 1.0} and [s.name for s in own.recipe.plan()] == ["all"]
    empty = r"recipe\.mixture has no source with a weight; .*\+recipe\.mixture\.NAME=WEIGHT"
    with pytest.raises(ConfigError, match=empty):
        to_run_config(composed("recipe=own_data"))

    (tmp_path / "mine/recipe").mkdir(parents=True)
    (tmp_path / "mine/recipe/half_text.yaml").write_text(
        "name: half_text\nmixture:\n  vqa0: 0.5\n  text: 0.5\n"
    )

    def cli(*args):
        command = [sys.executable, str(REPO / "launch/train.py"), *args, "--cfg", "job"]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)

    search = f"hydra.searchpath=[file://{tmp_path / 'mine'}]"
    found = cli(search, "recipe=half_text")
    assert found.returncode == 0, found.stderr
    assert OmegaConf.create(found.stdout).recipe.mixture == {"vqa0": 0.5, "text": 0.5}  # nothing inherited
    assert cli(search, "recipe=half_txt").stderr == (
        "config error: recipe=half_txt: no such recipe (did you mean half_text?)\n"
    )
    missing = cli("hydra.searchpath=[file:///no/such/folder]", "recipe=half_text")
    assert missing.stderr.startswith("config error: hydra.searchpath: file:///no/such/folder is not a folder")


def test_recipe_validate_directly():
    with pytest.raises(
        ConfigError, match=r"recipe.weight_unit='bytes': must be one of \['samples', 'tokens'\]"
    ):
        RecipeConfig(mixture={"a": 1.0}, weight_unit="bytes").validate()
    assert RecipeConfig(mixture={"a": 1.0}, weight_unit="tokens").validate().weight_unit == "tokens"


def test_a_saved_config_loads_back_with_its_mixtures_whole():
    """A checkpoint's config (asdict) is complete: its SFT mixture must not gain the default's sources
    (vqa0, other) when it is read back for eval-only or export."""
    from dataclasses import asdict

    sft = {"vqa0": 0, "other": 0, "scale": 1}
    cfg = to_run_config({"recipe": {"mixture": {"text": 1.0}, "sft_fraction": 0.2, "sft_mixture": sft}})
    cfg.recipe.sft_mixture = {"scale": 1.0}  # as a recipe built in Python states it
    again = to_run_config(asdict(cfg))
    assert again.recipe.sft_mixture == {"scale": 1.0} and again.recipe.plan() == cfg.recipe.plan()


def test_group_files_list_every_typed_field():
    """Hydra overrides only reach keys present in the YAML, so each group file names every field."""
    from dataclasses import fields

    from mmkd.annotators import AnnotatorConfig
    from mmkd.config import BuildConfig, DataConfig, EvalConfig, TrainConfig
    from mmkd.model.config import ModelConfig

    cfg = composed()
    for key, schema in (
        ("model", ModelConfig),
        ("data", DataConfig),
        ("train", TrainConfig),
        ("eval", EvalConfig),
        ("annotator", AnnotatorConfig),
        ("build", BuildConfig),
    ):
        missing = {f.name for f in fields(schema)} - set(cfg[key])
        assert not missing, f"recipes/{key}/ lacks {missing}"


def test_the_micro_batch_follows_the_world_size_and_a_bad_split_stops_before_any_build(tmp_path):
    """The default micro-batch (0) is the global batch over the ranks, so the README's torchrun
    commands run as written; a split that cannot work is refused before any data is built."""
    from mmkd.config import TrainConfig, micro_batch_for
    from mmkd.distributed import DistInfo
    from mmkd.launch._pipeline import run

    assert [micro_batch_for(TrainConfig(global_batch=32), n) for n in (1, 2, 4)] == [32, 16, 8]
    assert micro_batch_for(TrainConfig(global_batch=32, micro_batch=8), 2) == 8
    cfg = micro_run_config(small_data(tmp_path / "data"), tmp_path / "r", global_batch=32, micro_batch=32)
    with pytest.raises(ConfigError, match=r"micro_batch x world size \(32 x 2\); train\.micro_batch=0"):
        run(cfg, DistInfo(rank=0, world_size=2))
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.lr", -1, r"train\.lr=-1\.0: must be > 0"),
        ("train.lr", float("inf"), r"train\.lr=inf: must be > 0 and finite"),
        ("train.grad_clip", float("nan"), r"train\.grad_clip=nan: must be > 0"),
        ("train.beta1", 1.5, r"train\.beta1=1\.5: must be in \[0, 1\)"),
        ("train.eps", -1, r"train\.eps=-1\.0: must be > 0"),
        ("train.micro_batch", -2, r"train\.micro_batch=-2"),
        ("build.shard", "5/4", r"build\.shard='5/4': must be i/n with 0 <= i < n"),
        ("build.limit", -5, r"build\.limit=-5: must be >= 0"),
        ("eval.batch_size", 0, r"eval\.batch_size=0: must be >= 1"),
    ],
)
def test_out_of_range_values_are_named_before_any_compute(key, value, message):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=message):
        to_run_config({"recipe": {"mixture": {"vqa0": 1.0}}, section: {name: value}})


def test_an_error_after_an_open_progress_bar_starts_its_own_line(tmp_path):
    """In a log file a progress bar is redrawn with carriage returns and no newline: the one-line
    report must not run into it."""
    script = (
        "import sys\nfrom tqdm import tqdm\nfrom mmkd.errors import ConfigError, reported\n"
        "with reported():\n    tqdm(total=10, file=sys.stderr).update(3)\n"
        "    raise ConfigError('train.lr=5: too high')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 1
    assert "config error: train.lr=5: too high" in out.stderr.split("\n")  # a line of its own
