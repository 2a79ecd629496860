import json
from collections import Counter
from itertools import islice

import pytest
import torch

from mmkd.loader import (
    FLAT,
    MixtureDataset,
    MixtureSampler,
    SourceStream,
    flatten,
    make_loader,
    unflatten,
)
from mmkd.schema import Sample, Turn
from mmkd.templates import IGNORE, Templates
from mmkd.world.render import render
from mmkd.world.scene import WorldConfig, sample_scene


def test_sampler_proportions_within_one_percent_over_10k_draws():
    weights = {"caption0": 0.28, "vqa0": 0.17, "text": 0.40, "other": 0.15}
    for seed in range(3):
        sampler = MixtureSampler(weights, seed=seed)
        counts = Counter(next(sampler) for _ in range(10_000))
        for name, w in weights.items():
            assert abs(counts[name] / 10_000 - w) < 0.01, (name, counts)


def test_sampler_is_deterministic_per_seed():
    w = {"a": 0.5, "b": 0.5}
    draw = lambda s: [next(MixtureSampler(w, s)) for _ in range(50)]  # noqa: E731
    assert draw(1) == draw(1) and draw(1) != draw(2)


def _ids(root, reader, readers, n):
    stream = (sample for _, sample in SourceStream(root, reader, readers, seed=f"t{reader}", buffer=8))
    return [next(stream).id for _ in range(n)]


def test_readers_split_by_shard_or_by_sample_and_never_overlap(world):
    _, root = world
    # vqa0: 300 samples in 3 shards of 100. Two readers split by shard (reader 0: shards 0 and 2),
    # four readers (more than shards) split by sample index (sample i goes to reader i % 4).
    index = lambda sid: int(sid.split("-")[1])  # noqa: E731
    two = [{index(s) for s in _ids(root / "vqa0", r, 2, 150)} for r in range(2)]
    assert {i // 100 for i in two[0]} == {0, 2} and {i // 100 for i in two[1]} == {1}
    four = [{index(s) for s in _ids(root / "vqa0", r, 4, 75)} for r in range(4)]
    for r, ids in enumerate(four):
        assert {i % 4 for i in ids} == {r}
    assert len(set().union(*four)) > 0.8 * 300


def test_loss_mask_covers_answers_and_text_never_images_or_questions(tokenizer):
    t = Templates(tokenizer, image_tokens=36, max_seq_len=400)
    im = render(sample_scene(WorldConfig(image_size=48), "x", 0), 48)
    enc = t.encode(
        Sample("v", "vqa", "vqa0", [im], turns=[Turn("Is there a ball?", "yes"), Turn("How many?", "2")])
    )
    ids, labels = enc.input_ids, enc.labels
    assert ids[0] == tokenizer.bos_id and labels[0] == IGNORE
    image_pos = [i for i, x in enumerate(ids) if x == tokenizer.image_id]
    assert image_pos == list(range(1, 37)) and all(labels[i] == IGNORE for i in image_pos)
    supervised = tokenizer.decode([x for x, y in zip(ids, labels) if y != IGNORE])
    unsupervised = tokenizer.decode([x for x, y in zip(ids, labels) if y == IGNORE])
    assert supervised.split() == ["yes", "2"] and labels[-1] == tokenizer.eos_id
    assert "Is there a ball?" in unsupervised and "How many?" in unsupervised
    cap = t.encode(Sample("c", "caption", "caption0", [im], text="a red ball", caption_tag="Caption0"))
    assert tokenizer.decode([x for x, y in zip(cap.input_ids, cap.labels) if y != IGNORE]) == "a red ball"
    assert cap.labels[:37] == [IGNORE] * 37
    txt = t.encode(Sample("t", "text", "text", text="A ball is a toy."))
    assert txt.labels[1:] == txt.input_ids[1:]


def test_truncation_never_cuts_an_image(tokenizer):
    t = Templates(tokenizer, image_tokens=36, max_seq_len=60)
    im = render(sample_scene(WorldConfig(image_size=48), "x", 0), 48)
    text = " ".join(["one <image>"] * 3).replace("<image>", "<image>")
    enc = t.encode(Sample("i", "interleaved", "s", [im] * 3, text=text))
    n_img = sum(x == tokenizer.image_id for x in enc.input_ids)
    assert len(enc) <= 60 and n_img == 36 * len(enc.images) == 36


def test_batches_follow_the_mixture_and_pad_correctly(world, tokenizer):
    _, root = world
    weights = {"caption0": 0.5, "text": 0.5}
    t = Templates(tokenizer, 36, 160)
    ds = MixtureDataset({k: root / k for k in weights}, weights, t, seed=0, micro_batch=8, image_size=48)
    it = iter(ds)
    kinds = Counter()
    for _ in range(50):
        b = next(it)
        ids, labels = b["input_ids"], b["labels"]
        assert ids.shape == labels.shape and ids.shape[0] == 8
        n_images = int((ids == tokenizer.image_id).sum()) // 36
        assert (b["pixels"] is None and n_images == 0) or b["pixels"].shape == (n_images, 3, 48, 48)
        assert torch.all(labels[ids == tokenizer.pad_id] == IGNORE)
        kinds.update(m["source"] for m in b["meta"])
    assert abs(kinds["caption0"] / 400 - 0.5) < 0.1


def test_packed_batches_are_full_rows_of_whole_samples_in_mixture_order(world, tokenizer):
    """train.packing: rows of pack_len tokens, numbered segments, every sample whole and used once."""
    _, root = world
    weights = {"caption0": 0.5, "vqa0": 0.25, "text": 0.25}
    t = Templates(tokenizer, 9, 160)
    ds = MixtureDataset(
        {k: root / k for k in weights}, weights, t, seed=0, micro_batch=4, image_size=48, pack_len=160
    )
    it, seen, real, kinds = iter(ds), [], 0, Counter()
    for _ in range(100):
        b = next(it)
        ids, labels, segments = b["input_ids"], b["labels"], b["segments"]
        assert ids.shape == labels.shape == segments.shape == (4, 160)
        for row in segments:  # segments count up from 1 and padding (0) only trails
            docs = torch.unique_consecutive(row[row > 0])
            assert docs.tolist() == list(range(1, len(docs) + 1))
            assert not torch.any(row[int((row > 0).sum()) :])
        starts = torch.ones_like(segments, dtype=torch.bool)
        starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
        assert torch.all(ids[starts & (segments > 0)] == tokenizer.bos_id)  # each sample starts whole
        assert torch.all(labels[segments == 0] == IGNORE)
        n_images = int((ids == tokenizer.image_id).sum()) // 9
        assert (b["pixels"] is None and n_images == 0) or b["pixels"].shape[0] == n_images
        assert len(b["meta"]) == int(starts[segments > 0].sum())
        seen += [m["id"] for m in b["meta"]]
        kinds.update(m["source"] for m in b["meta"])
        real += int((segments > 0).sum())
    # Packing only regroups the mixture stream: every sample comes from it, at most as often, and none
    # waits longer than one pool (4 x 8 rows of 160 tokens: fewer than 200 samples).
    raw = [m["id"] for _, m in islice(ds.samples(0, 1), len(seen) + 200)]
    assert not Counter(seen) - Counter(raw)
    assert not Counter(raw[: len(seen) - 200]) - Counter(seen)
    assert real / (100 * 4 * 160) > 0.97
    assert abs(kinds["caption0"] / len(seen) - 0.5) < 0.1


@pytest.mark.parametrize(("workers", "pack_len"), [(0, 0), (2, 0), (2, 160)])
def test_skip_resumes_the_stream_exactly_across_workers(workers, pack_len, world, tokenizer):
    """Resume: a loader told to skip k micro-batches continues exactly where the full stream is at k."""
    _, root = world
    weights = {"caption0": 0.5, "text": 0.5}
    t = Templates(tokenizer, 9, 160)

    def batches(skip, n):
        ds = MixtureDataset(
            {k: root / k for k in weights}, weights, t, 0, 4, 48, pack_len=pack_len, skip=skip
        )
        return [[m["id"] for m in b["meta"]] for b in islice(make_loader(ds, workers), n)]

    assert batches(5, 6) == batches(0, 11)[5:]


# Two workers with packing (the hardest case) by default; the simpler ones with -m slow.
@pytest.mark.parametrize(
    ("workers", "pack_len"),
    [*(pytest.param(w, n, marks=pytest.mark.slow) for w, n in ((0, 0), (2, 0), (0, 160))), (2, 160)],
)
def test_a_saved_loader_state_resumes_the_stream_exactly(workers, pack_len, world, tokenizer):
    """Resume from the state the trainer saves (JSON, as in a checkpoint), at points inside a pool,
    at an odd number of batches over two workers, and after the streams have wrapped an epoch."""
    _, root = world
    weights = {"caption0": 0.5, "text": 0.5}
    t = Templates(tokenizer, 9, 160)

    def loader(state=None):
        ds = MixtureDataset(
            {k: root / k for k in weights}, weights, t, 0, 4, 48, pack_len=pack_len, state=state
        )
        return make_loader(ds, workers)

    full = [[m["id"] for m in b["meta"]] for b in islice(loader(), 260)]
    for k in (3, 11, 200):  # 200 x 4 samples: both sources are past their first epoch
        taken = loader()
        for _ in range(k):
            next(taken)
        state = json.loads(json.dumps(taken.state()))
        resumed = [[m["id"] for m in b["meta"]] for b in islice(loader(state), 20)]
        assert resumed == full[k : k + 20], k


def test_token_weighted_mixtures_hold_their_token_shares(world, tokenizer):
    """weight_unit=tokens: over a long stream each source's share of the tokens is its weight (within
    1%), where sample weights would give VQA (long samples) far more of the tokens."""
    _, root = world
    weights = {"caption0": 0.5, "vqa0": 0.5}
    t = Templates(tokenizer, 9, 160)

    def token_shares(unit: str) -> dict[str, float]:
        ds = MixtureDataset({k: root / k for k in weights}, weights, t, 0, 4, 48, weight_unit=unit)
        tokens = Counter()
        for _, meta in islice(ds.samples(0, 1), 8000):
            tokens[meta["source"]] += meta["tokens"]
        return {k: v / sum(tokens.values()) for k, v in tokens.items()}

    by_tokens, by_samples = token_shares("tokens"), token_shares("samples")
    assert all(abs(by_tokens[k] - 0.5) < 0.01 for k in weights), by_tokens
    assert by_samples["vqa0"] > 0.6, by_samples


def test_readers_and_restores_see_each_sample_of_grouped_records_once(tmp_path):
    """Samples sharing an image are one record (three captions per image here), across shard ends:
    readers splitting by sample index still get disjoint samples that cover the set, and a position
    reads back its own sample."""
    from mmkd.shards import ShardWriter, open_dataset

    images = [render(sample_scene(WorldConfig(image_size=48), f"g{i}", i), 48) for i in range(10)]
    with ShardWriter(tmp_path / "d", "d", {}, samples_per_shard=10) as w:
        for i in range(30):
            w.write(Sample(f"s{i:02d}", "caption", "d", [images[i // 3]], f"caption {i}", caption_tag="C"))
    ds = open_dataset(tmp_path / "d")
    assert len(ds) == 30 and ds.manifest["stored_images"] == 12  # 10 images; 2 groups cross a shard end
    epochs = []
    for reader in range(4):  # 3 shards, 4 readers: split by sample index
        stream = SourceStream(tmp_path / "d", reader, 4, seed="t", buffer=4)
        epochs.append({s.id for _, s in islice(stream, 6)})
        assert all(int(i[1:]) % 4 == reader for i in epochs[-1])
    assert len(set().union(*epochs)) == sum(len(e) for e in epochs)
    stream = SourceStream(tmp_path / "d", 0, 1, seed="t", buffer=4)
    drawn = list(islice(stream, 12))
    again = stream.read([pos for pos, _ in drawn])
    for pos, sample in drawn:
        assert again[pos].id == sample.id and again[pos].images[0].tobytes() == sample.images[0].tobytes()


@pytest.mark.parametrize("pack_len", [0, 160])
def test_a_worker_hands_each_batch_over_in_one_buffer(pack_len, world, tokenizer):
    """Batches from a loader worker arrive as one shared buffer and read back exactly as made inline:
    same tensors (values, dtypes, shapes), views of one storage, and the other fields unchanged."""
    _, root = world
    weights = {"caption0": 0.5, "text": 0.5}
    t = Templates(tokenizer, 9, 160)

    def batches(workers):
        ds = MixtureDataset({k: root / k for k in weights}, weights, t, 0, 4, 48, pack_len=pack_len)
        return list(islice(make_loader(ds, workers), 6))

    images = 0
    for inline, handed in zip(batches(0), batches(1), strict=True):
        assert inline.keys() == handed.keys()
        tensors = [k for k, v in inline.items() if torch.is_tensor(v)]
        assert {"input_ids", "labels"} <= set(tensors)
        images += "pixels" in tensors
        assert ("segments" in tensors) == bool(pack_len)
        for k in tensors:
            assert handed[k].dtype == inline[k].dtype and torch.equal(handed[k], inline[k]), k
        assert len({handed[k].untyped_storage().data_ptr() for k in tensors}) == 1  # one buffer
        assert all(handed[k] == inline[k] for k in inline if k not in tensors)
    assert images  # some batches carried pictures (a text-only batch's pixels are None)


def test_a_flattened_batch_without_images_reads_back():
    batch = {"input_ids": torch.arange(6).view(2, 3), "pixels": None, "meta": [{"id": "a"}], "bad": []}
    flat = flatten(dict(batch))
    assert sum(torch.is_tensor(v) for v in flat.values()) == 0 and torch.is_tensor(flat[FLAT][0])
    back = unflatten(flat)
    assert torch.equal(back["input_ids"], batch["input_ids"]) and back["pixels"] is None
    assert back["meta"] == [{"id": "a"}]
