"""The builders' prompts, versioned, and the parsers that turn an annotator's answer into data.

Prompt texts live in `prompts/<name>.txt` (a system message, if any, in `<name>.system.txt`). Those
of seed 000 appendix A.1.1-A.1.5 are verbatim (JSON braces that the paper's typesetting dropped are
restored in A.1.2); the LLM filter and interleaved prompts are ours, written from Sec. 4.2.1-4.2.2,
which give no prompt text. Bump a prompt's version
whenever its text or parser changes: the version is part of every cache key and of the provenance of
every sample built with it. The label-description prompts of seed 003 (Tables 20-22, the Visual
Genome versions, which let the model answer "Invalid.") are verbatim, the paper's slips included; the
examples Tables 21-22 omit are those of Tables 18-19, and the one example of Table 17 that is cut off
in our copy (sheep) is left out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mmkd.annotators import ParseError, Prompt, check_text, extract_json
from mmkd.errors import ConfigError
from mmkd.schema import IMAGE_MARKER, SEMANTIC_FIELDS

_DIR = Path(__file__).parent / "prompts"
MIN_QA, MAX_QA = 5, 15  # seed 000 A.1.2
REQUIRED_SEMANTIC = SEMANTIC_FIELDS[:3]  # "(required)" in A.1.3


def _prompt(name: str, version: str, output: str, source: str) -> Prompt:
    system = _DIR / f"{name}.system.txt"
    text = (_DIR / f"{name}.txt").read_text()
    return Prompt(name, version, text, output, source, system.read_text() if system.exists() else "")


PROMPTS: dict[str, Prompt] = {
    p.name: p
    for p in (
        _prompt("caption", "v1", "text", "seed 000 A.1.1"),
        _prompt("vqa_from_caption", "v1", "json", "seed 000 A.1.2"),
        _prompt("semantic", "v1", "json", "seed 000 A.1.3"),
        _prompt("pair_filter", "v1", "json", "mmkd, from seed 000 Sec. 4.2.1 (LLM as Filter)"),
        _prompt("pair_caption", "v1", "text", "seed 000 A.1.4"),
        _prompt("interleaved", "v1", "text", "mmkd, from seed 000 Sec. 4.2.2 and A.3"),
        _prompt("knowledge", "v1", "json", "seed 000 A.1.5"),
        _prompt("caption_candidates", "v1", "json", "mmkd, from seed 003 F.4 (BLIP-2's 10 candidates)"),
        _prompt("capsfusion", "v1", "text", "mmkd, from seed 003 G.3 (CapsFusion's merge of two captions)"),
        _prompt("label_object", "v1", "text", "seed 003 Table 20 (Visual Genome)"),
        _prompt("label_attribute", "v1", "text", "seed 003 Table 21, examples of Table 18"),
        _prompt("label_relation", "v1", "text", "seed 003 Table 22, examples of Table 19"),
        _prompt("caption_ssc", "v1", "text", "mmkd, from seed 002 Sec. 3 and Sec. 3.2 (SSC, 10-15 tokens)"),
        _prompt("caption_dsc", "v1", "text", "mmkd, from seed 002 Sec. 3 and Sec. 3.2 (DSC, 40-60 tokens)"),
        _prompt(
            "caption_dsc_plus", "v1", "text", "mmkd, from seed 002 Sec. 3 and Sec. 3.2 (DSC+, >100 tokens)"
        ),
        _prompt("caption_afc", "v1", "text", "mmkd, from seed 002 Sec. 3 and Appendix B (AFC)"),
        _prompt("caption_assertions", "v1", "json", "mmkd, from seed 002 Appendix B (ANA, CapScore step 1)"),
        _prompt("verify_assertion", "v1", "text", "mmkd, from seed 002 Appendix B (CapScore step 2)"),
        _prompt("scale_text_quality", "v1", "json", "mmkd, from seed 004 Table 1 (TQA criteria)"),
        _prompt(
            "scale_image_quality", "v1", "json", "mmkd, from seed 004 Sec. 3.2.1 (IQA, a Q-SiT-style rating)"
        ),
        _prompt(
            "scale_task", "v1", "json", "mmkd, from seed 004 Sec. 3.2.2 and Table 6 (one example per task)"
        ),
        _prompt("scale_caption_general", "v1", "text", "mmkd, from seed 004 Sec. 3.2.3 (general caption)"),
        _prompt("scale_caption_task", "v1", "text", "mmkd, from seed 004 Sec. 3.2.3 (task-aimed caption)"),
        _prompt(
            "scale_multimodal", "v1", "json", "mmkd, from seed 004 Sec. 3.2.4, Table 1 (clarity, relevance)"
        ),
    )
}


def check_routes(routes: dict[str, str]) -> None:
    """Every `annotator.routes` key names one of the builders' prompts (before any request)."""
    for name in routes:
        if name not in PROMPTS:
            raise ConfigError(f"annotator.routes.{name}: no prompt of that name; prompts: {sorted(PROMPTS)}")


def parse_caption(text: str) -> str:
    text = check_text(text)
    if "<image" in text.lower():
        raise ParseError("placeholder_in_caption", "a caption may not contain image placeholders")
    return " ".join(text.split())


def parse_vqa(text: str) -> list[tuple[str, str]]:
    """A JSON list of 5-15 {"question", "answer"} objects with non-empty strings and no repeats."""
    value = extract_json(text)
    if not isinstance(value, list):
        raise ParseError("malformed_json", "expected a JSON list of question/answer objects")
    pairs: dict[str, str] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) for k in ("question", "answer")
        ):
            raise ParseError("malformed_json", f"item {i} needs string fields 'question' and 'answer'")
        q, a = item["question"].strip(), item["answer"].strip()
        if not q or not a:
            raise ParseError("empty_answer", f"item {i} has an empty question or answer")
        pairs.setdefault(q, a)
    if not MIN_QA <= len(pairs) <= MAX_QA:
        raise ParseError("qa_count", f"{len(pairs)} distinct pairs; {MIN_QA}-{MAX_QA} are required")
    return list(pairs.items())


def parse_semantic(text: str) -> dict[str, Any]:
    value = extract_json(text)
    info = value.get("hierarchical semantic information", value) if isinstance(value, dict) else None
    if not isinstance(info, dict):
        raise ParseError("malformed_json", "expected an object 'hierarchical semantic information'")
    out: dict[str, Any] = {}
    for key in SEMANTIC_FIELDS:
        v = info.get(key, info.get(key.replace(" ", "_")))
        if key in REQUIRED_SEMANTIC and not (isinstance(v, str) and v.strip()):
            raise ParseError("missing_field", f"{key!r} is required and must be a non-empty string")
        if key not in REQUIRED_SEMANTIC:
            v = [] if v is None else v if isinstance(v, list) else [v] if key != "function or role" else v
        out[key] = v.strip().lower() if isinstance(v, str) else [str(x).strip().lower() for x in v]
    return out


def parse_filter(text: str) -> tuple[bool, str]:
    value = extract_json(text)
    ok = value.get("explainable") if isinstance(value, dict) else None
    if isinstance(ok, str) and ok.lower() in ("yes", "no", "true", "false"):
        ok = ok.lower() in ("yes", "true")
    if not isinstance(ok, bool):
        raise ParseError("malformed_json", "expected {'explainable': true|false, 'reason': ...}")
    return ok, str(value.get("reason", ""))


_SLOT = re.compile(r"<Image (\d+)>")


def parse_interleaved(n: int):
    """Text with `<Image 1>`..`<Image n>`, each once and in order; returned with our IMAGE_MARKER."""

    def parse(text: str) -> str:
        text = check_text(text)
        slots = [int(k) for k in _SLOT.findall(text)]
        if slots != list(range(1, n + 1)):
            raise ParseError("bad_placeholders", f"found {slots}; need <Image 1> .. <Image {n}> once each")
        if IMAGE_MARKER in text:
            raise ParseError("bad_placeholders", f"the text may not contain {IMAGE_MARKER} itself")
        return " ".join(_SLOT.sub(IMAGE_MARKER, text).split())

    return parse


def parse_knowledge(text: str) -> tuple[list[str], list[str]]:
    """(facts, abstracts) of A.1.5's {"Fact": [{"fact", "level"}], "Abstract": [...]}, deduplicated."""
    value = extract_json(text)
    if not isinstance(value, dict) or not isinstance(value.get("Fact"), list):
        raise ParseError("malformed_json", "expected an object with lists 'Fact' and 'Abstract'")
    facts = [f.get("fact") if isinstance(f, dict) else f for f in value["Fact"]]
    if not all(isinstance(f, str) for f in facts):
        raise ParseError("malformed_json", "every Fact needs a string 'fact'")
    abstract = value.get("Abstract", [])
    if not isinstance(abstract, list) or not all(isinstance(a, str) for a in abstract):
        raise ParseError("malformed_json", "'Abstract' must be a list of strings")
    norm = lambda xs: list(dict.fromkeys(" ".join(x.lower().split()) for x in xs if x.strip()))  # noqa: E731
    return norm(facts), norm(abstract)


INVALID = "Invalid."


def parse_label_description(text: str) -> tuple[str | None, str]:
    """(description, "") for a valid label; (None, why) when the model calls the label invalid."""
    text = " ".join(check_text(text).split())
    for prefix in (
        "Category Description:",
        "Attribute Category Description:",
        "Relationship Category Description:",
    ):
        text = text.removeprefix(prefix).strip()
    if text.lower().startswith(INVALID.lower().rstrip(".")):
        return None, text[len(INVALID) :].strip(" .:") or "called invalid"
    if len(text.split()) < 3:
        raise ParseError("too_short", f"a description of {len(text.split())} words")
    return text, ""


def parse_assertions(text: str) -> list[str]:
    """A JSON list of assertion strings (possibly empty: a file-name AltText asserts nothing), no repeats."""
    value = extract_json(text)
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ParseError("malformed_json", "expected a JSON list of assertion strings")
    return list(dict.fromkeys(" ".join(a.split()) for a in value if a.strip()))


def parse_yes_no(text: str) -> bool:
    """A VQA verdict: the answer's first word, yes or no."""
    words = check_text(text).strip().lower().split()
    first = words[0].strip(".,!:;\"'") if words else ""
    if first not in ("yes", "no"):
        raise ParseError("not_yes_no", f"expected yes or no, got {text[:40]!r}")
    return first == "yes"


def parse_ratings(keys: tuple[str, ...]):
    """A JSON object with an integer rating 1-5 under each of `keys`."""

    def parse(text: str) -> dict[str, int]:
        value = extract_json(text)
        if not isinstance(value, dict):
            raise ParseError("malformed_json", f"expected an object with ratings {list(keys)}")
        out = {}
        for k in keys:
            v = value.get(k)
            if isinstance(v, str) and v.strip().isdigit():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 5:
                raise ParseError("bad_rating", f"{k!r} must be an integer from 1 to 5, got {v!r}")
            out[k] = v
        return out

    return parse


def parse_task(taxonomy: dict[str, tuple[str, ...]]):
    """{"task", "subtask"}: a pair of the taxonomy (a sub-task alone is accepted when it is unique)."""
    owner = {sub: task for task, subs in taxonomy.items() for sub in subs}

    def parse(text: str) -> tuple[str, str]:
        value = extract_json(text)
        if not isinstance(value, dict) or not isinstance(value.get("subtask"), str):
            raise ParseError("malformed_json", "expected {'task': ..., 'subtask': ...}")
        sub = value["subtask"].strip()
        if sub not in owner:
            raise ParseError("unknown_task", f"sub-task {sub!r} is not in the taxonomy")
        task = value.get("task")
        if isinstance(task, str) and task.strip() and task.strip() != owner[sub]:
            raise ParseError("unknown_task", f"{sub!r} belongs to {owner[sub]!r}, not {task!r}")
        return owner[sub], sub

    return parse


def parse_candidates(text: str) -> list[str]:
    """A JSON list of caption strings (seed 003 F.4's candidates), whitespace normalised, no repeats."""
    value = extract_json(text)
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise ParseError("malformed_json", "expected a non-empty JSON list of caption strings")
    captions = list(dict.fromkeys(" ".join(c.split()) for c in value if c.strip()))
    if not captions:
        raise ParseError("empty_answer", "every candidate caption is empty")
    return captions
