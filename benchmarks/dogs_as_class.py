"""Dogs as a class of their own, or as negatives: which gives the better cat IoU (issue 24).

    nice -n 5 python -m benchmarks.dogs_as_class --out benchmarks/dogs_as_class.json
                                 # 2 arms x 3 seeds, one after the other: ~30 min, 2 loaded cores
    python -m benchmarks.dogs_as_class --seeds 0 --out /tmp/d.json --work-dir /tmp/d
    nice -n 5 python -m benchmarks.dogs_as_class --with-scenes \
        --out benchmarks/dogs_as_class_scenes.json   # as the default demo trains: ~20 min

The same pet photos, the same recipe (demo.SCRATCH_TRAINING), the same scoring; only the
dogs' label differs:
- negatives: `convert_pets --species cat --negatives 1`, the default demo's pet records
  (the embedded sample has fewer dogs than cats, so every dog photo is in), one sigmoid
  output; cat IoU = foreground IoU at threshold 0.5;
- class: `convert_pets --species cat dog` (cat 1, dog 2), the 3-class model of
  `python demo.py --classes cat dog`, softmax; cat IoU = IoU of class 1 from the argmax.
In both the cat's false positives include the dogs taken for cat, so the two numbers
count the same pixels.

Honesty: the decision is made on tuning photos, never on the photos the demo reports.
The embedded pets' trainval photos are split by benchmarks/demo_recipe.py's rule (that
of benchmarks/quality.py) into fit photos (trained on) and tune photos (validated on
while training, and scored: the decision); the pets' test photos (the demo's held-out
set) are scored too, for the record. Each arm trains pets-only models (the scenes are
labelled cat only and cannot join a 3-class run) with seeds SEEDS; the seed noise is
the larger of the two arms' standard deviations over the seeds. The last checkpoint is
scored on whole photos by evaluate.py, as the demo scores.

--with-scenes trains as the default demo does, the scenes too (demo_recipe's fit/tune
split of them): the default demo's question. The scenes are labelled cat only; for the
class arm their tuning layout's data.yaml names a second class, dog, that no photo
labels, so convert_yolo makes cat/dog records of them (no dog pixels) which a cat/dog run
trains on. The decision stays the pets' tune cat IoU; the scenes' tune cat IoU is
reported beside it.

Dogs as a class become the demo's default only if their mean tune cat IoU beats the
negatives' by more than the seed noise (docs/quality.md, "Dogs as a class of their own").

Writes --out (JSON) and the same name with .md (the table), atomically, after every run;
work files (the tuning layout, records, run dirs) go to a temp dir, or --work-dir.
"""

import dataclasses
import os
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from utils import quiet  # noqa: E402, F401  (first: the converters import TensorFlow)

# isort: split
import yaml  # noqa: E402

import convert_pets  # noqa: E402
import demo  # noqa: E402
import evaluate  # noqa: E402
import train  # noqa: E402
from benchmarks import demo_recipe  # noqa: E402
from core import config  # noqa: E402
from utils import cli, errors  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    classes: tuple  # convert_pets --species, and the run's classes
    about: str


ARMS = (Arm("negatives", ("cat",), "dogs as negatives (the default demo's pets)"),
        Arm("class", ("cat", "dog"), "dogs a class of their own (demo --classes cat dog)"))
BY_NAME = {a.name: a for a in ARMS}
SEEDS = (0, 1, 2)


def cat_iou(report):
    """The cat IoU of an evaluate.Report: K >= 2 class 'cat' from the argmax, else the
    foreground IoU at the report's threshold (0.5)."""
    if report.classes:
        return next(r["iou"] for r in report.per_class if r["class"] == "cat")
    return report.model["foreground_iou"]


def test_records(pets_dir, data_dir, arm):
    """The demo's held-out pet photos (test.txt) converted as `arm` labels them."""
    output = os.path.join(data_dir, "test_pets_" + "_".join(arm.classes))
    if not os.path.exists(f"{output}-test-stats.json"):
        convert_pets.convert(pets_dir, "test", species=list(arm.classes), output=output,
                             negatives=1.0 if len(arm.classes) == 1 else 0.0, seed=0,
                             workers=1, overwrite=True, progress=False)
    return f"{output}-test-*.tfrecord"


def scenes_tune(scenes_dir, out, arm):
    """demo_recipe's fit/tune layout of the scenes, its data.yaml naming `arm`'s classes:
    for (cat, dog) a dog class no photo labels, so the cat-only scenes become cat/dog
    records without dog pixels, which a cat/dog run may train on."""
    if not os.path.isdir(out):
        demo_recipe.make_scenes_tune(scenes_dir, out)
        with open(os.path.join(out, "data.yaml"), "w") as f:
            yaml.safe_dump({"train": "fit/images", "val": "tune/images",
                            "names": list(arm.classes)}, f)
    return out


def run_arm(arm, seed, work, pets_tune, pets_dir, scenes_dir=None, log=print):
    """One model of `arm` with `seed`, on the pets alone or (scenes_dir) with the scenes as
    the demo trains; returns its row."""
    data = os.path.join(work, "data")
    # Conversion seed 0 in every run: all seeds train on the very same records.
    pets = demo.prepare_pets(data, 0, pets_tune, arm.classes)
    test = test_records(pets_dir, data, arm)
    sets = [pets]
    if scenes_dir:
        layout = scenes_tune(scenes_dir, os.path.join(work, "layouts", f"scenes_{arm.name}"), arm)
        sets.insert(0, demo.prepare_scenes(data, 0, layout))
    run_dir = os.path.join(work, "runs", f"{arm.name}-seed{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = {**demo.SCRATCH_TRAINING, "seed": seed}
    one = len(sets) == 1  # one glob is a glob, not a list of sets
    cfg = config.Config(train_records=sets[0].train if one else tuple(s.train for s in sets),
                        val_records=sets[0].held_out if one else tuple(s.held_out for s in sets),
                        run_dir=run_dir, classes=arm.classes, **settings)
    start = time.time()
    result = train.train(cfg)
    scored = [("tune", pets.held_out), ("test", test)]
    if scenes_dir:
        scored.append(("tune_scenes", sets[0].held_out))
    scores = {name: evaluate.evaluate(run_dir, records, checkpoint=result.checkpoint,
                                      progress=False, adopt=False)
              for name, records in scored}
    row = {"arm": arm.name, "classes": list(arm.classes), "seed": seed,
           "steps": result.step,
           "train_seconds": round(result.train_seconds, 1),
           "seconds": round(time.time() - start, 1)}
    for name, got in scores.items():
        row[f"{name}_cat_iou"] = round(cat_iou(got), 4)
        row[f"{name}_photos"] = got.images
        if got.classes:
            row[f"{name}_dog_iou"] = round(next(r["iou"] for r in got.per_class
                                                if r["class"] == "dog"), 4)
            row[f"{name}_mean_iou"] = round(got.model["mean_iou"], 4)
    scenes = (f", tune scenes {row['tune_scenes_cat_iou']:.3f}" if scenes_dir else "")
    log(f"{arm.name} seed {seed}: cat IoU tune {row['tune_cat_iou']:.3f}, test "
        f"{row['test_cat_iou']:.3f}{scenes}, {row['steps']} steps, {row['seconds']:.0f} s")
    return row


@dataclasses.dataclass(frozen=True)
class Summary:
    """Per arm {split: mean, std} of the cat IoU; the decision on tune."""

    means: dict  # {arm: {"tune": float, "test": float}}
    stds: dict  # {arm: {"tune": float, "test": float}} over the seeds (0.0 for one seed)
    noise: float  # the larger arm's tune std: the seed noise
    margin: float  # class's mean tune cat IoU minus negatives'
    adopt: bool  # class wins on tune by more than the noise


def summarise(rows):
    means, stds = {}, {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm.name]
        if not mine:
            continue
        for split in ("tune", "test"):
            values = [r[f"{split}_cat_iou"] for r in mine]
            means.setdefault(arm.name, {})[split] = statistics.fmean(values)
            stds.setdefault(arm.name, {})[split] = (statistics.stdev(values)
                                                    if len(values) > 1 else 0.0)
    if len(means) < len(ARMS):
        return None
    noise = max(s["tune"] for s in stds.values())
    margin = means["class"]["tune"] - means["negatives"]["tune"]
    return Summary(means, stds, noise, margin, margin > noise)


def table(rows, cpu):
    scenes = any("tune_scenes_cat_iou" in r for r in rows)
    models = ("models of the scenes and the pets together, as the default demo trains"
              if scenes else "pets-only models")
    lines = [f"Cat IoU, {models}, demo.SCRATCH_TRAINING's recipe, last checkpoint, "
             f"whole photos (benchmarks/dogs_as_class.py; {cpu}). Tune: "
             f"{demo_recipe.PETS_RULE}; test: the embedded pets' test.txt (the demo's "
             "held-out photos)" + (f"; scenes: {demo_recipe.SCENES_RULE}" if scenes else "")
             + ".", "",
             "| dogs | seed | steps | tune cat IoU | test cat IoU | tune dog IoU | tune mIoU | "
             + ("tune cat IoU, scenes | " if scenes else "") + "seconds |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if scenes else "")]
    for r in rows:
        dog = f"{r['tune_dog_iou']:.3f}" if "tune_dog_iou" in r else ""
        miou = f"{r['tune_mean_iou']:.3f}" if "tune_mean_iou" in r else ""
        scene = f"{r['tune_scenes_cat_iou']:.3f} | " if scenes else ""
        lines.append(f"| {BY_NAME[r['arm']].about} | {r['seed']} | {r['steps']} | "
                     f"{r['tune_cat_iou']:.3f} | {r['test_cat_iou']:.3f} | {dog} | {miou} | "
                     f"{scene}{r['seconds']:.0f} |")
    s = summarise(rows)
    if s:
        lines += ["", "| dogs | mean tune cat IoU (std) | mean test cat IoU (std) |",
                  "|---|---|---|"]
        for arm in ARMS:
            m, d = s.means[arm.name], s.stds[arm.name]
            lines.append(f"| {arm.about} | {m['tune']:.3f} ({d['tune']:.3f}) | "
                         f"{m['test']:.3f} ({d['test']:.3f}) |")
        verdict = ("dogs as a class win by more than the noise: adopt them"
                   if s.adopt else "not more than the noise: the demo keeps dogs as negatives")
        lines += ["", f"Tune margin (class - negatives) {s.margin:+.3f}, seed noise (the larger "
                  f"tune std) {s.noise:.3f}: {verdict}."]
    return "\n".join(lines) + "\n"


def write(out, rows, cpu):
    s = summarise(rows)
    summary = dataclasses.asdict(s) if s else None
    errors.write_json(out, {"cpu": cpu, "pets_rule": demo_recipe.PETS_RULE,
                            "recipe": demo.SCRATCH_TRAINING, "rows": rows, "summary": summary},
                      sort_keys=False)
    errors.write_atomic(os.path.splitext(out)[0] + ".md", table(rows, cpu))


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="the JSON report (and .md beside it)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma list of seeds")
    p.add_argument("--arms", default=",".join(BY_NAME), help=f"comma list of "
                   f"{', '.join(BY_NAME)}")
    p.add_argument("--work-dir", help="for records and runs (default: a temp dir, removed)")
    p.add_argument("--pets-dir", default=demo.PETS_DIR)
    p.add_argument("--with-scenes", nargs="?", const=demo.SCENES_DIR, metavar="DIR",
                   help="train as the default demo does, the scenes (demo_recipe's fit/tune "
                   "split of DIR, default the embedded ones) with the pets; the decision stays "
                   "the pets' tune cat IoU, the scenes' is reported")
    p.add_argument("--cpu", help="how the report names the CPU (default: /proc/cpuinfo's)")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise cli.UsageError(f"--seeds {args.seeds}: pass whole numbers, e.g. 0,1,2") from None
    unknown = [a for a in args.arms.split(",") if a not in BY_NAME]
    if unknown:
        raise cli.UsageError(f"unknown arm {', '.join(unknown)}: choose from "
                             f"{', '.join(BY_NAME)}")
    arms = [BY_NAME[a] for a in args.arms.split(",")]
    cli.setup_logging()
    cpu = args.cpu or demo_recipe.cpu_name()
    rows = []
    with demo_recipe.scratch(args.work_dir, "dogs_as_class-") as work:
        pets_tune = os.path.join(work, "layouts", "pets")
        if not os.path.isdir(pets_tune):
            demo_recipe.make_pets_tune(args.pets_dir, pets_tune)
        for seed in seeds:  # seed by seed: a cut-short run still holds both arms
            for arm in arms:
                rows.append(run_arm(arm, seed, work, pets_tune, args.pets_dir,
                                    args.with_scenes))
                write(args.out, rows, cpu)  # after each: a long run keeps what it measured
    print(table(rows, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
