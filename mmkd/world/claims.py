"""Reading world text back into claims: what a caption, Q/A or pair caption says about its images.

The world oracle writes captions, Q/A and pair captions in plain English; this module reads any world
text (its own output, Caption0, VQA0 turns, encyclopedia prose) sentence by sentence into `Claim`s.
Three builders rest on it:
  - caption-to-VQA reads only the caption's claims, never the scene graph (seed 000 A.1.2);
  - knowledge extraction turns claims into atomic facts, so KD(x) = |K(x)| is exact (Sec. 4.5);
  - tests check that every claim of every VQA1 answer holds in its scene graph.
A sentence no pattern reads contributes nothing: the reader is a lower bound, never an invention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mmkd.world import encyclopedia
from mmkd.world.language import NUMBER_WORDS
from mmkd.world.scene import COLOURS, KINDS, POSITIONS, RELATIONS, SIZES, THEMES, Scene, SceneObject

IMAGE_SLOT = re.compile(r"<Image (\d+)>|<image>")


@dataclass(frozen=True)
class Claim:
    """One statement about image `image` (None: about no image, e.g. an encyclopedia fact).

    kinds and their args:
      object    (kind, colour|None, size|None, position|None)  some object matches every given attribute
      absent    (kind,)                                       no object of that kind
      count     (kind|"object", n)                            n objects of that kind (all objects)
      relation  (kind, colour|None, rel, kind, colour|None, holds)  a grid relation holds / does not
      theme     (theme,)
      word      (word,)                                       the word on a sign
      empty     (position,)                                   no object at that position
      bar       (colour, value) / tallest (colour,)           chart facts
      fact      (kind, attribute, value)                      encyclopedia knowledge, no image
      compare   (what, ...)                                   a relation between images: theme, both_have,
                                                              colours, only, more, charts, total
      abstract  (sentence,)                                   a summary or evaluation, not a fact
    """

    kind: str
    image: int | None
    args: tuple

    def facts(self) -> list[str]:
        """Atomic knowledge elements (seed 000 Sec. 4.5: objects, attributes, relations, contexts)."""
        at = "" if self.image is None else f"[{self.image}] "
        a = self.args
        if self.kind == "object":
            kind, colour, size, position = a
            anchor = f"the {kind} at the {position}" if position else f"a {kind}"
            out = [f"{at}there is a {kind}"]
            out += [f"{at}{anchor} is {v}" for v in (colour, size) if v]
            out += [f"{at}a {kind} is at the {position}"] if position else []
            return out
        if self.kind == "relation":
            k1, c1, rel, k2, c2, holds = a
            neg = "" if holds else "not "
            return [f"{at}the {_ref(k1, c1)} is {neg}{rel} the {_ref(k2, c2)}"]
        return [f"{at}{self.kind}: " + " ".join(str(x) for x in a)]


def _ref(kind: str, colour: str | None) -> str:
    return f"{colour} {kind}" if colour else kind


def _alt(words) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_KIND = _alt(KINDS)
_PLURAL = _alt(encyclopedia.plural(k) for k in KINDS)
_COLOUR = _alt(COLOURS)
_SIZE = _alt(SIZES)
_POS = _alt(POSITIONS)
_THEME = _alt(THEMES)
_REL = _alt(RELATIONS)
_NUM = _alt([*NUMBER_WORDS, *map(str, range(10))])
_MENTION = re.compile(
    rf"\b(?:a|an|one|the)\s+(?:(?P<size>{_SIZE})\s+)?(?:(?P<colour>{_COLOUR})\s+)?(?P<kind>{_KIND})\b"
    rf"(?:\s+(?:at|in) the (?P<pos>{_POS})\b)?"
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_KIND_OF_PLURAL = {encyclopedia.plural(k): k for k in KINDS}


def _number(word: str) -> int:
    return int(word) if word.isdigit() else NUMBER_WORDS.index(word)


def _noun(word: str) -> str:
    """'balls' -> 'ball', 'objects' -> 'object'."""
    return _KIND_OF_PLURAL.get(word, word.rstrip("s") if word.startswith("object") else word)


# Q/A turns are read as the statement they make; each maps (question match, answer) -> claims.
_QUESTIONS: list[tuple[re.Pattern, object]] = []


def _question(pattern: str):
    def register(fn):
        _QUESTIONS.append((re.compile(pattern + r"$", re.I), fn))
        return fn

    return register


@_question(rf"is there an? ({_KIND}) in the image\?")
def _q_exist(m, answer, img):
    if answer == "yes":
        return [Claim("object", img, (m[1], None, None, None))]
    return [Claim("absent", img, (m[1],))] if answer == "no" else []


@_question(rf"what colou?r is the ({_KIND})\?")
def _q_colour(m, answer, img):
    return [Claim("object", img, (m[1], answer, None, None))] if answer in COLOURS else []


@_question(rf"what size is the (?:({_COLOUR}) )?({_KIND})\?")
def _q_size(m, answer, img):
    return [Claim("object", img, (m[2], m[1], answer, None))] if answer in SIZES else []


@_question(rf"how many ({_PLURAL}|objects) are there\?")
def _q_count(m, answer, img):
    return [Claim("count", img, (_noun(m[1]), _number(answer)))] if re.fullmatch(_NUM, answer) else []


@_question(rf"where is the (?:({_COLOUR}) )?({_KIND})\?")
def _q_where(m, answer, img):
    return [Claim("object", img, (m[2], m[1], None, answer))] if answer in POSITIONS else []


@_question(rf"what is at the ({_POS})\?")
def _q_what_at(m, answer, img):
    return [Claim("object", img, (answer, None, None, m[1]))] if answer in KINDS else []


@_question(rf"is the (?:({_COLOUR}) )?({_KIND}) ({_REL}) the (?:({_COLOUR}) )?({_KIND})\?")
def _q_relation(m, answer, img):
    if answer not in ("yes", "no"):
        return []
    return [Claim("relation", img, (m[2], m[1], m[3], m[5], m[4], answer == "yes"))]


@_question(r"where was this picture taken\?")
def _q_theme(m, answer, img):
    return [Claim("theme", img, (answer,))] if answer in THEMES else []


@_question(rf"what is the value of the ({_COLOUR}) bar\?")
def _q_bar(m, answer, img):
    return [Claim("bar", img, (m[1], int(answer)))] if answer.isdigit() else []


@_question(r"which bar is the tallest\?")
def _q_tallest(m, answer, img):
    return [Claim("tallest", img, (answer,))] if answer in COLOURS else []


@_question(r"what word is written on the sign\?")
def _q_word(m, answer, img):
    return [Claim("word", img, (answer,))] if answer.isalpha() else []


def read_qa(question: str, answer: str, image: int | None = 0) -> list[Claim]:
    """The claims a Q/A turn makes; an open (global) question's answer is read as a caption."""
    q, a = question.strip(), answer.strip().rstrip(".").lower()
    for pattern, fn in _QUESTIONS:
        if m := pattern.match(q):
            return fn(m, a, image)  # type: ignore[operator]
    return read(answer, image)


# Encyclopedia statements, read exactly: each template becomes a pattern with the value captured.
_FACT_PATTERNS = [
    (
        re.compile(
            "^"
            + re.escape(t.rstrip("."))  # sentences are matched without their full stop
            .replace(re.escape("{kind}"), f"(?P<kind>{_KIND})")
            .replace(re.escape("{plural}"), f"(?P<plural>{_PLURAL})")
            .replace(re.escape("{value}"), "(?P<value>.+?)")
            + "$",
            re.I,
        ),
        attribute,
    )
    for attribute, templates in encyclopedia.STATEMENTS.items()
    for t in templates
]


_COMPARE = [
    (re.compile(rf"^both materials show an? ({_THEME})\b"), lambda m: ("theme", m[1])),
    (re.compile(rf"^both contain an? ({_KIND})\b"), lambda m: ("both_have", m[1])),
    (
        re.compile(rf"^the ({_KIND}) is ({_COLOUR}) in the one material and ({_COLOUR}) in the other\b"),
        lambda m: ("colours", m[1], m[2], m[3]),
    ),
    (
        re.compile(rf"^an? ({_KIND}) appears only in the (one|other) material\b"),
        lambda m: ("only", 0 if m[2] == "one" else 1, m[1]),
    ),
    (
        re.compile(rf"^the (one|other) material has more objects, ({_NUM}) against ({_NUM})\b"),
        lambda m: ("more", 0 if m[1] == "one" else 1, _number(m[2]), _number(m[3])),
    ),
    (
        re.compile(rf"^both materials are bar charts with ({_NUM}) and ({_NUM}) bars\b"),
        lambda m: ("charts", _number(m[1]), _number(m[2])),
    ),
    (
        re.compile(rf"^in all, there (?:is|are) ({_NUM}) ({_KIND}|{_PLURAL}) across the pictures\b"),
        lambda m: ("total", _noun(m[2]), _number(m[1])),
    ),
]
_ABSTRACT = re.compile(r"^(?:together|overall|these materials are about)\b,? (.+)")


def _sentence_claims(s: str, img: int | None) -> list[Claim]:
    """Claims of one sentence: whole-sentence patterns first, then object mentions."""
    low = s.strip().lower().rstrip(".")
    for pattern, attribute in _FACT_PATTERNS:
        if m := pattern.match(s.strip().rstrip(".")):
            kind = m.groupdict().get("kind") or _KIND_OF_PLURAL[m["plural"]]
            if encyclopedia.FACTS[kind][attribute] == m["value"]:
                return [Claim("fact", None, (kind, attribute, m["value"]))]
    for pattern, make in _COMPARE:
        if m := pattern.match(low):
            return [Claim("compare", None, make(m))]
    if m := _ABSTRACT.match(low):
        return [Claim("abstract", None, (low,))]
    if m := re.search(
        rf"the (?:({_COLOUR}) )?({_KIND}) is (not )?({_REL}) the (?:({_COLOUR}) )?({_KIND})", low
    ):
        return [Claim("relation", img, (m[2], m[1], m[4], m[6], m[5], m[3] is None))]
    if m := re.match(rf"^the ((?:{_POS})(?:(?:, | and )(?:{_POS}))*) of the picture (?:is|are) empty$", low):
        return [Claim("empty", img, (p,)) for p in re.findall(_POS, m[1])]
    if re.match(r"there (?:is|are) ", low) and re.search(rf"\b({_NUM}) ({_KIND}|{_PLURAL})\b", low):
        return [
            Claim("count", img, (_noun(m[2]), _number(m[1])))
            for m in re.finditer(rf"\b({_NUM}) ({_KIND}|{_PLURAL})\b", low)
        ]
    out: list[Claim] = []
    if m := re.search(rf"\b(?:a|an|the) ({_THEME})\b", low):
        out.append(Claim("theme", img, (m[1],)))
    if m := re.search(rf"\bwith ({_NUM}) objects?\b", low):
        out.append(Claim("count", img, ("object", _number(m[1]))))
    for m in re.finditer(rf"\bthere is no ({_KIND})\b", low):
        out.append(Claim("absent", img, (m[1],)))
    if m := re.search(r"\bsign (?:that says|reading) ([a-z]+)\b", low) or re.match(r"^([a-z]+) sign$", low):
        out.append(Claim("word", img, (m[1],)))
    for m in re.finditer(rf"\ba ({_COLOUR}) bar of (\d+)", low):
        out.append(Claim("bar", img, (m[1], int(m[2]))))
    if m := re.search(rf"\bthe ({_COLOUR}) bar is the tallest", low):
        out.append(Claim("tallest", img, (m[1],)))
    for m in _MENTION.finditer(low):
        out.append(Claim("object", img, (m["kind"], m["colour"], m["size"], m["pos"])))
    return out


def read(text: str, image: int | None = 0) -> list[Claim]:
    """Every claim of a text about image `image`.

    Multi-image texts switch images as they go: in a pair caption "One of the materials involves"
    opens image 0 and "The other material involves" image 1; in interleaved text each segment before
    `<Image k>` (or the k-th `<image>`) describes image k-1.
    """
    segments: list[tuple[str, int | None]] = []
    pos, slot = 0, 0
    for m in IMAGE_SLOT.finditer(text):
        segments.append((text[pos : m.start()], (int(m[1]) - 1) if m[1] else slot))
        pos, slot = m.end(), slot + 1
    segments.append((text[pos:], image if not segments else None))
    claims: list[Claim] = []
    for segment, img in segments:
        for s in _SENTENCE.split(segment.strip()):
            if not s:
                continue
            low = s.lower()
            if low.startswith("one of the materials involves"):
                img = 0
            elif low.startswith("the other material involves"):
                img = 1
            claims.extend(_sentence_claims(s, img))
    return claims


def knowledge(claims: list[Claim]) -> tuple[list[str], list[str]]:
    """(Fact, Abstract) element lists in the format of seed 000 A.1.5, without duplicates."""
    facts = list(dict.fromkeys(f for c in claims if c.kind != "abstract" for f in c.facts()))
    abstract = list(dict.fromkeys(c.args[0] for c in claims if c.kind == "abstract"))
    return facts, abstract


def _matches(o: SceneObject, kind: str, colour: str | None, size: str | None, position: str | None) -> bool:
    return (
        o.kind == kind
        and colour in (None, o.colour)
        and size in (None, o.size)
        and position in (None, o.position)
    )


def holds(claim: Claim, scenes: list[Scene]) -> bool | None:
    """Whether a claim is true of its scenes; None for what no scene graph decides (abstract)."""
    if claim.kind == "fact":
        kind, attribute, value = claim.args
        return encyclopedia.FACTS[kind][attribute] == value
    if claim.kind == "compare":
        return _compare_holds(claim.args, scenes)
    if claim.kind == "abstract" or claim.image is None or claim.image >= len(scenes):
        return None
    s = scenes[claim.image]
    a = claim.args
    if claim.kind == "object":
        return any(_matches(o, *a) for o in s.objects)
    if claim.kind == "absent":
        return a[0] not in s.kinds()
    if claim.kind == "count":
        return (len(s.objects) if a[0] == "object" else s.count(a[0])) == a[1]
    if claim.kind == "relation":
        k1, c1, rel, k2, c2, want = a
        xs = [o for o in s.objects if _matches(o, k1, c1, None, None)]
        ys = [o for o in s.objects if _matches(o, k2, c2, None, None)]
        if len(xs) != 1 or len(ys) != 1:
            return False  # the references must pick out one object each
        return s.relation_holds(xs[0], rel, ys[0]) == want
    if claim.kind == "theme":
        return s.theme == a[0]
    if claim.kind == "empty":
        return all(o.position != a[0] for o in s.objects)
    if claim.kind == "word":
        return s.word == a[0]
    if claim.kind == "bar":
        return tuple(a) in {tuple(b) for b in s.bars}
    if claim.kind == "tallest":
        top = max((v for _, v in s.bars), default=None)
        return [c for c, v in s.bars if v == top] == [a[0]]
    raise ValueError(f"unknown claim kind {claim.kind!r}")


def _compare_holds(args: tuple, scenes: list[Scene]) -> bool:
    what, rest = args[0], args[1:]
    if what == "total":
        kind, n = rest
        return sum(s.count(kind) for s in scenes) == n
    if len(scenes) < 2:
        return False
    a, b = scenes[0], scenes[1]
    if what == "theme":
        return a.theme == b.theme == rest[0]
    if what == "both_have":
        return rest[0] in a.kinds() & b.kinds()
    if what == "colours":
        kind, c0, c1 = rest
        return [o.colour for o in a.objects if o.kind == kind] == [c0] and [
            o.colour for o in b.objects if o.kind == kind
        ] == [c1]
    if what == "only":
        img, kind = rest
        return kind in scenes[img].kinds() and kind not in scenes[1 - img].kinds()
    if what == "more":
        img, hi, lo = rest
        return len(scenes[img].objects) == hi and len(scenes[1 - img].objects) == lo
    if what == "charts":
        return (len(a.bars), len(b.bars)) == tuple(rest)
    raise ValueError(f"unknown comparison {what!r}")
