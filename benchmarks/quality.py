"""Quality benchmark: which training recipe segments cats best in the same time.

    python -m benchmarks.quality --out benchmarks/quality.json --plot docs/images/quality.png
                                                     # ~30 min on a quiet 2-core CPU
    python -m benchmarks.quality --quick --out /tmp/quality.json     # the wiring, ~2-5 min

The task is cat vs. everything on Oxford-IIIT Pet photos: species cat is the
foreground, dog photos are negatives (all-0 masks), the trimap border is
ignored (convert_pets.py --species cat --negatives all --border ignore).

Honesty: a recipe is never chosen on the images it is reported on. The
trainval photos are split by a fixed rule (split_trainval) into train (2/3)
and tune (1/3). Every recipe trains on train only; its score on tune ranks the
recipes and picks the recommended one; its scores on the sample's held-out
test photos and on the real COCO cats of ../shared/data/coco_tiny (when
present; never trained on) are reported and never used to choose.

Each recipe (RECIPES: train.py flags over one common Base) trains for the same
--minutes budget; two run at a time, each pinned to its own core with one
intra- and one inter-op thread, so each gets the same CPU. The Keras peer
(keras_seg_peer.py, the keras.io U-Net-like example) gets the same treatment
and time. Per recipe it records:

  curve    foreground IoU against training time: the run's own periodic
           validation on tune (train.py's val/ TensorBoard events; window
           crops, not full images), seconds since its training loop began
  scores   evaluate.py on FULL images of tune, test and COCO with the LAST
           checkpoint at threshold 0.5 (never the best-by-validation one, never
           a tuned threshold): dataset-level foreground IoU, Dice, pixel
           accuracy, and the all-background prediction's for comparison
  speed    steps done and training images per second

Writes --out (JSON) and the same name with .md (a table and the recommended
recipe), atomically, at the end; with --plot a PNG of the curves. Work files
(records, run dirs, one log per recipe) go to a temp dir, or --work-dir.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import datetime
import glob
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from utils import quiet  # noqa: E402, F401  (first: the converters import TensorFlow)

# isort: split
from benchmarks import keras_seg_peer, run  # noqa: E402
from utils import cli  # noqa: E402

SAMPLE_PETS = os.path.join(ROOT, "samples", "oxford_pets")
SHARED_COCO = os.path.join(os.path.dirname(ROOT), "shared", "data", "coco_tiny")
TUNE_EVERY = 3  # within each breed, sorted by number, every 3rd photo is tune
SPLIT_RULE = ("within each breed, trainval photos sorted by their number: index % 3 == 2 -> "
              "tune, the others -> train; test = the pets dir's annotations/test.txt")
ALL_NEGATIVES = 1e9  # convert_pets --negatives is capped at the photos there are: every dog
THRESHOLD = 0.5
# train.py's val/ tag of the foreground IoU ("iou" in runs from before core/metrics.py)
VAL_IOU_TAGS = ("foreground_iou", "iou")
BIG = "1000000"  # steps between periodic checkpoints / image summaries: none in the budget


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    flags: tuple = ()  # train.py flags; they come after the Base's, so they can override it
    kind: str = "train"  # "train": train.py + evaluate.py; "keras": keras_seg_peer.py
    about: str = ""


RECIPES = (
    Recipe("none", ("--augment", "none"), about="no augmentation"),
    Recipe("flip", ("--augment", "flip"), about="flips only (train.py's default)"),
    Recipe("rotate", ("--augment", "rotate"), about="rotation alone"),
    Recipe("scale", ("--augment", "scale"), about="zoom alone"),
    Recipe("elastic", ("--augment", "elastic"), about="elastic deformation alone"),
    Recipe("color", ("--augment", "color"), about="colour jitter alone"),
    Recipe("all", ("--augment", "all"), about="every augmentation group"),
    Recipe("dropout", ("--augment", "flip", "--dropout", "0.5"),
           about="flip, the paper's drop-out (0.5) at the end of the contracting path"),
    Recipe("long32", ("--augment", "flip", "--long-side", "32"), about="flip, photos at 32 px"),
    Recipe("long64", ("--augment", "flip", "--long-side", "64", "--val-input-size", "108"),
           about="flip, photos at 64 px"),
    Recipe("long96", ("--augment", "flip", "--long-side", "96", "--val-input-size", "140"),
           about="flip, photos at 96 px"),
    Recipe("bfloat16", ("--augment", "flip", "--precision", "bfloat16"),
           about="flip, bfloat16 (slow without AVX512_BF16/AMX)"),
    Recipe("keras", kind="keras", about="keras.io U-Net-like example (Xception-style, 160x160, "
           "rmsprop)"),
)
BY_NAME = {r.name: r for r in RECIPES}


@dataclasses.dataclass(frozen=True)
class Base:
    """The train.py settings every recipe shares (besides data, run dir, budget and seed)."""

    depth: int = 2  # the demo's recipe (docs/train.md, "The demo"), chosen on tune
    base_filters: int = 16
    long_side: int = 48  # photos at 48 px: the depth-2 network's field of view sees a pet
    input_size: int = 76  # 76 -> 36 px output windows at depth 2
    val_input_size: int = 92  # -> 52 px: whole photos when validating
    batch_size: int = 8
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"  # --minutes fits it to the budget
    dice_weight: float = 0.5
    val_every: int = 1  # epochs between points of the curve

    def flags(self):
        return ["--depth", str(self.depth), "--base-filters", str(self.base_filters),
                "--long-side", str(self.long_side), "--input-size", str(self.input_size),
                "--val-input-size", str(self.val_input_size),
                "--dice-weight", str(self.dice_weight), "--batch-size", str(self.batch_size),
                "--learning-rate", str(self.learning_rate), "--lr-schedule", self.lr_schedule,
                "--val-every", str(self.val_every)]


@dataclasses.dataclass(frozen=True)
class Plan:
    base: Base
    minutes: float
    recipes: tuple  # names
    peer_img_size: int = 160
    peer_batch_size: int = 32
    peer_filters: tuple = (32, 64, 128, 256)
    peer_jit_compile: object = "auto"  # the example's default; quick skips XLA's compile time


FULL = Plan(Base(), 4.0, tuple(r.name for r in RECIPES))
QUICK = Plan(Base(depth=2, base_filters=4, input_size=92, batch_size=2), 0.1, ("flip", "keras"),
             peer_img_size=32, peer_batch_size=2, peer_filters=(4, 8, 16, 32),
             peer_jit_compile=False)


@dataclasses.dataclass
class Sets:
    """Record globs of the data, and what each set holds."""

    train: str
    tune: str
    test: str
    coco: str | None  # None: no COCO dir, the column is skipped
    counts: dict  # {set: {"images", "positive_images", "negative_images"}}

    def scored(self):
        return {k: v for k, v in (("tune", self.tune), ("test", self.test),
                                  ("coco", self.coco)) if v}


@dataclasses.dataclass
class Outcome:
    recipe: str
    kind: str
    flags: list
    about: str = ""
    steps: int | None = None
    images_per_s: float | None = None
    curve: list = dataclasses.field(default_factory=list)  # [[seconds, tune window IoU]]
    first_step_seconds: float | None = None  # Keras peer: its first step (XLA compile) took
    scores: dict = dataclasses.field(default_factory=dict)  # {set: evaluate.py's numbers}
    error: str | None = None
    log: str = ""


# ------------------------------------------------------------ data


def split_trainval(photos):
    """(train, tune) lists of convert_pets.Photo by SPLIT_RULE, each in image id order."""
    by_breed = collections.defaultdict(list)
    for photo in photos:
        by_breed[photo.class_id].append(photo)
    train, tune = [], []
    for breed in sorted(by_breed):
        for i, photo in enumerate(sorted(by_breed[breed], key=lambda p: p.number)):
            (tune if i % TUNE_EVERY == TUNE_EVERY - 1 else train).append(photo)
    return (sorted(train, key=lambda p: p.image_id), sorted(tune, key=lambda p: p.image_id))


def make_split_dir(pets_dir, out_dir):
    """A pets layout in out_dir with annotations/{train,tune,test}.txt (images linked)."""
    import convert_pets

    photos, _ = convert_pets.load_split(pets_dir, "trainval")
    train, tune = split_trainval(photos)
    annotations = os.path.join(out_dir, "annotations")
    os.makedirs(annotations)
    source = os.path.join(os.path.abspath(pets_dir), "annotations")
    os.symlink(os.path.join(os.path.abspath(pets_dir), "images"),
               os.path.join(out_dir, "images"))
    os.symlink(os.path.join(source, "trimaps"), os.path.join(annotations, "trimaps"))
    for name in ("list.txt", "test.txt"):
        try:
            shutil.copy(os.path.join(source, name), annotations)
        except FileNotFoundError:
            raise cli.UserError(f"{os.path.join(source, name)} not found: --pets-dir must be "
                                "the official layout (annotations.tar.gz unpacked)") from None
    for name, chosen in (("train", train), ("tune", tune)):
        with open(os.path.join(annotations, f"{name}.txt"), "w") as f:
            f.writelines(f"{p.name} {p.class_id} {p.species} {p.breed_id}\n" for p in chosen)


def prepare_data(pets_dir, coco_dir, work, seed, log=print):
    """Convert train/tune/test (and COCO's cats) into records under work; returns Sets."""
    import convert_pets

    split_dir, data_dir = os.path.join(work, "pets_split"), os.path.join(work, "data")
    make_split_dir(pets_dir, split_dir)
    counts, patterns = {}, {}
    for split in ("train", "tune", "test"):
        output = os.path.join(data_dir, "pets_cat")
        stats = convert_pets.convert(split_dir, split, "cat", output, border="ignore",
                                     negatives=ALL_NEGATIVES, seed=seed, progress=False)
        counts[split] = {k: stats[k] for k in ("images", "positive_images", "negative_images")}
        patterns[split] = f"{output}-{split}-*.tfrecord"
        log(f"{split}: {stats['images']} photos (cats {stats['positive_images']}, "
            f"dogs {stats['negative_images']})")
    coco = convert_coco_cats(coco_dir, os.path.join(data_dir, "coco_cat")) if coco_dir else 0
    if coco:
        counts["coco"] = {"images": coco, "positive_images": coco, "negative_images": 0}
        log(f"coco: {coco} COCO photos with cats ({coco_dir})")
    return Sets(patterns["train"], patterns["tune"], patterns["test"],
                f"{data_dir}/coco_cat-*.tfrecord" if coco else None, counts)


def convert_coco_cats(coco_dir, output):
    """Records of the images with cats of every COCO split found; returns their number."""
    import convert_coco

    images = 0
    for split in ("train2017", "val2017"):
        if os.path.exists(os.path.join(coco_dir, "annotations", f"instances_{split}.json")):
            images += convert_coco.convert(coco_dir, split, ("cat",), output, negatives=0.0,
                                           progress=False)["images"]
    return images


# ------------------------------------------------------------ processes


PIN = ("import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
       "os.execv(sys.executable, [sys.executable] + sys.argv[2:])")


def python_command(args, core):
    """The command line running `python args...`, pinned to CPU `core` (None: unpinned).

    The child pins itself before exec, so every thread TensorFlow starts stays on the core.
    """
    if core is None:
        return [sys.executable, *args]
    return [sys.executable, "-c", PIN, str(core), *args]


def run_logged(args, core, log_path):
    """Run python args on core; stderr and stdout appended to log_path; (returncode, stdout)."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    with open(log_path, "a") as log:
        log.write(f"$ python {' '.join(args)}\n")
        log.flush()
        done = subprocess.run(python_command(args, core), cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=log)
        log.write(done.stdout)
    return done.returncode, done.stdout


def last_error(log_path):
    """The log's last `error:` line, else its last line: what a failed recipe reports."""
    with open(log_path, errors="replace") as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln]
    return (errors or lines or ["no output"])[-1][:300]


def cores_to_use(parallel):
    """[core, ...] for the jobs at once: the first `parallel` CPUs this process may use."""
    if not hasattr(os, "sched_setaffinity"):
        return [None] * parallel  # no pinning on this OS: the jobs share the CPUs
    return sorted(os.sched_getaffinity(0))[:parallel]


def run_jobs(jobs, cores):
    """Call every job(core) with a free core, len(cores) at a time; results in job order.

    After a job raises (e.g. Ctrl-C, which the running children get too), no other starts.
    """
    free, stop = queue.Queue(), threading.Event()
    for core in cores:
        free.put(core)

    def call(job):
        if stop.is_set():
            return None
        core = free.get()
        try:
            return job(core)
        except BaseException:
            stop.set()
            raise
        finally:
            free.put(core)

    pool = concurrent.futures.ThreadPoolExecutor(len(cores))
    try:
        return [f.result() for f in [pool.submit(call, job) for job in jobs]]
    finally:
        pool.shutdown(cancel_futures=True)


# ------------------------------------------------------------ one recipe


def train_args(recipe, plan, sets, minutes, seed, run_dir):
    return ["train.py", "--train-records", sets.train, "--val-records", sets.tune,
            "--run-dir", run_dir, *plan.base.flags(), "--minutes", str(minutes),
            "--seed", str(seed), "--intra-op-threads", "1", "--inter-op-threads", "1",
            "--checkpoint-every", BIG, "--image-summary-every", BIG, "--keep-checkpoints", "2",
            *recipe.flags]


def read_events(run_dir):
    """(curve [[seconds, iou]], images/s) from the run's TensorBoard events.

    Seconds count from the training loop's start (train/'s SessionLog START); images/s
    is windows trained between the first and last step events over that time.
    """
    import tensorflow as tf

    from core import rundir

    tf.get_logger().setLevel("ERROR")  # summary_iterator's deprecation notice

    def events(sub):
        for path in sorted(glob.glob(os.path.join(run_dir, sub, "events.out.tfevents.*"))):
            yield from tf.compat.v1.train.summary_iterator(path)

    start, costs = None, []
    for event in events("train"):
        if start is None and event.HasField("session_log"):
            start = event.wall_time
        costs += [(event.step, event.wall_time) for v in event.summary.value if v.tag == "cost"]
    if start is None:
        start = costs[0][1] if costs else 0.0
    curve = [[event.wall_time - start, float(v.simple_value)] for event in events("val")
             for v in event.summary.value if v.tag in VAL_IOU_TAGS]
    batch = rundir.load_config(run_dir).batch_size
    rate = None
    if len(costs) > 1 and costs[-1][1] > costs[0][1]:
        rate = (costs[-1][0] - costs[0][0]) * batch / (costs[-1][1] - costs[0][1])
    return curve, rate


def evaluate_json(result):
    """The part of evaluate.py's result this report keeps."""
    return {"images": result["images"], "model": result["model"],
            "all_background": result["all_background"]}


def train_recipe(recipe, plan, sets, minutes, seed, work, core, log=print):
    """Train one recipe pinned to core, score its last checkpoint; an Outcome."""
    run_dir = os.path.join(work, "runs", recipe.name)
    log_path = os.path.join(work, "logs", f"{recipe.name}.log")
    out = Outcome(recipe.name, recipe.kind, list(recipe.flags), recipe.about, log=log_path)
    log(f"{recipe.name}: training {minutes:g} min on core {core}")
    code, _ = run_logged(train_args(recipe, plan, sets, minutes, seed, run_dir), core, log_path)
    if code:
        out.error = f"train.py exited {code}: {last_error(log_path)}"
        return out
    for name, pattern in sets.scored().items():
        code, stdout = run_logged(["evaluate.py", "--run", run_dir, "--records", pattern,
                                   "--checkpoint", run_dir, "--threshold", str(THRESHOLD),
                                   "--no-adopt-threshold", "--no-progress"], core, log_path)
        wrote = re.search(r"^wrote (.+?\.json) and TensorBoard", stdout, re.M)
        if code or not wrote:
            out.error = f"evaluate.py on {name} exited {code}: {last_error(log_path)}"
            return out
        path = os.path.join(run_dir, f"quality-{name}.json")  # a name that says which set
        shutil.copy(wrote.group(1), path)
        with open(path) as f:
            result = json.load(f)
        out.scores[name] = evaluate_json(result)
        out.steps = result["global_step"]
    out.curve, out.images_per_s = read_events(run_dir)
    log(f"{recipe.name}: {_summary(out)}")
    return out


def peer_recipe(recipe, plan, sets, minutes, seed, work, core, log=print):
    """The Keras peer in its own process, pinned to core; an Outcome."""
    log_path = os.path.join(work, "logs", f"{recipe.name}.log")
    out = Outcome(recipe.name, recipe.kind, [], recipe.about, log=log_path)
    spec = keras_seg_peer.PeerSpec(
        train=sets.train, tune=sets.tune, sets=sets.scored(), minutes=minutes, seed=seed,
        img_size=plan.peer_img_size, batch_size=plan.peer_batch_size,
        filters=plan.peer_filters, val_every=plan.base.val_every,
        jit_compile=plan.peer_jit_compile)
    log(f"{recipe.name}: training {minutes:g} min on core {core}")
    code, stdout = run_logged(["-m", "benchmarks.keras_seg_peer",
                               json.dumps(dataclasses.asdict(spec))], core, log_path)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if code or not lines:
        out.error = f"keras_seg_peer exited {code}: {last_error(log_path)}"
        return out
    result = json.loads(lines[-1][len("RESULT "):])
    out.steps, out.images_per_s = result["steps"], result["images_per_s"]
    out.curve, out.scores = result["curve"], result["scores"]
    out.first_step_seconds = result["first_step_seconds"]
    log(f"{recipe.name}: {_summary(out)}")
    return out


def _summary(out):
    return ", ".join(f"{k} IoU {v['model']['foreground_iou']:.3f}" for k, v in out.scores.items())


# ------------------------------------------------------------ report


def recommended(outcomes):
    """Name of our recipe with the best tune IoU (the earlier on a tie), or None."""
    best = None
    for o in outcomes:
        if o.kind == "train" and not o.error and "tune" in o.scores:
            iou = o.scores["tune"]["model"]["foreground_iou"]
            if best is None or iou > best[0]:
                best = (iou, o.recipe)
    return best and best[1]


def _iou(o, name):
    s = o["scores"].get(name)
    return "-" if s is None else f"{s['model']['foreground_iou']:.3f}"


def format_table(report):
    """The Markdown report: the table, the baseline row and the recommendation."""
    m, d = report["machine"], report["data"]
    sets = ", ".join(f"{k} {v['images']} ({v['positive_images']} with cats)"
                     for k, v in d["sets"].items())
    lines = [f"# Quality benchmark {'(quick) ' if report['quick'] else ''}{report['started']}",
             "", f"`{report['command']}` on {m['cpu']}; {report['minutes']:g} min of training "
             f"per recipe, {report['parallel']} at a time, each on one core.", "",
             f"Data: {d['pets_dir']} split by rule ({d['split_rule']}): {sets}."
             + ("" if "coco" in d["sets"] else " COCO cats: absent, column skipped."), "",
             "Scores: full images, last checkpoint, threshold 0.5, dataset-level foreground "
             "(cat) IoU. Tune ranks the recipes; test and COCO are reported, never used to "
             "choose.", "",
             "| recipe | train.py flags | tune IoU | test IoU | test Dice | test pixel acc | "
             "COCO-cat IoU | steps | images/s |", "|---|---|---|---|---|---|---|---|---|"]
    baseline = report.get("all_background") or {}
    if baseline:
        def b(name, key):
            return "-" if name not in baseline else f"{baseline[name][key]:.3f}"

        lines.append(f"| all-background | (predicts no cat) | {b('tune', 'foreground_iou')} | "
                     f"{b('test', 'foreground_iou')} | {b('test', 'dice')} | "
                     f"{b('test', 'pixel_accuracy')} | {b('coco', 'foreground_iou')} | | |")
    for o in report["recipes"]:
        flags = " ".join(o["flags"]) if o["kind"] == "train" else "(Keras peer)"
        if o["error"]:
            error = o["error"][:120].replace("|", "/")  # a "|" would split the cell
            lines.append(f"| {o['recipe']} | {flags} | failed: {error} | | | | | | |")
            continue
        test = o["scores"].get("test", {}).get("model", {})
        rate = "-" if o["images_per_s"] is None else f"{o['images_per_s']:.3g}"
        lines.append(f"| {o['recipe']} | {flags} | {_iou(o, 'tune')} | {_iou(o, 'test')} | "
                     f"{test.get('dice', 0):.3f} | {test.get('pixel_accuracy', 0):.3f} | "
                     f"{_iou(o, 'coco')} | {o['steps']} | {rate} |")
    best = report["recommended"]
    if best:
        o = next(o for o in report["recipes"] if o["recipe"] == best)
        lines += ["", f"Recommended recipe (best tune IoU): **{best}** "
                  f"(`{' '.join(o['flags'])}`): tune IoU {_iou(o, 'tune')}, test IoU "
                  f"{_iou(o, 'test')}."]
    lines += [f"\n{o['recipe']}: its first step (tracing, and XLA compilation when on) took "
              f"{o['first_step_seconds']:.0f} s of its {report['minutes']:g} min."
              for o in report["recipes"] if o.get("first_step_seconds") is not None]
    return "\n".join(lines) + "\n"


def plot(report, path):
    """PNG of every recipe's tune IoU against training minutes (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colors = plt.get_cmap("tab20").colors
    ax.set_prop_cycle(color=colors[::2] + colors[1::2])  # 10 distinct hues before light ones
    for o in report["recipes"]:
        if o["curve"]:
            minutes, iou = zip(*[(s / 60, v) for s, v in o["curve"]])
            ax.plot(minutes, iou, marker="o", markersize=3, label=o["recipe"],
                    linestyle="--" if o["kind"] == "keras" else "-")
    ax.axvline(report["minutes"], color="grey", linestyle=":", label="budget")
    ax.set_xlim(left=0)
    ax.set_xlabel("training time (minutes, one core)")
    ax.set_ylabel("tune foreground IoU (periodic validation)")
    ax.set_title(f"Cat IoU over a {report['minutes']:g}-minute budget per recipe")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------ the benchmark


@dataclasses.dataclass
class Options:
    out: str = os.path.join("benchmarks", "quality.json")
    pets_dir: str = SAMPLE_PETS
    coco_dir: str | None = None  # None: skip the COCO column
    recipes: tuple | None = None  # names; None: the plan's
    minutes: float | None = None  # None: the plan's
    quick: bool = False
    parallel: int = 2
    seed: int = 0
    work_dir: str | None = None  # None: a temp dir, removed at the end
    plot: str | None = None
    command: str = "python -m benchmarks.quality"


def run_benchmark(opts, log=print):
    """Prepare the data, run every recipe, write the reports; returns the report dict."""
    plan = QUICK if opts.quick else FULL
    names = opts.recipes or plan.recipes
    minutes = opts.minutes or plan.minutes
    # Absolute: the recipes' processes run in the repo root.
    work = os.path.abspath(opts.work_dir or tempfile.mkdtemp(prefix="quality-"))
    if opts.work_dir:
        if os.path.isdir(work) and os.listdir(work):
            raise cli.UserError(f"--work-dir {work} is not empty: pass a new directory")
        os.makedirs(work, exist_ok=True)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    try:
        os.makedirs(os.path.join(work, "logs"))
        sets = prepare_data(opts.pets_dir, opts.coco_dir, work, opts.seed, log)
        cores = cores_to_use(opts.parallel)
        if len(cores) < opts.parallel:
            log(f"only {len(cores)} CPU(s) available: {len(cores)} recipe(s) at a time")

        def job(recipe):
            runner = peer_recipe if recipe.kind == "keras" else train_recipe
            return lambda core: runner(recipe, plan, sets, minutes, opts.seed, work, core, log)

        outcomes = run_jobs([job(BY_NAME[n]) for n in names], cores)
    finally:
        if not opts.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "quality", "started": started, "command": opts.command,
        "quick": opts.quick, "minutes": minutes, "seed": opts.seed, "parallel": len(cores),
        "threshold": THRESHOLD, "machine": run.machine(),
        "data": {"pets_dir": opts.pets_dir, "coco_dir": opts.coco_dir, "split_rule": SPLIT_RULE,
                 "sets": sets.counts},
        "base": dataclasses.asdict(plan.base),
        "peer": {"img_size": plan.peer_img_size, "batch_size": plan.peer_batch_size,
                 "filters": list(plan.peer_filters), "jit_compile": plan.peer_jit_compile},
        "recipes": [dataclasses.asdict(o) for o in outcomes],
        "recommended": recommended(outcomes),
        # The same images for every recipe, so one all-background row serves them all.
        "all_background": next(({k: v["all_background"] for k, v in o.scores.items()}
                                for o in outcomes if o.scores), {}),
    }
    if not opts.work_dir:
        for o in report["recipes"]:
            o["log"] = ""  # removed with the temp dir
    table = format_table(report)
    run.write_atomic(opts.out, json.dumps(report, indent=2) + "\n")
    run.write_atomic(os.path.splitext(opts.out)[0] + ".md", table)
    if opts.plot:
        plot(report, opts.plot)
    log(table)
    return report


def parse_recipes(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"recipes are {', '.join(BY_NAME)}; got {text!r}")
    return tuple(dict.fromkeys(names))


def main(argv=None):
    p = cli.ArgumentParser(prog="python -m benchmarks.quality",
                           description="Cat segmentation quality of training recipes in the "
                           "same time budget, on Oxford-IIIT Pet photos (docs/quality.md).")
    p.add_argument("--out", default=Options.out,
                   help="JSON report; the Markdown table goes next to it as .md "
                   "(default: %(default)s)")
    p.add_argument("--pets-dir", default=SAMPLE_PETS,
                   help="Oxford-IIIT Pet dir, official layout (default: the embedded sample "
                   "samples/oxford_pets)")
    p.add_argument("--coco-dir", help="COCO dir whose cats are scored, never trained on "
                   "(default: ../shared/data/coco_tiny when present; '' = skip)")
    p.add_argument("--recipes", type=parse_recipes,
                   help=f"comma list of {','.join(BY_NAME)} (default: all; --quick: "
                   f"{','.join(QUICK.recipes)})")
    p.add_argument("--minutes", type=cli.positive_float,
                   help=f"training time per recipe (default: {FULL.minutes:g}; --quick: "
                   f"{QUICK.minutes:g})")
    p.add_argument("--quick", action="store_true",
                   help="tiny networks, a tiny budget, two recipes: checks the wiring")
    p.add_argument("--parallel", type=cli.positive_int, default=2,
                   help="recipes at a time, each pinned to its own core (default: %(default)s)")
    p.add_argument("--seed", type=cli.non_negative_int, default=0,
                   help="train.py --seed of every recipe, and the peer's (default: %(default)s)")
    p.add_argument("--work-dir", help="keep records, run dirs and logs here (a new or empty "
                   "directory; default: a temp dir, removed)")
    p.add_argument("--plot", metavar="PATH", help="also draw IoU against training time "
                   "for each recipe into this PNG (e.g. docs/images/quality.png)")
    args = p.parse_args(argv)
    if not args.out.endswith(".json"):
        raise cli.UsageError(f"--out must name a .json file, got {args.out!r}")
    if args.plot and not args.plot.endswith(".png"):
        raise cli.UsageError(f"--plot must name a .png file, got {args.plot!r}")
    coco_dir = args.coco_dir
    if coco_dir is None:
        coco_dir = SHARED_COCO if os.path.isdir(SHARED_COCO) else ""
    elif coco_dir and not os.path.isdir(coco_dir):
        raise cli.UserError(f"--coco-dir {coco_dir} does not exist: pass a COCO 2017 dir, "
                            "or '' to skip the COCO column")
    command = " ".join(["python -m benchmarks.quality"]
                       + list(sys.argv[1:] if argv is None else argv))
    report = run_benchmark(Options(
        out=args.out, pets_dir=args.pets_dir, coco_dir=coco_dir or None, recipes=args.recipes,
        minutes=args.minutes, quick=args.quick, parallel=args.parallel, seed=args.seed,
        work_dir=args.work_dir, plot=args.plot, command=command))
    return 1 if any(o["error"] for o in report["recipes"]) else 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
