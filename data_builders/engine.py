"""Shard-parallel, idempotent, resumable builds: a build is a fixed list of units, one output file each.

    plan.json                 the units (what each one reads), fixed before any work; identical in
                              every process and on every rerun, so units never overlap or go missing
    shard-000007.tar          unit 7's samples (or part-000007.jsonl for annotation records)
    rejects-000007.jsonl      unit 7's rejects, with reasons
    done-000007.json          written last: unit 7 is finished (stats, reject and annotator counts)
    manifest.json             written once every unit is done

A unit whose rejects exceed `max_reject_share` of its records, or that produced nothing but rejects,
is not finished: the build stops with `BuildFailed`, naming the commonest reasons (a wrong model, a
broken prompt, a failing server), and leaves the unit's rejects to read. Finished units stay, so the
same command, once the cause is fixed, redoes only what failed.

Process i of n (`build.shard=i/n`) builds the units u with u % n == i and skips finished ones. A kill
leaves at most a `.tmp` file, which the rerun overwrites; with the annotator's response cache the
rerun costs nothing, and its shards are byte-identical to those of an uninterrupted build.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmkd.data_builders.rejects import RejectLog
from mmkd.errors import UserError
from mmkd.schema import Sample
from mmkd.shards import MANIFEST, ShardFile, shard_name, write_json_atomic, write_manifest

Work = Callable[[Any, RejectLog], list]  # unit items -> samples (or JSON records)


class PlanChanged(UserError, RuntimeError):
    """An output directory holds a different plan: its inputs or settings changed."""

    label = "build error"


class BuildFailed(UserError, RuntimeError):
    """A unit rejected too much of its input, or a build produced nothing."""

    label = "build error"
    hint = " (finished units are kept: fix the cause and rerun the same command)"


# Rejects that are a builder's judgement of good input, not failures: the pair filter said no; MMGIC
# cleaning dropped a rare or invalid label, the annotations that used it, a region outside the size
# limits or a duplicate one, or an image left with no object.
DECISIONS = frozenset(
    {
        "pair_filtered",
        "rare_label",
        "invalid_label",
        "label_removed",
        "attribute_removed",
        "relation_removed",
        "region_dropped",
        "no_objects",
    }
)


def _done(out: Path, u: int) -> Path:
    return out / f"done-{u:06d}.json"


def _plan(out: Path, units: list[Any]) -> None:
    digest = hashlib.sha256(json.dumps(units, sort_keys=True).encode()).hexdigest()
    path = out / "plan.json"
    if path.exists():
        if json.loads(path.read_text())["digest"] != digest:
            raise PlanChanged(f"{path} holds another plan; delete {out} to rebuild it")
        return
    write_json_atomic(path, {"digest": digest, "units": units})


def run(
    out: Path,
    units: list[Any],
    work: Work,
    records: bool = False,
    shard: tuple[int, int] = (0, 1),
    image_size: int | None = None,
    counters: Callable[[], dict[str, int]] | None = None,
    max_reject_share: float = 1.0,
) -> int:
    """Build this process's unfinished units; returns how many it built.

    `counters()` (e.g. the annotator's running stats) is sampled around each unit so the done file
    records what the unit cost: requests, cache hits, retries, tokens.
    """
    out.mkdir(parents=True, exist_ok=True)
    _plan(out, units)
    i, n = shard
    built = 0
    todo = [u for u in range(len(units)) if u % n == i and not _done(out, u).exists()]
    bar = tqdm(total=sum(len(units[u]) for u in todo), desc=f"build {out.name}", unit="record", leave=False)
    for u in todo:
        items = units[u]
        before = Counter(counters() if counters else {})
        rejects = RejectLog()
        results = work(items, rejects)
        rejects.write(out / f"rejects-{u:06d}.jsonl")
        _check_unit(out, u, len(results), rejects, max_reject_share)
        if records:
            path = out / f"part-{u:06d}.jsonl"
            _write_lines(path, results)
            stats: dict[str, Any] = {"file": path.name, "num_records": len(results)}
        else:
            stats = _write_samples(out / shard_name(u), results, image_size)
        after = Counter(counters() if counters else {})
        after.subtract(before)
        stats["rejects"] = rejects.counts()
        stats["annotator"] = {k: v for k, v in after.items() if v}
        write_json_atomic(_done(out, u), stats)
        built += 1
        bar.update(len(items))
    bar.close()
    return built


def _check_unit(out: Path, u: int, produced: int, rejects: RejectLog, max_share: float) -> None:
    """Raise `BuildFailed` if the unit failed on more than `max_share` of its records or made nothing."""
    failed = Counter(r.reason for r in rejects.items if r.reason not in DECISIONS)
    n = sum(failed.values())
    if not n or (produced and n / (n + produced) <= max_share):
        return
    common = ", ".join(f"{reason} x{k}" for reason, k in failed.most_common(3))
    raise BuildFailed(
        f"{out} unit {u}: {n} of {n + produced} records rejected ({n / (n + produced):.0%}, more than "
        f"build.max_reject_share={max_share}): {common}; listed in {out / f'rejects-{u:06d}.jsonl'}"
    )


def _write_samples(path: Path, samples: list[Sample], image_size: int | None) -> dict[str, Any]:
    f = ShardFile(path, image_size)
    try:
        for s in samples:
            f.add(s)
    except BaseException:
        f.discard()
        raise
    return f.close()


def _write_lines(path: Path, rows: list[dict]) -> None:
    """JSON lines, atomically (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    tmp.replace(path)


def finished(out: Path) -> list[dict[str, Any]] | None:
    """The done records of every unit, or None while some unit is unfinished."""
    plan = out / "plan.json"
    if not plan.exists():
        return None
    n = len(json.loads(plan.read_text())["units"])
    done = [_done(out, u) for u in range(n)]
    if not all(p.exists() for p in done):
        return None
    return [json.loads(p.read_text()) for p in done]


def totals(done: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Reject and annotator counts summed over units (for the manifest)."""
    rejects: Counter[str] = Counter()
    annotator: Counter[str] = Counter()
    for d in done:
        rejects.update(d["rejects"])
        annotator.update(d["annotator"])
    return {"rejects": dict(sorted(rejects.items())), "annotator": dict(sorted(annotator.items()))}


def finish_samples(
    out: Path,
    name: str,
    provenance: dict[str, Any],
    image_size: int | None,
    tokens_per_image: int | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Write the manifest once every unit is done (any process may call it); None until then."""
    done = finished(out)
    if done is None:
        return None
    shards = [d for d in done if d["num_samples"] > 0]
    if not shards:
        raise BuildFailed(f"{out}: every unit is done but none produced a sample (is the input empty?)")
    return write_manifest(
        out, name, provenance, shards, image_size, tokens_per_image, {**totals(done), **(extra or {})}
    )


def read_records(out: Path) -> list[dict]:
    """All JSON records of a finished records build, in unit order."""
    if not (out / MANIFEST).exists():
        raise FileNotFoundError(f"{out} is not a finished build (no {MANIFEST})")
    return unit_records(out)


def unit_records(out: Path) -> list[dict]:
    """The JSON records the finished units wrote so far, in unit order."""
    rows = []
    for f in sorted(out.glob("part-*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line]
    return rows


def finish_records(
    out: Path, name: str, provenance: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The manifest of an annotation-records build (no shards), once every unit is done."""
    done = finished(out)
    if done is None:
        return None
    if not sum(d["num_records"] for d in done):
        raise BuildFailed(f"{out}: every unit is done but none produced a record (is the input empty?)")
    manifest = {
        "name": name,
        "num_records": sum(d["num_records"] for d in done),
        "parts": [d["file"] for d in done],
        "provenance": provenance,
        **totals(done),
        **(extra or {}),
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
