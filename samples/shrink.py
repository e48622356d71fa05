"""What the sample makers share: the photos' size and JPEG quality, the downscale, the
flags, and the size of what they wrote (samples/make_pets_sample.py, make_scenes_sample.py)."""

import os

import cv2

from utils import cli

LONGEST = 256  # px of a photo's longer side; ~20 KB per JPEG
QUALITY = 90  # JPEG quality of the downscaled photos


def downscale(image, longest=LONGEST, interpolation=cv2.INTER_AREA):
    """Image [H, W, ...] resized so max(H, W) <= longest (aspect kept; never upscaled).
    Masks pass cv2.INTER_NEAREST, so they keep only their own values."""
    height, width = image.shape[:2]
    scale = longest / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 wants (w, h)
    return cv2.resize(image, size, interpolation=interpolation)


def folder_bytes(folders):
    return sum(os.path.getsize(os.path.join(root, f))
               for folder in folders for root, _, files in os.walk(folder) for f in files)


def parser(description, source, output, overwrite):
    """A maker's flags: --source (its --help says `source`), --output (default `output`),
    --longest, --quality and --overwrite (which replaces what `overwrite` names)."""
    p = cli.ArgumentParser(description=description)
    p.add_argument("--source", required=True, help=source)
    p.add_argument("--output", default=output, help=f"sample folder (default: {output})")
    p.add_argument("--longest", type=cli.positive_int, default=LONGEST,
                   help=f"longer side of the photos in px (default: {LONGEST})")
    p.add_argument("--quality", type=cli.positive_int, default=QUALITY,
                   help=f"JPEG quality (default: {QUALITY})")
    p.add_argument("--overwrite", action="store_true", help=f"replace {overwrite}")
    return p
