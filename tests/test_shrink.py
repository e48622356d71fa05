"""samples/shrink.py: the size bound, the nearest-neighbour masks and the makers' flags."""

import cv2
import numpy as np
import pytest

from samples import shrink
from utils.cli import UsageError


def test_downscale_bounds_the_longer_side_and_never_upscales():
    image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    assert shrink.downscale(image).shape == (192, 256, 3)
    assert shrink.downscale(image.transpose(1, 0, 2), 100).shape == (100, 75, 3)
    tiny = image[:200, :180]
    assert shrink.downscale(tiny) is tiny
    mask = np.tile(np.array([0, 1, 255], np.uint8), (375, 167))[:, :500]
    small = shrink.downscale(mask, 256, cv2.INTER_NEAREST)
    assert small.shape == (192, 256) and set(np.unique(small)) == {0, 1, 255}


def test_the_makers_flags(tmp_path):
    p = shrink.parser("Make x.", "where x is", "samples/x", "the sample's x/")
    args = p.parse_args(["--source", "src"])
    assert (args.source, args.output, args.longest, args.quality, args.overwrite) == (
        "src", "samples/x", shrink.LONGEST, shrink.QUALITY, False)
    assert [a.help for a in p._actions if a.dest == "overwrite"] == ["replace the sample's x/"]
    with pytest.raises(UsageError, match="argument --longest: must be a positive integer"):
        p.parse_args(["--source", "src", "--longest", "0"])
