import math
import random

import pytest

from mmkd.metrics import cider_d, coco_cider, exact_match, mean_ci95, normalize


def test_exact_match_normalises_case_punctuation_and_space():
    assert exact_match(" Bako. ", "bako") == 1.0
    assert exact_match("top  left", "Top left!") == 1.0
    assert exact_match("3", "4") == 0.0
    assert normalize("A, b;  C") == "a b c"


REFS = [
    ["a red ball at the top left", "a red ball in a garden"],
    ["a small blue tent at the center", "a blue tent"],
    ["a bar chart with a green bar of 3", "a bar chart"],
]


def test_cider_orders_hand_made_candidates():
    perfect = cider_d(
        [
            "a red ball at the top left",
            "a small blue tent at the center",
            "a bar chart with a green bar of 3",
        ],
        REFS,
    )
    partial = cider_d(["a red ball", "a blue tent", "a bar chart"], REFS)
    wrong = cider_d(["green kite", "yellow star", "purple ring"], REFS)
    assert all(p > q > 0 for p, q in zip(perfect, partial))
    assert wrong == [0.0, 0.0, 0.0]


def test_cider_known_value_for_an_exact_single_reference_match():
    # One reference per item, candidate == reference: every n-gram cosine is 1 and the length
    # penalty is 1, so CIDEr-D = 10 exactly (n-grams shared by all items carry zero idf weight).
    refs = [["red ball top left"], ["blue tent in center"], ["green kite far right"]]
    assert cider_d([r[0] for r in refs], refs) == pytest.approx([10.0, 10.0, 10.0])
    # A three-word caption has no 4-grams, so its n=4 term is 0 and the score is 3/4 of 10.
    short = [["red ball left"], ["blue tent center"], ["green kite right"]]
    assert cider_d([r[0] for r in short], short) == pytest.approx([7.5, 7.5, 7.5])


def test_cider_length_penalty():
    refs = [["a red ball at the top left"], ["a blue tent"], ["a green kite"]]
    short = cider_d(["red ball", "a blue tent", "a green kite"], refs)[0]
    long = cider_d(["red ball " * 8, "a blue tent", "a green kite"], refs)[0]
    assert 0 < long < short


def test_mean_ci95():
    mean, half = mean_ci95([0.0, 1.0] * 50)
    assert mean == 0.5 and math.isclose(half, 1.96 * math.sqrt(0.25 * 100 / 99 / 100))
    with pytest.raises(ValueError):
        cider_d(["a"], [])


def test_cider_d_is_the_coco_toolkits_cider():
    rng = random.Random(0)
    words = [
        "a",
        "red",
        "ball",
        "at",
        "the",
        "top",
        "left",
        "small",
        "blue",
        "box",
        "kite",
        "ring",
        "star",
        "green",
        "tent",
    ]
    refs = [[" ".join(rng.choices(words, k=rng.randint(4, 9))) for _ in range(5)] for _ in range(20)]
    cands = [" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(20)]
    ours = cider_d(cands, refs)
    assert coco_cider(cands, refs) == pytest.approx(sum(ours) / len(ours), abs=1e-12)
