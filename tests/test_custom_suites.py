"""Custom suites: JSONL and VLMEvalKit-style TSV files load into items, metrics score as documented,
and malformed files are refused with the file, line and field named."""

import base64
import io
import json

import pytest

from mmkd.eval.custom import SuiteError, load_suite
from mmkd.metrics import anls, box_iou, parse_box
from mmkd.shards import open_dataset


def test_anls_and_box_iou_known_values():
    assert anls("Hello  World", ["hello world"]) == 1.0
    assert anls("helo world", ["hello world"]) == pytest.approx(1 - 1 / 11)
    assert anls("abc", ["xyz", "abd"]) == pytest.approx(2 / 3)  # the closest answer counts
    assert anls("abcdef", ["uvwxyz"]) == 0.0  # distance >= 0.5: no credit
    assert parse_box("the kite is at [4, 4.5, 20, 20] in the image") == (4.0, 4.5, 20.0, 20.0)
    assert parse_box("top left") is None and box_iou(None, (0, 0, 1, 1)) == 0.0
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0


def _images(root, n):
    return [s.images[0] for s, _ in zip(open_dataset(root / "vqa0"), range(n))]


def write_suites(root, out):
    """A JSONL suite (image files, every metric) and a VLMEvalKit-style TSV (base64, letter answers)."""
    images = _images(root, 3)
    for i, im in enumerate(images):
        im.save(out / f"im{i}.png")
    lines = [
        {
            "id": "mc",
            "image": "im0.png",
            "question": "Which shape?",
            "options": ["ball", "box"],
            "answer": "box",
        },
        {"id": "em", "images": ["im0.png", "im1.png"], "question": "Same colour?", "answer": ["yes", "y"]},
        {"id": "anls", "image": "im1.png", "question": "Word?", "answer": ["ok"], "metric": "anls"},
        {"id": "box", "image": "im2.png", "question": "Kite?", "answer": [4, 4, 20, 20], "metric": "box_iou"},
        {"id": "text", "question": "Capital of the world?", "answer": "ring"},
    ]
    (out / "mine.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    def b64(im):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    rows = ["index\timage\tquestion\tA\tB\tC\tanswer\tcategory"]
    rows += [
        f"{i}\t{b64(im)}\tWhat colour?\tred\tgreen\tblue\t{'ABC'[i]}\tcolour" for i, im in enumerate(images)
    ]
    (out / "vlm.tsv").write_text("\n".join(rows) + "\n")
    return images


def test_jsonl_and_tsv_suites_load(world, tmp_path):
    images = write_suites(world[1], tmp_path)
    items = {it.id: it for it in load_suite(tmp_path / "mine.jsonl")}
    assert items["mc"].options == ["ball", "box"] and items["mc"].answer == "box"
    assert len(items["em"].images()) == 2 and items["em"].references == ["yes", "y"]
    assert items["box"].metadata["metric"] == "box_iou" and json.loads(items["box"].answer) == [4, 4, 20, 20]
    assert items["text"].images() == []
    tsv = load_suite(tmp_path / "vlm.tsv")
    assert [it.answer for it in tsv] == ["red", "green", "blue"] and tsv[0].options == [
        "red",
        "green",
        "blue",
    ]
    assert tsv[1].qtype == "colour" and tsv[1].image.tobytes() == images[1].convert("RGB").tobytes()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"id": "a", "question": "q"}, r"mine\.jsonl:1: missing 'answer'"),
        ({"id": "a", "question": "q", "answer": "c", "options": ["a", "b"]}, "options that include"),
        ({"id": "a", "question": "q", "answer": "c", "metric": "bleu"}, "metric 'bleu'"),
        ({"id": "a", "question": "q", "answer": [1, 2], "metric": "box_iou"}, r"\[x1, y1, x2, y2\]"),
        ({"id": "a", "question": "q", "answer": "c", "image": "nope.png"}, "neither a file"),
    ],
)
def test_malformed_suites_name_file_line_and_field(line, message, tmp_path):
    (tmp_path / "mine.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(SuiteError, match=message):
        load_suite(tmp_path / "mine.jsonl")
