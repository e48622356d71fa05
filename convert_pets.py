"""Convert the Oxford-IIIT Pet dataset into sharded TFRecords of image + species mask.

    python convert_pets.py --pets-dir DIR --split trainval --species cat --output data/pets_cat

reads the official layout (DIR/images/*.jpg, DIR/annotations/{list,<split>}.txt and
trimaps/*.png) and writes the same records (datasets/records.py) and shards and stats
(datasets/shards.py) as convert_coco.py, so every later stage reads them unchanged.
Flags, masks, image ids, stats and bad files: docs/convert_pets.md.

    --species cat       cats 1 (dogs only as --negatives, all 0)
    --species cat dog   cats 1, dogs 2: the order given is the mask value
    --species both      cats and dogs both 1: one "pet" class, as before class indices
"""

from utils import quiet  # noqa: F401  (first: filters TensorFlow's start-up noise)

# isort: split
import dataclasses
import hashlib
import logging
import os
import sys

import cv2
import numpy as np

from datasets import photos, records, shards
from utils import cli

log = logging.getLogger(__name__)

SPLITS = ("trainval", "test")
SPECIES = {"cat": 1, "dog": 2}  # list.txt's SPECIES column
BOTH = "both"  # cats and dogs as one class, value 1
SPECIES_CHOICES = (*SPECIES, BOTH)
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
POSITIVE = -1  # a border policy's stand-in for the photo's own class value
BORDER = {"ignore": records.IGNORE, "positive": POSITIVE, "background": records.BACKGROUND}
ID_STRIDE = 10000  # image id = CLASS-ID * ID_STRIDE + number; breeds hold ~200 photos
LIST_COLUMNS = "Image CLASS-ID SPECIES BREED-ID"


@dataclasses.dataclass(frozen=True)
class Photo:
    """One line of list.txt."""

    name: str  # file stem, e.g. "Abyssinian_100" (images/<name>.jpg, trimaps/<name>.png)
    class_id: int  # breed, 1..37
    species: int  # 1 cat, 2 dog
    breed_id: int  # breed within the species
    number: int  # the photo's number within its breed, from the name

    @property
    def image_id(self):
        return self.class_id * ID_STRIDE + self.number


# ---------------------------------------------------------------- annotations


def _parse_line(line, where):
    fields = line.split()
    if len(fields) != 4:
        raise cli.UserError(f"{where} is malformed: {line.strip()[:80]!r} should be "
                            f"'{LIST_COLUMNS}'; fix or remove the line")
    name, *numbers = fields
    breed, _, number = name.rpartition("_")
    if not (breed and number.isdigit() and int(number) < ID_STRIDE
            and all(n.isdigit() for n in numbers)):
        raise cli.UserError(f"{where} is malformed: {line.strip()[:80]!r} should be "
                            f"'{LIST_COLUMNS}' with a name BREED_NUMBER (number < {ID_STRIDE}) "
                            "and whole numbers; fix or remove the line")
    class_id, species, breed_id = map(int, numbers)
    if species not in SPECIES.values():
        raise cli.UserError(f"{where}: unknown species {species} for {name} (1 = cat, 2 = dog); "
                            "fix the line")
    return Photo(name, class_id, species, breed_id, int(number))


def read_list(path, hint):
    """(photos in file order, the file's bytes) of list.txt or a split file; `hint` fixes a
    missing file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise cli.UserError(f"{path} not found: {hint}") from None
    except OSError as e:
        raise cli.UserError(f"cannot read {path} ({e.strerror}): check its permissions") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise cli.UserError(f"{path} is not a text file: unpack annotations.tar.gz "
                            "again") from None
    found, ids = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        photo = _parse_line(line, f"line {number} of {path}")
        if photo.image_id in ids:
            raise cli.UserError(f"line {number} of {path}: {photo.name} repeats line "
                                f"{ids[photo.image_id]} (or has its breed and number); "
                                "remove one")
        ids[photo.image_id] = number
        found.append(photo)
    return found, raw


def load_split(pets_dir, split):
    """(the split's photos sorted by image id, sha1 of list.txt + the split file)."""
    if not os.path.isdir(pets_dir):
        raise cli.UserError(f"Oxford-IIIT Pet directory {pets_dir} does not exist: pass "
                            "--pets-dir, the folder that holds images/ and annotations/")
    annotations = os.path.join(pets_dir, "annotations")
    hint = f"unpack annotations.tar.gz into {pets_dir}"
    catalogue, list_raw = read_list(os.path.join(annotations, "list.txt"), hint)
    split_path = os.path.join(annotations, f"{split}.txt")
    chosen, split_raw = read_list(split_path, f"{hint}, or check --split")
    by_name = {p.name: p for p in catalogue}
    for photo in chosen:
        if photo.name not in by_name:
            raise cli.UserError(f"{photo.name} of {split_path} is not in list.txt: the "
                                "annotation files do not belong together; unpack them again")
        if by_name[photo.name] != photo:
            raise cli.UserError(f"{photo.name}'s line in {split_path} disagrees with list.txt: "
                                "the annotation files do not belong together; unpack them again")
    digest = hashlib.sha1(list_raw + b"\0" + split_raw).hexdigest()
    return sorted(chosen, key=lambda p: p.image_id), digest


def species_values(species):
    """{SPECIES id: mask value} of --species: names in the order given (cat, dog or
    both, which stands alone); UsageError for a name unknown or given twice."""
    species = (species,) if isinstance(species, str) else tuple(species)
    if BOTH in species and len(species) > 1:
        raise cli.UsageError("--species both is cats and dogs as one class: pass it alone, "
                             "or --species cat dog for two classes")
    shards.chosen_classes(species, SPECIES_CHOICES, "--species", usage=True)
    if species == (BOTH,):
        return dict.fromkeys(SPECIES.values(), records.FOREGROUND)
    return {SPECIES[name]: k for k, name in enumerate(species, 1)}


def trimap_to_mask(trimap, border="ignore", value=records.FOREGROUND):
    """[H, W] uint8 mask of an [H, W] trimap: pet `value` (the photo's class), background
    0, border BORDER[border] (positive: `value`)."""
    mask = np.full(trimap.shape, records.BACKGROUND, np.uint8)
    mask[trimap == TRIMAP_PET] = value
    mask[trimap == TRIMAP_BORDER] = value if BORDER[border] == POSITIVE else BORDER[border]
    return mask


# ---------------------------------------------------------------- images


def read_trimap(path, height, width):
    """[H, W] uint8 trimap of the photo; raises photos.BadImage."""
    try:
        trimap = photos.decode(path, "unpack annotations.tar.gz again", what="trimap")[1]
    except photos.BadImage as e:
        if e.args[0] != "corrupt":  # missing or unreadable
            raise photos.BadImage("missing_trimap", e.args[1]) from None
        trimap = None
    if trimap is None or trimap.ndim != 2 or trimap.dtype != np.uint8:
        raise photos.BadImage("bad_trimap", f"trimap {path} is not a readable 1-channel 8-bit "
                              "PNG: unpack annotations.tar.gz again")
    if trimap.shape != (height, width):
        raise photos.BadImage("size_mismatch", f"trimap {path} is {trimap.shape[1]}x"
                              f"{trimap.shape[0]} but its image is {width}x{height}: wrong "
                              "file or trimap")
    values = set(np.unique(trimap).tolist()) - {TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER}
    if values:
        raise photos.BadImage("bad_trimap", f"trimap {path} holds value {min(values)} (a "
                              "trimap holds only 1 pet, 2 background, 3 border): unpack "
                              "annotations.tar.gz again")
    return trimap


def encode_image(task):
    """Worker: (index, make_example args, counts, None), or (index, None, None, (reason, msg))."""
    index, pets_dir, name, image_id, value, border, num_classes = task  # value 0: a negative
    positive = value != records.BACKGROUND
    filename = f"{name}.jpg"
    has_border = False
    try:
        path = os.path.join(pets_dir, "images", filename)
        data, pixels = photos.decode(path, restore="unpack images.tar.gz again")
        height, width = pixels.shape[:2]
        if positive:
            trimap = read_trimap(os.path.join(pets_dir, "annotations", "trimaps", f"{name}.png"),
                                 height, width)
            mask = trimap_to_mask(trimap, border, value)
            has_border = bool((trimap == TRIMAP_BORDER).any())
        else:  # the other species: nothing of the chosen species anywhere
            mask = np.full((height, width), records.BACKGROUND, np.uint8)
        encoded, fmt = photos.record_image(path, data, pixels)
    except photos.BadImage as e:
        return index, None, None, e.args
    counts = {"instances": int(positive), "crowd_regions": int(has_border),
              **shards.mask_counts(mask, num_classes)}
    png = cv2.imencode(".png", mask)[1].tobytes()
    return index, (encoded, fmt, height, width, image_id, filename, png), counts, None


# ---------------------------------------------------------------- conversion


def convert(pets_dir, split="trainval", species="cat", output="data/pets_cat", num_shards=None,
            workers=None, border="ignore", negatives=0.0, seed=0, overwrite=False,
            skip_bad_images=False, progress=True):
    """Convert one split (docs/convert_pets.md); returns the stats dict it also saves.

    species: a name or names of SPECIES_CHOICES (module docstring)."""
    values = species_values(species)
    wanted = list(values)  # SPECIES ids in the order given
    if border not in BORDER:
        raise cli.UsageError(f"border policy must be one of {', '.join(BORDER)}, got {border!r}")
    if negatives < 0 or (num_shards is not None and num_shards < 1):
        raise cli.UsageError("need negatives >= 0 and num_shards >= 1")
    if not overwrite:
        shards.refuse_finished(output, split)
    chosen, digest = load_split(pets_dir, split)
    by_id = {i: name for name, i in SPECIES.items()}
    classes = [by_id[i] for i in wanted]
    num_classes = max(values.values())  # both: 1
    positives = [p for p in chosen if p.species in wanted]
    if not positives:
        raise cli.UserError(f"no photo of {split} is a {' or '.join(classes)}: check --species "
                            "and --split")
    others = [p.image_id for p in chosen if p.species not in wanted]
    if negatives and not others:
        log.warning("--negatives %g adds nothing: %s holds no photo of another species",
                    negatives, split)
    negative_ids = set(shards.draw_negatives(others, len(positives), negatives, seed))
    selected = [p for p in chosen if p.species in wanted or p.image_id in negative_ids]
    image_dir = os.path.join(pets_dir, "images")
    if not os.path.isdir(image_dir):
        raise cli.UserError(f"image folder {image_dir} not found: unpack images.tar.gz into "
                            f"{pets_dir}")
    num_shards = num_shards or shards.default_num_shards(
        os.path.join(image_dir, f"{p.name}.jpg") for p in selected)
    settings = {"split": split, "classes": classes, "category_ids": wanted, "crowd": border,
                "negatives": negatives, "seed": seed}
    plan = {**settings, "annotations_sha1": digest, "num_shards": num_shards,
            "images": len(selected), "schema_version": records.SCHEMA_VERSION}
    tasks = [(i, pets_dir, p.name, p.image_id, values.get(p.species, records.BACKGROUND),
              border, num_classes)
             for i, p in enumerate(selected)]  # plain values: workers unpickle them
    job = shards.Job(output, split, plan, settings, tasks,
                     frozenset(i for i, p in enumerate(selected) if p.species in wanted),
                     encode_image, "convert_pets", num_classes=num_classes)
    return shards.write(job, workers, overwrite, skip_bad_images, progress)


def main(argv=None):
    p = cli.ArgumentParser(description="Convert the Oxford-IIIT Pet dataset into TFRecords of "
                           "image + species mask for training the U-Net.")
    p.add_argument("--pets-dir", required=True,
                   help="folder holding images/ and annotations/ (images.tar.gz and "
                   "annotations.tar.gz unpacked)")
    p.add_argument("--split", choices=SPLITS, default="trainval",
                   help="annotations/<split>.txt lists the photos (default: trainval)")
    p.add_argument("--species", nargs="+", default=["cat"], metavar="NAME",
                   help="cat, dog, or both: the mask's classes, the first value 1, the next 2 "
                   "(cat dog: cats 1, dogs 2); both = cats and dogs as one class 1 "
                   "(default: cat)")
    p.add_argument("--output", help="output prefix (default: data/pets_<species>)")
    p.add_argument("--border", choices=tuple(BORDER), default="ignore",
                   help="trimap border (value 3): 255 ignore, 1 positive, or 0 background "
                   "(default: ignore)")
    shards.add_flags(p, "add this many photos of the other species (all-0 masks)",
                     "skip and count undecodable photos and missing or unusable trimaps")
    args = p.parse_args(argv)
    species = [s.strip() for arg in args.species for s in arg.split(",") if s.strip()]
    output = args.output or os.path.join(
        "data", "pets_" + "_".join(SPECIES if species == [BOTH] else species))
    cli.setup_logging()
    stats = convert(args.pets_dir, args.split, species, output, args.num_shards,
                    args.workers, args.border, args.negatives, args.seed, args.overwrite,
                    args.skip_bad_images, progress=not args.no_progress)
    print(shards.summary(stats, output, regions="border regions", flag="--border"))


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
