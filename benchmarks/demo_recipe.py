"""Which recipe the real-photo demo trains with: candidates scored on tuning splits.

    nice -n 5 python -m benchmarks.demo_recipe --out benchmarks/demo_recipe.json
                                          # every candidate, one after the other: ~20 min, 2 cores
    python -m benchmarks.demo_recipe --recipes d2-96,d2-128 --out /tmp/r.json --work-dir /tmp/r
    python -m benchmarks.demo_recipe --recipes d2-64-w76 --out /tmp/r.json --append

Honesty: a recipe is never chosen on the photos the demo reports. Both embedded
samples are split again by a fixed rule (SCENES_RULE, PETS_RULE) into fit and tune
photos, in copies of their layouts (files linked, not copied) where the split the
demo holds out holds the tune photos: the scenes' tuning export names fit/ as its
train split and tune/ as its val split; the pets' tuning folder lists the fit photos
as trainval.txt and the tune photos as test.txt. So every candidate runs exactly as
`python demo.py` runs (demo.run: one model on both sets, the last checkpoint scored
by evaluate.py on each set's whole photos at threshold 0.5), and the held-out photos
of the demo (the scenes' valid/, the pets' test.txt) are never read.

Candidates (RECIPES) override demo.SCRATCH_TRAINING's network, photo size, windows and
epochs; their epochs give about the same training compute (benchmarks/flops.py's FLOPs
per window times windows), so each fits the demo's time budget. The ranking is the
mean of the two tune IoUs (each kind of photo counts the same). When
../shared/data/coco_tiny exists, its cat photos are scored too (never trained on,
never used to choose).

Writes --out (JSON) and the same name with .md (the table), atomically, at the end;
work files (tuning layouts, records, run dirs) go to a temp dir, or --work-dir.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from utils import quiet  # noqa: E402, F401  (first: the converters import TensorFlow)

# isort: split
import yaml  # noqa: E402

import convert_pets  # noqa: E402
import convert_yolo  # noqa: E402
import demo  # noqa: E402
import evaluate  # noqa: E402
from benchmarks import flops, quality  # noqa: E402
from utils import cli, errors  # noqa: E402

TUNE_EVERY = 4
SCENES_RULE = ("the scenes' train photos sorted by file name: index % 4 == 3 -> tune "
               "(56 of 225), the others -> fit")
PETS_RULE = "benchmarks/quality.py's: " + quality.SPLIT_RULE.split(";")[0]


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    settings: dict  # over demo.SCRATCH_TRAINING
    about: str = ""


def _recipe(depth, long_side, input_size, val_input_size, epochs, val_every=3):
    return {"depth": depth, "long_side": long_side, "input_size": input_size,
            "val_input_size": val_input_size, "epochs": epochs, "val_every": val_every}


# About 6,200 GFLOP of training each on the fit photos (8,700 on the demo's full splits).
RECIPES = (
    Recipe("d3-128", _recipe(3, 128, 156, 220, 9),
           "depth 3, 128 px photos, 156 px windows, 9 epochs (the issue's)"),
    Recipe("d3-128-w124", _recipe(3, 128, 124, 220, 18),
           "depth 3, 128 px photos, 124 px windows, 18 epochs"),
    Recipe("d3-96", _recipe(3, 96, 124, 188, 18),
           "depth 3, 96 px photos, 124 px windows, 18 epochs"),
    Recipe("d2-96", _recipe(2, 96, 100, 136, 24),
           "depth 2, 96 px photos, 100 px windows, 24 epochs"),
    Recipe("d2-128", _recipe(2, 128, 100, 168, 24),
           "depth 2, 128 px photos, 100 px windows, 24 epochs"),
    Recipe("d2-96-w76", _recipe(2, 96, 76, 136, 48, 6),
           "depth 2, 96 px photos, 76 px windows, 48 epochs"),
    Recipe("d2-64-w76", _recipe(2, 64, 76, 108, 48, 6),
           "depth 2, 64 px photos, 76 px windows, 48 epochs"),
    Recipe("d2-48-w76", _recipe(2, 48, 76, 92, 48, 6),
           "depth 2, 48 px photos, 76 px windows, 48 epochs (the pets-only demo's network)"),
)
BY_NAME = {r.name: r for r in RECIPES}
CHOSEN = "d2-64-w76"  # the best mean tune IoU (docs/train.md, "The demo"): demo.SCRATCH_TRAINING


def settings_of(recipe):
    return {**demo.SCRATCH_TRAINING, **recipe.settings}


def compute(settings, windows):
    """Training GFLOPs of `windows` windows under `settings`."""
    return flops.train_step_flops(settings["input_size"], settings["depth"],
                                  settings["base_filters"]) * windows / 1e9


# ------------------------------------------------------------ tuning layouts


def make_scenes_tune(scenes_dir, out):
    """A YOLO export in `out` whose train split is the fit photos and val the tune ones."""
    export = convert_yolo.load_export(scenes_dir)
    images = convert_yolo.image_dir(export, "train")
    labels = convert_yolo.label_dir(images)
    files = sorted(f for f in os.listdir(images) if f.lower().endswith(convert_yolo.IMAGE_SUFFIXES))
    for i, name in enumerate(files):
        part = "tune" if i % TUNE_EVERY == TUNE_EVERY - 1 else "fit"
        for folder, kind, file in ((images, "images", name),
                                   (labels, "labels", os.path.splitext(name)[0] + ".txt")):
            os.makedirs(os.path.join(out, part, kind), exist_ok=True)
            if os.path.exists(os.path.join(folder, file)):
                os.symlink(os.path.join(folder, file), os.path.join(out, part, kind, file))
    with open(os.path.join(out, "data.yaml"), "w") as f:
        yaml.safe_dump({"train": "fit/images", "val": "tune/images",
                        "names": [export.names[i] for i in sorted(export.names)]}, f)
    return out


def make_pets_tune(pets_dir, out):
    """A pets layout in `out`: trainval.txt the fit photos, test.txt the tune photos."""
    photos, _ = convert_pets.load_split(pets_dir, "trainval")
    fit, tune = quality.split_trainval(photos)
    source = os.path.join(os.path.abspath(pets_dir), "annotations")
    os.makedirs(os.path.join(out, "annotations"))
    os.symlink(os.path.join(os.path.abspath(pets_dir), "images"), os.path.join(out, "images"))
    os.symlink(os.path.join(source, "trimaps"), os.path.join(out, "annotations", "trimaps"))
    shutil.copy(os.path.join(source, "list.txt"), os.path.join(out, "annotations"))
    for name, chosen in (("trainval", fit), ("test", tune)):
        with open(os.path.join(out, "annotations", f"{name}.txt"), "w") as f:
            f.writelines(f"{p.name} {p.class_id} {p.species} {p.breed_id}\n" for p in chosen)
    return out


# ------------------------------------------------------------ runs


def run_recipe(recipe, work, scenes_tune, pets_tune, coco, log=print):
    """One candidate, as demo.run runs it; returns its row."""
    settings = settings_of(recipe)
    run_dir = os.path.join(work, "runs", recipe.name)
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.time()
    result = demo.run("photos", os.path.join(work, "data"), run_dir, scenes_dir=scenes_tune,
                      pets_dir=pets_tune, **recipe.settings)
    seconds = time.time() - start
    (scenes, pets) = (h.evaluation for h in result.held_out)
    windows = result.training.step * settings["batch_size"]
    row = {"name": recipe.name, "about": recipe.about, "settings": settings,
           "steps": result.training.step, "gflops": round(compute(settings, windows)),
           "train_seconds": round(result.training.train_seconds, 1),
           "seconds": round(seconds, 1),
           "tune_scenes": round(scenes.model["foreground_iou"], 4),
           "tune_pets": round(pets.model["foreground_iou"], 4),
           "tune_scenes_photos": scenes.images, "tune_pets_photos": pets.images}
    row["tune_mean"] = round((row["tune_scenes"] + row["tune_pets"]) / 2, 4)
    if coco:
        got = evaluate.evaluate(run_dir, coco, checkpoint=result.training.checkpoint,
                                progress=False, adopt=False)
        row["coco"] = round(got.model["foreground_iou"], 4)
    log(f"{recipe.name}: tune IoU scenes {row['tune_scenes']:.3f}, pets {row['tune_pets']:.3f} "
        f"(mean {row['tune_mean']:.3f}), {row['steps']} steps, {row['seconds']:.0f} s")
    return row


def table(rows, cpu):
    lines = [f"Tune IoU of each candidate (benchmarks/demo_recipe.py; {cpu}). Scenes: "
             f"{SCENES_RULE}. Pets: {PETS_RULE}.", "",
             "| candidate | steps | GFLOP | tune IoU, scenes | tune IoU, pets | mean | "
             "COCO cats | seconds |", "|---|---|---|---|---|---|---|---|"]
    best = max(rows, key=lambda r: r["tune_mean"])["name"]
    for r in rows:
        name = f"**{r['about']}**" if r["name"] == best else r["about"]
        coco = f"{r['coco']:.3f}" if "coco" in r else ""
        lines.append(f"| {name} | {r['steps']} | {r['gflops']:,} | {r['tune_scenes']:.3f} | "
                     f"{r['tune_pets']:.3f} | {r['tune_mean']:.3f} | {coco} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f", {os.cpu_count()} vCPUs"
    except OSError:
        pass
    return "unknown CPU"


def write(out, rows, cpu):
    errors.write_json(out, {"cpu": cpu, "scenes_rule": SCENES_RULE, "pets_rule": PETS_RULE,
                            "rows": rows}, sort_keys=False)
    errors.write_atomic(os.path.splitext(out)[0] + ".md", table(rows, cpu))


@contextlib.contextmanager
def scratch(work_dir, prefix):
    """Yields work_dir, or a temp dir (removed at the end) when none is given: where a
    benchmark's records, layouts and runs go."""
    work = work_dir or tempfile.mkdtemp(prefix=prefix)
    try:
        yield work
    finally:
        if not work_dir:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", default=",".join(BY_NAME),
                   help=f"comma list of {', '.join(BY_NAME)}")
    p.add_argument("--out", required=True, help="the JSON report (and .md beside it)")
    p.add_argument("--work-dir", help="for records and runs (default: a temp dir, removed)")
    p.add_argument("--append", action="store_true", help="keep the rows already in --out "
                   "(a candidate run again replaces its row)")
    p.add_argument("--scenes", default=demo.SCENES_DIR, help="the YOLO export to split")
    p.add_argument("--pets-dir", default=demo.PETS_DIR)
    args = p.parse_args(argv)
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise cli.UsageError(f"unknown recipe {', '.join(unknown)}: choose from "
                             f"{', '.join(BY_NAME)}")
    cli.setup_logging()
    with scratch(args.work_dir, "demo_recipe-") as work:
        layouts = os.path.join(work, "layouts")
        if not os.path.isdir(layouts):
            make_scenes_tune(args.scenes, os.path.join(layouts, "scenes"))
            make_pets_tune(args.pets_dir, os.path.join(layouts, "pets"))
        coco = None
        if os.path.isdir(quality.SHARED_COCO):
            output = os.path.join(work, "data", "coco_cat")
            if not os.path.exists(f"{output}-val2017-stats.json"):
                quality.convert_coco_cats(quality.SHARED_COCO, output)
            coco = f"{output}-*2017-*.tfrecord"
        rows, cpu = [], cpu_name()
        if args.append and os.path.exists(args.out):
            with open(args.out) as f:
                rows = [r for r in json.load(f)["rows"] if r["name"] not in names]
        for name in names:
            rows.append(run_recipe(BY_NAME[name], work, os.path.join(layouts, "scenes"),
                                   os.path.join(layouts, "pets"), coco))
            write(args.out, rows, cpu)  # after each: a long run keeps what it measured
    print(table(rows, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
