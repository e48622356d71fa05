"""The benchmark suite: one command, a JSON report and a readable table.

    python -m benchmarks.run --out benchmarks/results.json           # ~15-20 min
    python -m benchmarks.run --quick --out /tmp/quick.json           # wiring, ~2 min

Sections (each independent; a missing module skips only its own):

  converter  convert_coco.convert images/s on the demo dataset, 1 and 2 workers
  train      our step, the machine's conv/matmul peak, the Keras 3 peers and
             (when torch is installed) the PyTorch eager peer,
             base 16 and 64 at 572, batch 1 and 4; images/s, GFLOP/s, ratios
  ceiling    every conv of the base-64 network timed alone (benchmarks/ceiling.py):
             the fastest step TensorFlow's conv kernels allow, vs the peak and ours
  options    speed settings against the default: threads, XLA, oneDNN, bfloat16,
             real-record input
  pipeline   pipeline.make_dataset records/s on the converted shards, vs training rate,
             with train.py's default input (flips) and with --augment all
  predict    predict.Predictor megapixels/s on a 640x480 image (overlap-tile)

Every setting runs in its own worker process (benchmarks/worker.py). The
workers of one group are alive together and step in turn, round after round,
so a slow spell on this shared machine hits all of them alike: compare ratios
within a group, and read absolute figures with the load averages in the report.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from utils import quiet  # noqa: E402, F401  (first: flops imports unet, which imports TensorFlow)

# isort: split
from benchmarks import flops, worker  # noqa: E402
from utils import cli  # noqa: E402

SECTIONS = ("converter", "train", "ceiling", "options", "pipeline", "predict")
NEEDS = {"converter": ("convert_coco", "samples.drawn"), "pipeline": ("datasets.pipeline",),
         "train": ("train", "keras"), "ceiling": ("unet",), "options": ("train",),
         "predict": ("predict", "core.tiling")}

FULL = {
    "depth": 4, "size": 572,
    # (base filters, batch, rounds, interleave): base 64 at batch 4 holds ~6.5 GB per
    # worker, so its workers take turns whole instead of living side by side.
    "train": [(16, 1, 8, True), (16, 4, 5, True), (64, 1, 4, True), (64, 4, 3, False)],
    "bf16_at": (64, 1),  # where the opt-in bfloat16 step joins the train group
    "keras_default_batch": 1,  # Keras without XLA too, at batch 1 (it is slow)
    # Thread settings and the rest in two groups: fewer live workers, less memory.
    "options": {"base": 16, "batch": 1, "rounds": 8, "groups": [
        ["threads intra 2 inter 1", "threads intra 1 inter 2", "threads intra 1 inter 1"],
        ["xla auto-clustering", "xla compile (explicit)", "oneDNN off", "bfloat16 (opt-in)",
         "real records input"]]},
    "peak": {"convs": [(570, 64), (282, 128), (138, 256), (66, 512), (30, 1024)],
             "matmuls": [2048, 3072], "bf16_conv": 256},
    "ceiling": {"base": 64, "repeats": 4},  # ~40 s
    "demo": {"num_train": 96, "num_val": 2}, "shards": 4,
    "pipeline": {"batch": 4, "windows": 5, "batches": 10},
    "predict": {"base": 64, "repeats": 3},
    "warmup": 2,
}
QUICK = {
    "depth": 2, "size": 92,
    "train": [(4, 1, 2, True), (8, 2, 2, False)],
    "bf16_at": (8, 2),
    "keras_default_batch": 1,
    "options": {"base": 4, "batch": 1, "rounds": 2, "groups": [
        ["threads intra 1 inter 1", "xla auto-clustering", "xla compile (explicit)",
         "oneDNN off", "bfloat16 (opt-in)", "real records input"]]},
    "peak": {"convs": [(34, 64)], "matmuls": [256], "bf16_conv": 64},
    "ceiling": {"base": 4, "repeats": 1},
    "demo": {"num_train": 6, "num_val": 2}, "shards": 2,
    "pipeline": {"batch": 2, "windows": 2, "batches": 2},
    "predict": {"base": 4, "repeats": 1},
    "warmup": 1,
}


class WorkerError(RuntimeError):
    pass


# ------------------------------------------------------------ workers


class Worker:
    """A benchmarks.worker process; its stderr goes to a log file in the temp dir."""

    started = 0  # numbers the log files, as labels repeat across groups

    def __init__(self, label, spec, log_dir):
        self.label = label
        Worker.started += 1
        name = "".join(c if c.isalnum() else "_" for c in label)
        self.log_path = os.path.join(log_dir, f"{Worker.started:02d}_{name}.log")
        env = {**os.environ, **worker.spec_env(spec)}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)], cwd=ROOT,
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)

    def expect(self, tag):
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        self.proc.wait()
        raise WorkerError(f"{self.label} exited ({self.proc.returncode}) before {tag}: "
                          f"{self.last_error()}")

    def last_error(self):
        try:
            with open(self.log_path) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError:
            return "no log"
        errors = [ln for ln in lines if "Error" in ln or "error" in ln]
        return (errors or lines or ["no output"])[-1][:300]

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def step(self):
        self.send("run")
        return self.expect("TIMES")

    def close(self):
        try:
            self.send("quit")
            return self.expect("DONE")
        finally:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def one_shot(label, spec, log_dir):
    """Run a one-shot worker to completion; its RESULT dict."""
    w = Worker(label, spec, log_dir)
    w.proc.stdin.close()
    try:
        return w.expect("RESULT")
    finally:
        w.kill()


def run_group(members, rounds, log_dir, interleave=True):
    """{label: {"ready", "rounds": [{"times", "values"}], "done"} or {"error"}}.

    Members start one at a time (warm-up, e.g. XLA compilation, never overlaps
    a timed step); then each round steps every live member once, in turn.
    """
    if not interleave:
        results = {}
        for label, spec in members:
            results.update(run_group([(label, spec)], rounds, log_dir))
        return results
    live, results = [], {}
    try:
        for label, spec in members:
            w = Worker(label, spec, log_dir)
            try:
                results[label] = {"ready": w.expect("READY"), "rounds": []}
                live.append(w)
            except WorkerError as e:
                results[label] = {"error": str(e)}
                w.kill()
        load = [os.getloadavg()[0]]
        for i in range(rounds):
            # Rotate the order so no member always follows the same one (e.g. the peak's
            # big convs), which would bias it on a machine others are using.
            shift = i % len(live) if live else 0
            for w in live[shift:] + live[:shift]:
                try:
                    results[w.label]["rounds"].append(w.step())
                except WorkerError as e:
                    results[w.label] = {"error": str(e)}
                    live.remove(w)
                    w.kill()
            load.append(os.getloadavg()[0])
        for w in live:
            results[w.label]["done"] = w.close()
            results[w.label]["load_1min"] = [round(x, 2) for x in load]
    finally:
        for w in live:
            w.kill()
    return results


def step_times(result, name="train"):
    return [r["times"][name] for r in result.get("rounds", [])]


# ------------------------------------------------------------ sections


def peak_summary(result, spec):
    """GFLOP/s per peak op (median over rounds) and the conv / matmul / bf16 peaks."""
    per_op = {}
    for name, fl in result["ready"]["flops"].items():
        times = step_times(result, name)
        if times:
            per_op[name] = fl / statistics.median(times) / 1e9

    def best(prefix, dtype):
        values = [v for k, v in per_op.items() if k.startswith(prefix) and k.endswith(dtype)]
        return max(values) if values else None

    return {"conv_gflops": best("conv", "float32"), "matmul_gflops": best("matmul", "float32"),
            "conv_bf16_gflops": best("conv", "bfloat16"), "ops_gflops": per_op}


def step_summary(result, base, batch, plan):
    times = step_times(result)
    if not times:
        return {"error": result.get("error", "no timed steps")}
    median = statistics.median(times)
    step_flops = flops.train_step_flops(plan["size"], plan["depth"], base, batch)
    return {"s_per_step": median, "s_min": min(times), "steps": len(times),
            "times": [round(t, 4) for t in times], "load_1min": result.get("load_1min"),
            "images_per_s": batch / median, "gflops": step_flops / median / 1e9,
            "rss_mb": result.get("done", {}).get("rss_mb"),
            "loss_after_warmup": result["ready"].get("warmup_values", {}).get("train"),
            "xla_ran": result["ready"].get("xla_ran")}


def train_section(plan, log_dir, log=print):
    rows, peaks = [], []
    for base, batch, rounds, interleave in plan["train"]:
        log(f"  base {base}, batch {batch}: {rounds} rounds (load {os.getloadavg()[0]:.1f})")
        common = {"base": base, "batch": batch, "depth": plan["depth"], "size": plan["size"],
                  "warmup": plan["warmup"]}
        members = [("peak", {"kind": "peak", "warmup": 1, **plan["peak"]}),
                   ("ours", {"kind": "ours", **common}),
                   ("keras jit_compile", {"kind": "keras", "jit": True, **common})]
        if batch == plan["keras_default_batch"]:
            members.append(("keras default", {"kind": "keras", "jit": False, **common}))
            if has_torch():  # optional peer: not a project requirement
                members.append(("pytorch eager", {"kind": "torch", **common}))
        if (base, batch) == tuple(plan["bf16_at"]):
            members.append(("ours bfloat16", {"kind": "ours", "precision": "bfloat16",
                                              **common}))
        results = run_group(members, rounds, log_dir, interleave)
        peak = (peak_summary(results["peak"], plan["peak"]) if "ready" in results["peak"]
                else {"error": results["peak"]["error"]})
        peaks.append(peak)
        for label, result in results.items():
            if label == "peak":
                continue
            row = {"group": f"base{base}_b{batch}", "variant": label, "base": base,
                   "batch": batch, **step_summary(result, base, batch, plan)}
            if peak.get("conv_gflops") and "gflops" in row:
                row["ratio_to_conv_peak"] = row["gflops"] / peak["conv_gflops"]
            if label.startswith(("keras", "pytorch")) and "ready" in result:
                row["same_parameters_as_unet"] = result["ready"].get("same_parameters_as_unet")
            rows.append(row)
        ours = next((r for r in rows[-len(members) + 1:] if r["variant"] == "ours"), {})
        for row in rows[-len(members) + 1:]:
            if "s_per_step" in row and "s_per_step" in ours:
                row["speedup_of_ours"] = row["s_per_step"] / ours["s_per_step"]
    good = [p for p in peaks if p.get("conv_gflops")]
    peak = {key: statistics.median([p[key] for p in good if p.get(key)])
            for key in ("conv_gflops", "matmul_gflops", "conv_bf16_gflops")
            if any(p.get(key) for p in good)}
    return {"peak": peak, "peak_per_group": peaks, "steps": rows}


OPTION_SETTINGS = {
    "default": {},
    "threads intra 2 inter 1": {"intra": 2, "inter": 1},
    "threads intra 1 inter 2": {"intra": 1, "inter": 2},
    "threads intra 1 inter 1": {"intra": 1, "inter": 1},
    "xla auto-clustering": {"xla": "auto"},
    "xla compile (explicit)": {"xla": "compile"},
    "oneDNN off": {"onednn": False},
    "bfloat16 (opt-in)": {"precision": "bfloat16"},
    "real records input": {"records": None},  # filled in with the shards
}


def options_section(plan, log_dir, records=None, log=print):
    o = plan["options"]
    common = {"kind": "ours", "base": o["base"], "batch": o["batch"], "depth": plan["depth"],
              "size": plan["size"], "warmup": plan["warmup"]}
    rows = []
    for i, labels in enumerate(o["groups"]):
        members = []
        for label in ["default"] + labels:
            setting = dict(OPTION_SETTINGS[label])
            if "records" in setting:
                if not records:
                    continue
                setting["records"] = records
            members.append((label, {**common, **setting}))
        log(f"  {', '.join(label for label, _ in members)} (load {os.getloadavg()[0]:.1f})")
        results = run_group(members, o["rounds"], log_dir)
        base_time = statistics.median(step_times(results["default"]) or [float("nan")])
        for label, result in results.items():
            row = {"group": f"options{i + 1}", "variant": label,
                   **step_summary(result, o["base"], o["batch"], plan)}
            if "s_per_step" in row:
                row["speedup_vs_default"] = base_time / row["s_per_step"]
            rows.append(row)
    return {"base": o["base"], "batch": o["batch"], "steps": rows}


def converter_section(plan, log_dir, tmp):
    from samples import drawn

    coco = os.path.join(tmp, "demo_coco")
    drawn.generate(coco, seed=0, **plan["demo"])
    out = {}
    for workers in (1, 2):
        out[f"workers_{workers}"] = one_shot(f"converter w{workers}", {
            "kind": "converter", "coco_dir": coco, "split": "train2017", "workers": workers,
            "num_shards": plan["shards"], "output": os.path.join(tmp, f"w{workers}", "demo")},
            log_dir)
    return out


def pipeline_section(plan, log_dir, records, train=None):
    """train.py's default input (flips), plus every augmentation group as "augmented"."""
    p = plan["pipeline"]
    spec = {"kind": "pipeline", "records": records, "batch": p["batch"], "size": plan["size"],
            "depth": plan["depth"], "windows": p["windows"], "batches": p["batches"]}
    result = one_shot("pipeline", spec, log_dir)
    result["records"] = records
    result["augmented"] = one_shot("pipeline augment all", {**spec, "augment": "all"}, log_dir)
    result["augmented"]["augment"] = "all"
    consumers = [r for r in (train or {}).get("steps", [])
                 if r["variant"] == "ours" and "images_per_s" in r]
    if consumers:
        fastest = max(consumers, key=lambda r: r["images_per_s"])
        result["fastest_training_images_per_s"] = fastest["images_per_s"]
        result["fastest_training_group"] = fastest["group"]
        for r in (result, result["augmented"]):
            r["ratio_to_training"] = r["records_per_s"] / fastest["images_per_s"]
    return result


def ceiling_section(plan, log_dir, train=None):
    c = plan["ceiling"]
    result = one_shot("ceiling", {"kind": "ceiling", "base": c["base"], "depth": plan["depth"],
                                  "size": plan["size"], "repeats": c["repeats"]}, log_dir)
    peak = (train or {}).get("peak", {}).get("conv_gflops")
    if peak and "bound_gflops" in result:
        result["bound_ratio_to_conv_peak"] = result["bound_gflops"] / peak
    ours = [r for r in (train or {}).get("steps", []) if r["variant"] == "ours"
            and r.get("base") == c["base"] and r.get("batch") == 1 and "s_per_step" in r]
    if ours and "bound_s" in result:
        result["ours_s_per_step"] = ours[0]["s_per_step"]
        result["ours_ratio_to_bound"] = result["bound_s"] / ours[0]["s_per_step"]
    return result


def predict_section(plan, log_dir, tmp):
    p = plan["predict"]
    return one_shot("predict", {"kind": "predict", "run_dir": os.path.join(tmp, "run"),
                                "make_run": {"base": p["base"], "depth": plan["depth"],
                                             "size": plan["size"]},
                                "repeats": p["repeats"]}, log_dir)


# ------------------------------------------------------------ report


def machine():
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"cpu": model, "cores": os.cpu_count(), "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_tile" in flags,
            "python": platform.python_version(), "tensorflow": version("tensorflow"),
            "keras": version("keras"), "torch": version("torch"),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")}


def has_torch():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def missing_modules(section):
    import importlib.util

    return [m for m in NEEDS[section] if importlib.util.find_spec(m) is None]


def run(out, quick=False, sections=SECTIONS, records=None, keep_tmp=False, log=print,
        command=None, train_groups=None):
    """Run the chosen sections; writes `out` (JSON) and `out` with .md; returns the report.

    train_groups: [(base, batch)] to run only those train groups (default: all).
    """
    plan = QUICK if quick else FULL
    if train_groups:
        chosen = [g for g in plan["train"] if (g[0], g[1]) in set(train_groups)]
        if not chosen:
            have = ", ".join(f"{g[0]}x{g[1]}" for g in plan["train"])
            raise cli.UsageError(f"--train-groups matches none of this plan's groups ({have})")
        plan = {**plan, "train": chosen}
    command = command or "python -m benchmarks.run" + (" --quick" if quick else "")
    report = {"command": command, "quick": quick,
              "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine(), "plan": plan, "skipped": {}}
    tmp = tempfile.mkdtemp(prefix="coco-unet-bench-")
    log_dir = os.path.join(tmp, "logs")
    os.makedirs(log_dir)
    try:
        for section in SECTIONS:
            if section not in sections:
                continue
            missing = missing_modules(section)
            if section == "pipeline" and not records:
                missing.append("records (converter section or --records)")
            if missing:
                report["skipped"][section] = f"needs {', '.join(missing)}"
                log(f"[{section}] skipped: needs {', '.join(missing)}")
                continue
            log(f"[{section}] running (load {os.getloadavg()[0]:.1f})")
            try:
                if section == "converter":
                    report[section] = converter_section(plan, log_dir, tmp)
                    records = records or os.path.join(tmp, "w2", "demo-train2017-*.tfrecord")
                elif section == "pipeline":
                    report[section] = pipeline_section(plan, log_dir, records,
                                                       report.get("train"))
                elif section == "train":
                    report[section] = train_section(plan, log_dir, log)
                elif section == "ceiling":
                    report[section] = ceiling_section(plan, log_dir, report.get("train"))
                elif section == "options":
                    report[section] = options_section(plan, log_dir, records, log)
                else:
                    report[section] = predict_section(plan, log_dir, tmp)
            except Exception as e:  # one broken section must not sink the others
                report["skipped"][section] = f"failed: {type(e).__name__}: {e}"
                log(f"[{section}] failed: {type(e).__name__}: {e}")
    finally:
        report["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        if keep_tmp:
            report["tmp_dir"] = tmp
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    write_atomic(out, json.dumps(report, indent=2) + "\n")
    table = format_table(report)
    write_atomic(os.path.splitext(out)[0] + ".md", table)
    log(table)
    return report


def write_atomic(path, text):
    """Write via a temp name, so a killed run never leaves a complete-looking report."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def format_table(report):
    """The report as Markdown tables (also printed)."""
    m = report["machine"]
    lines = [f"# Benchmark {'(quick) ' if report['quick'] else ''}{report['started']}", "",
             f"`{report['command']}` on {m['cpu']}, {m['cores']} cores, TensorFlow "
             f"{m['tensorflow']}, Keras {m['keras']}, PyTorch {m.get('torch') or 'absent'}, "
             f"AVX512_BF16 {m['avx512_bf16']}", ""]
    train = report.get("train")
    if train:
        p = train["peak"]
        lines += [f"Peak (TensorFlow, one op): conv2d {_fmt(p.get('conv_gflops'), '.1f')} "
                  f"GFLOP/s, matmul {_fmt(p.get('matmul_gflops'), '.1f')} GFLOP/s, bfloat16 "
                  f"conv2d {_fmt(p.get('conv_bf16_gflops'), '.1f')} GFLOP/s", "",
                  "| group | step | s/step | best s/step | images/s | GFLOP/s | of conv peak | "
                  "ours faster by | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
        for r in train["steps"]:
            if "error" in r:
                lines.append(f"| {r['group']} | {r['variant']} | error: {r['error'][:80]} "
                             "| | | | | | |")
                continue
            lines.append(
                f"| {r['group']} | {r['variant']} | {r['s_per_step']:.3f} | {r['s_min']:.3f} | "
                f"{r['images_per_s']:.2f} | {r['gflops']:.1f} | "
                f"{_fmt(r.get('ratio_to_conv_peak'))} | {_fmt(r.get('speedup_of_ours'))}x | "
                f"{_fmt(r.get('rss_mb'), '.0f')} |")
        lines.append("")
    ceiling = report.get("ceiling")
    if ceiling and "bound_s" in ceiling:
        lines += [f"Ceiling (base {ceiling['base']}, batch 1): every conv timed alone sums to "
                  f"{ceiling['bound_s']:.3f} s per step, {ceiling['bound_gflops']:.1f} GFLOP/s"
                  + (f" = {ceiling['bound_ratio_to_conv_peak']:.2f} of the conv peak"
                     if "bound_ratio_to_conv_peak" in ceiling else "")
                  + (f"; ours runs at {ceiling['ours_ratio_to_bound']:.2f} of that bound"
                     if "ours_ratio_to_bound" in ceiling else ""), ""]
    options = report.get("options")
    if options:
        lines += [f"Speed options (base {options['base']}, batch {options['batch']}; speedup "
                  "over the default in the same group):", "",
                  "| group | setting | s/step | speedup | loss after warm-up | XLA ran |",
                  "|---|---|---|---|---|---|"]
        for r in options["steps"]:
            if "error" in r:
                lines.append(f"| {r['group']} | {r['variant']} | error: {r['error'][:80]} | | | |")
                continue
            loss = _fmt(r.get("loss_after_warmup"), ".5f")
            lines.append(f"| {r['group']} | {r['variant']} | {r['s_per_step']:.3f} | "
                         f"{r['speedup_vs_default']:.2f}x | {loss} | {r.get('xla_ran')} |")
        lines.append("")
    conv = report.get("converter")
    if conv:
        lines.append("Converter (demo dataset): " + ", ".join(
            f"{k.replace('_', ' ')}: {v['images_per_s']:.1f} images/s" for k, v in conv.items()))
    pipe = report.get("pipeline")
    if pipe:
        lines.append(f"Input pipeline alone: {pipe['records_per_s']:.1f} records/s"
                     + (f", {pipe['ratio_to_training']:.1f}x the fastest training step's "
                        f"{pipe['fastest_training_images_per_s']:.2f} images/s "
                        f"({pipe['fastest_training_group']})"
                        if "ratio_to_training" in pipe else ""))
        aug = pipe.get("augmented")
        if aug:
            lines.append(f"Input pipeline with --augment all: {aug['records_per_s']:.1f} "
                         f"records/s ({aug['records_per_s'] / pipe['records_per_s']:.2f}x the "
                         "default's)" + (f", {aug['ratio_to_training']:.1f}x the fastest "
                                         "training step's" if "ratio_to_training" in aug else ""))
    pred = report.get("predict")
    if pred:
        lines.append(f"predict.py: {pred['megapixels_per_s']:.3f} megapixels/s on a "
                     f"{pred['image']} image (overlap-tile, base {pred.get('base')})")
    for section, reason in report["skipped"].items():
        lines.append(f"{section}: skipped ({reason})")
    return "\n".join(lines) + "\n"


def parse_sections(text):
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; got {text!r}")
    return chosen


def parse_groups(text):
    try:
        groups = [tuple(int(n) for n in item.lower().split("x")) for item in text.split(",")]
    except ValueError:
        groups = []
    if not groups or any(len(g) != 2 for g in groups):
        raise argparse.ArgumentTypeError(f"expected BASExBATCH[,BASExBATCH...], got {text!r}")
    return groups


def main(argv=None):
    parser = cli.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Measure training, peak, peer, pipeline, converter and predict speed.")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results.json"),
                        help="JSON report; the Markdown table goes next to it as .md "
                        "(default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny networks and few steps: checks the wiring in ~2 minutes")
    parser.add_argument("--sections", type=parse_sections, default=list(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--records", help="glob of real record shards for the pipeline and "
                        "input options (default: the converter section's demo shards)")
    parser.add_argument("--train-groups", type=parse_groups,
                        help="only these train groups, as BASExBATCH, e.g. 16x1,64x1 "
                        "(default: all)")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="keep the temp dir (demo data, shards, worker logs)")
    args = parser.parse_args(argv)
    if args.records:
        import glob

        if not glob.glob(args.records):
            raise cli.UsageError(f"--records {args.records!r} matches no file")
    command = " ".join(["python -m benchmarks.run"] + list(sys.argv[1:] if argv is None else argv))
    run(args.out, args.quick, args.sections, args.records, args.keep_tmp, command=command,
        train_groups=args.train_groups)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
