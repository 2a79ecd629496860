import pytest
from PIL import Image

from mmkd.schema import IMAGE_MARKER, Sample, SampleError, Turn

IM = Image.new("RGB", (8, 8))


def test_valid_samples_of_every_kind_pass_and_round_trip():
    samples = [
        Sample("c", "caption", "caption0", [IM], text="a red ball", caption_tag="Caption0"),
        Sample("v", "vqa", "vqa0", [IM], turns=[Turn("Is there a ball?", "yes")]),
        Sample("t", "text", "text", text="A ball is a toy."),
        Sample("p", "pair", "pairs", [IM, IM], text="both show a ball"),
        Sample(
            "i",
            "interleaved",
            "inter",
            [IM] * 3,
            text=f"one {IMAGE_MARKER} two {IMAGE_MARKER} three {IMAGE_MARKER}",
        ),
        Sample("o", "other", "other", [IM], turns=[Turn("What word?", "bako")]),
    ]
    for s in samples:
        back = Sample.from_json(s.validate().to_json(), s.images)
        assert back == s


@pytest.mark.parametrize(
    ("sample", "field"),
    [
        (Sample("c", "caption", "caption0", [IM], text="x"), "caption_tag"),
        (Sample("c", "caption", "caption0", [], text="x", caption_tag="Caption0"), "images"),
        (Sample("v", "vqa", "vqa0", [IM]), "turns"),
        (Sample("v", "vqa", "vqa0", [IM], turns=[Turn("q", " ")]), "turns[0]"),
        (Sample("p", "pair", "s", [IM], text="x"), "images"),
        (Sample("i", "interleaved", "s", [IM] * 3, text=f"a {IMAGE_MARKER}"), "text"),
        (Sample("t", "text", "s", text=f"x {IMAGE_MARKER}"), "text"),
        (Sample("t", "tetx", "s", text="x"), "kind"),
        (Sample("a.b", "text", "s", text="x"), "id"),
        (Sample("m", "mmgic", "s", [IM], text="x"), "text"),
        (Sample("m", "mmgic", "s", [IM], text="<image>"), "metadata"),
        (Sample("t", "text", "", text="x"), "source"),
    ],
)
def test_validation_names_the_field(sample, field):
    with pytest.raises(SampleError, match=f"field '{field.replace('[', '.').replace(']', '.')}'"):
        sample.validate()
