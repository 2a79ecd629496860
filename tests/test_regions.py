"""MMGIC object regions on hand-made boxes: square crops at the image's borders, IoA merging, the size
filter, duplicates and grid-cell names (seed 003 F.3, F.7)."""

import random

import pytest

from mmkd.data_builders.regions import grid_cell, ioa, object_regions, side_limits, square_around


def test_the_square_is_centred_on_the_box_and_shifted_inside_at_the_borders():
    assert square_around((100, 100, 140, 120), 224, 224) == (100, 90, 140, 130)  # centred, 40 px
    assert square_around((0, 10, 10, 50), 224, 224) == (0, 10, 40, 50)  # at the left border: shifted in
    assert square_around((200, 214, 224, 224), 224, 224) == (200, 200, 224, 224)  # bottom-right corner
    assert square_around((10, 0, 300, 100), 320, 200) == (
        55,
        0,
        255,
        200,
    )  # wider than the short side: centred


def test_the_square_always_contains_the_box():
    rng = random.Random(0)
    for _ in range(2000):
        w, h = rng.randint(20, 400), rng.randint(20, 400)
        x0, y0 = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        box = (x0, y0, rng.uniform(x0 + 0.5, w), rng.uniform(y0 + 0.5, h))
        s = square_around(box, w, h)
        assert s[2] - s[0] == s[3] - s[1] and s[0] >= 0 and s[1] >= 0 and s[2] <= w and s[3] <= h
        if max(box[2] - box[0], box[3] - box[1]) <= min(w, h) - 2:
            assert s[0] <= box[0] and s[1] <= box[1] and s[2] >= box[2] and s[3] >= box[3], (box, w, h, s)


def test_ioa_is_the_share_of_the_box_inside_the_square():
    assert ioa((0, 0, 10, 10), (5, 0, 15, 10)) == 0.5
    assert ioa((0, 0, 10, 10), (2, 2, 4, 4)) == 1.0 and ioa((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_regions_merge_contained_labels_filter_sizes_and_drop_duplicates():
    objects = [
        ("dog", (60, 60, 120, 120)),  # a 60-px square that holds the cat and most of the ball
        ("cat", (70, 70, 100, 100)),  # its own square holds only itself
        ("ball", (100, 100, 130, 130)),  # IoA with the dog's square: 20 x 20 / 30 x 30 = 0.44 < 0.8
        ("flea", (10, 10, 20, 20)),  # 10 px: too small
        ("sky", (0, 0, 224, 200)),  # 224 px: too large
        ("cat", (150, 150, 180, 180)),  # a second cat alone: a duplicate of the first cat's region
    ]
    kept, dropped = object_regions(objects, 224, 224, side_limits(224, 224))
    assert [(r.labels, r.box, r.location) for r in kept] == [
        (("dog", "cat"), (60, 60, 120, 120), "Center"),
        (("cat",), (70, 70, 100, 100), "Center"),
        (("ball",), (100, 100, 130, 130), "Center"),
    ]
    assert [(i, reason.split(":")[0]) for i, reason in dropped] == [
        (3, "region too small"),
        (4, "region too large"),
        (5, "duplicate region"),
    ]


def test_limits_scale_with_the_short_side():
    assert side_limits(224, 300) == (28, 182) and side_limits(448, 448) == (56, 364)
    assert side_limits(48, 48) == pytest.approx((6, 39))


@pytest.mark.parametrize(
    ("centre", "name"),
    [((10, 10), "Top Left"), ((112, 10), "Top Middle"), ((220, 10), "Top Right"), ((10, 112), "Middle Left"),
     ((112, 112), "Center"), ((220, 112), "Middle Right"), ((10, 220), "Bottom Left"),
     ((112, 220), "Bottom Middle"), ((223, 223), "Bottom Right")],
)  # fmt: skip
def test_grid_cells_are_named_top_to_bottom_left_to_right(centre, name):
    x, y = centre
    assert grid_cell((x - 1, y - 1, x + 1, y + 1), 224, 224) == name
