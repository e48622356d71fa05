"""Make samples/oxford_pets/: real Oxford-IIIT Pet photos, small enough to ship in the repo.

    python -m samples.make_pets_sample --source ../shared/data/oxford_pets_sample \
        --output samples/oxford_pets --overwrite

The source is the official layout (the full release, or a folder of it such as
the 300-photo one above). The sample keeps that layout, so
`convert_pets.py --pets-dir samples/oxford_pets` reads it directly:

- photos: the source's trainval photos of BREEDS, each downscaled so its
  longer side is LONGEST px (cv2.INTER_AREA; never upscaled) and saved as
  JPEG quality QUALITY; trimaps resized to the same size by nearest neighbour,
  so they still hold only 1, 2 and 3;
- annotations/list.txt: the source's header comments, then the photos' lines;
- the split (split_rule): within each breed, photos sorted by their number,
  every HELD_OUT_EVERY-th (index % 4 == 3) goes to annotations/test.txt, the
  held-out validation photos; the rest to annotations/trainval.txt. This
  test.txt is taken from the official trainval photos, NOT the official test split;
- annotations/README: the dataset's own README, copied.

README.md beside images/ and annotations/ is written by hand and left alone.
"""

import dataclasses
import os
import shutil
import sys

import cv2

import convert_pets
from samples import shrink
from samples.shrink import LONGEST, QUALITY
from utils import cli

BREEDS = ("Abyssinian", "Bengal", "american_bulldog")  # 2 cat breeds, 1 dog breed
HELD_OUT_EVERY = 4  # every 4th photo of a breed is held out for validation


@dataclasses.dataclass(frozen=True)
class Sample:
    """What make_sample wrote."""

    trainval: int  # photos in annotations/trainval.txt
    test: int  # photos in annotations/test.txt
    bytes: int  # bytes of images/ and annotations/


def breed(photo):
    return photo.name.rpartition("_")[0]


def split_rule(photos):
    """(trainval, test) lists of convert_pets.Photo: within each breed, sorted by number,
    index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 is held out."""
    trainval, test = [], []
    by_breed = {}
    for photo in photos:
        by_breed.setdefault(breed(photo), []).append(photo)
    for name in sorted(by_breed):
        for i, photo in enumerate(sorted(by_breed[name], key=lambda p: p.number)):
            (test if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else trainval).append(photo)
    return trainval, test


def downscale(image, trimap, longest=LONGEST):
    """Image [H, W, 3] and trimap [H, W], resized so max(H, W) <= longest, same size."""
    return (shrink.downscale(image, longest),
            shrink.downscale(trimap, longest, cv2.INTER_NEAREST))


def _line(photo):
    return f"{photo.name} {photo.class_id} {photo.species} {photo.breed_id}\n"


def make_sample(source, output, breeds=BREEDS, longest=LONGEST, quality=QUALITY,
                overwrite=False):
    """Write the sample (see the module docstring) into output; returns a Sample."""
    annotations = os.path.join(source, "annotations")
    catalogue, _ = convert_pets.read_list(os.path.join(annotations, "list.txt"),
                                          f"pass --source, a folder holding {annotations}")
    trainval, _ = convert_pets.load_split(source, "trainval")
    photos = [p for p in trainval if breed(p) in breeds]
    if not photos:
        raise cli.UserError(f"{annotations}/trainval.txt lists no photo of {', '.join(breeds)}")
    images_out, annotations_out = (os.path.join(output, "images"),
                                   os.path.join(output, "annotations"))
    for folder in (images_out, annotations_out):
        if os.path.exists(folder):
            if not overwrite:
                raise cli.UserError(f"{folder} exists: pass --overwrite to make the sample again")
            shutil.rmtree(folder)
    os.makedirs(images_out)
    os.makedirs(os.path.join(annotations_out, "trimaps"))

    for photo in photos:
        image_path = os.path.join(source, "images", f"{photo.name}.jpg")
        trimap_path = os.path.join(annotations, "trimaps", f"{photo.name}.png")
        # stored-pixel order, as the trimap and convert_pets.py read it (no EXIF rotation)
        image = cv2.imread(image_path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        trimap = cv2.imread(trimap_path, cv2.IMREAD_UNCHANGED)
        if image is None or trimap is None or trimap.shape != image.shape[:2]:
            raise cli.UserError(f"{image_path} or its trimap {trimap_path} is missing, "
                                "unreadable or of another size: a sample needs clean photos")
        image, trimap = downscale(image, trimap, longest)
        cv2.imwrite(os.path.join(images_out, f"{photo.name}.jpg"), image,
                    [cv2.IMWRITE_JPEG_QUALITY, quality])
        cv2.imwrite(os.path.join(annotations_out, "trimaps", f"{photo.name}.png"), trimap)

    chosen = {p.name for p in photos}
    with open(os.path.join(annotations, "list.txt")) as f:
        header = [line for line in f if line.startswith("#")]
    with open(os.path.join(annotations_out, "list.txt"), "w") as f:
        f.writelines(header + [_line(p) for p in catalogue if p.name in chosen])
    held_in, held_out = split_rule(photos)
    for name, part in (("trainval", held_in), ("test", held_out)):
        with open(os.path.join(annotations_out, f"{name}.txt"), "w") as f:
            f.writelines(_line(p) for p in sorted(part, key=lambda p: p.image_id))
    shutil.copyfile(os.path.join(annotations, "README"), os.path.join(annotations_out, "README"))
    return Sample(len(held_in), len(held_out), shrink.folder_bytes((images_out, annotations_out)))


def main(argv=None):
    args = shrink.parser(
        "Make the small Oxford-IIIT Pet sample shipped in samples/oxford_pets.",
        "Oxford-IIIT Pet folder in the official layout (images/, annotations/)",
        os.path.join("samples", "oxford_pets"),
        "the sample's images/ and annotations/").parse_args(argv)
    made = make_sample(args.source, args.output, BREEDS, args.longest, args.quality,
                       args.overwrite)
    print(f"wrote {made.trainval + made.test} photos ({made.trainval} trainval, {made.test} "
          f"test), {made.bytes / 2**20:.1f} MB, into {args.output}")


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
