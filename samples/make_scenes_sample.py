"""Make samples/feral_cats/: real photos of cats in scenes, small enough to ship in the repo.

    python -m samples.make_scenes_sample --source ../shared/data/feral_cats \
        --output samples/feral_cats --overwrite

The source is a Roboflow / Ultralytics YOLO segmentation export (data.yaml, then
train/ and valid/ each with images/ and labels/), such as the public-domain
"feral-cat-segmentation" set. The sample keeps that layout, so convert_yolo.py reads
it as it reads the full export:

- photos: TRAIN photos of the source's train split and VALID of its valid split, spread
  evenly over each split sorted by name (`pick`), downscaled so the longer side is
  LONGEST px (cv2.INTER_AREA; never upscaled) and saved as JPEG quality QUALITY;
- labels: copied unchanged (YOLO polygons are normalised to the image, so they fit
  the downscaled photo as they fit the original);
- data.yaml: the source's class names, with split paths relative to the sample;
- README.dataset.txt: the export's own attribution and licence, copied.

README.md beside data.yaml is written by hand and left alone.
"""

import dataclasses
import os
import shutil
import sys

import cv2

from samples import shrink
from samples.shrink import LONGEST, QUALITY, downscale
from utils import cli

SPLITS = {"train": 225, "valid": 75}  # photos taken from each split of the source
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ATTRIBUTION = "README.dataset.txt"  # Roboflow's attribution and licence file


@dataclasses.dataclass(frozen=True)
class Sample:
    """What make_sample wrote."""

    photos: dict  # split -> photos written
    bytes: int  # bytes of every split folder


def pick(names, count):
    """count names spread evenly over sorted(names): the same photos on every run."""
    names = sorted(names)
    if count >= len(names):
        return names
    return [names[i * len(names) // count] for i in range(count)]


def _names_line(source):
    """The `names:` line of the source's data.yaml (kept as written: the class names)."""
    path = os.path.join(source, "data.yaml")
    try:
        with open(path) as f:
            lines = [line for line in f if line.startswith(("names:", "nc:"))]
    except OSError as e:
        raise cli.UserError(f"cannot read {path} ({e.strerror}): pass --source, a YOLO "
                            "export holding data.yaml") from None
    if not any(line.startswith("names:") for line in lines):
        raise cli.UserError(f"{path} has no names: line: is it a YOLO export's data.yaml?")
    return "".join(lines)


def make_sample(source, output, splits=None, longest=LONGEST, quality=QUALITY,
                overwrite=False):
    """Write the sample (see the module docstring) into output; returns a Sample."""
    splits = dict(SPLITS if splits is None else splits)
    names_line = _names_line(source)
    for split in splits:
        folder = os.path.join(output, split)
        if os.path.exists(folder):
            if not overwrite:
                raise cli.UserError(f"{folder} exists: pass --overwrite to make the sample again")
            shutil.rmtree(folder)
    written = {}
    for split, count in splits.items():
        images_in = os.path.join(source, split, "images")
        if not os.path.isdir(images_in):
            raise cli.UserError(f"{images_in} is not a folder: pass --source, a YOLO export "
                                f"with {split}/images/ and {split}/labels/")
        photos = pick([n for n in os.listdir(images_in)
                       if n.lower().endswith(IMAGE_SUFFIXES)], count)
        images_out = os.path.join(output, split, "images")
        labels_out = os.path.join(output, split, "labels")
        os.makedirs(images_out)
        os.makedirs(labels_out)
        for name in photos:
            stem = os.path.splitext(name)[0]
            image = cv2.imread(os.path.join(images_in, name), cv2.IMREAD_COLOR)
            if image is None:
                raise cli.UserError(f"{os.path.join(images_in, name)} is unreadable: a sample "
                                    "needs clean photos")
            cv2.imwrite(os.path.join(images_out, f"{stem}.jpg"), downscale(image, longest),
                        [cv2.IMWRITE_JPEG_QUALITY, quality])
            label = os.path.join(source, split, "labels", f"{stem}.txt")
            if os.path.exists(label):  # no label file: a negative photo, as in the source
                shutil.copyfile(label, os.path.join(labels_out, f"{stem}.txt"))
        written[split] = len(photos)
    with open(os.path.join(output, "data.yaml"), "w") as f:
        f.write("".join(f"{'val' if s == 'valid' else s}: {s}/images\n" for s in splits)
                + names_line)
    attribution = os.path.join(source, ATTRIBUTION)
    if os.path.exists(attribution):
        shutil.copyfile(attribution, os.path.join(output, ATTRIBUTION))
    return Sample(written, shrink.folder_bytes(os.path.join(output, s) for s in splits))


def main(argv=None):
    args = shrink.parser(
        "Make the small sample of cats in scenes shipped in samples/feral_cats.",
        "YOLO segmentation export (data.yaml, train/ and valid/)",
        os.path.join("samples", "feral_cats"), "the sample's split folders").parse_args(argv)
    made = make_sample(args.source, args.output, SPLITS, args.longest, args.quality,
                       args.overwrite)
    counts = ", ".join(f"{n} {s}" for s, n in made.photos.items())
    print(f"wrote {sum(made.photos.values())} photos ({counts}), "
          f"{made.bytes / 2**20:.1f} MB, into {args.output}")


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
