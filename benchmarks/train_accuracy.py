#!/usr/bin/env python3
"""Top-1, expert utilisation and routing smoothness of dense ViT, standard MoE-ViT and
ButterflyViT (with and without the spatial smoothness regulariser) at 8 and 64 experts,
all with the same architecture, data, schedule and number of steps.

Each run is `butterflyvit train ... --metrics-out <results>/runs/<dataset>-<run>.json`,
one at a time per invocation (two invocations with disjoint --runs may share a machine).
Runs whose JSON exists are skipped, so the grid can be extended over several sessions; with
--ckpt-dir a run interrupted part-way resumes from its last checkpoint. The tables
(<results>/train_accuracy.md) are rebuilt from every JSON present, each run with the exact
command that produced it, then summarised over seeds (mean, sample sd, min-max), by number
of experts (also plotted, train_accuracy.png) and against the standard MoE at the same E.

    python benchmarks/train_accuracy.py --dataset fashion-mnist --epochs 2 --threads 1
    python benchmarks/train_accuracy.py --dataset cifar10 --data cifar10-jpeg.tar.gz
    python benchmarks/train_accuracy.py --plan comparison --results benchmarks/results/comparison \
        --ckpt-dir ckpt/comparison
    python benchmarks/train_accuracy.py --table-only
"""

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = RESULTS / "runs"


def set_results(path):
    global RESULTS, RUNS
    RESULTS = Path(path)
    RUNS = RESULTS / "runs"

# name -> extra train flags
GRID = {
    "dense": ["--ffn", "dense"],
    "moe-8": ["--ffn", "moe", "--experts", "8"],
    "moe-64": ["--ffn", "moe", "--experts", "64"],
    "bfly-8": ["--ffn", "butterfly", "--experts", "8"],
    "bfly-64": ["--ffn", "butterfly", "--experts", "64"],
    "bfly-8+reg": ["--ffn", "butterfly", "--experts", "8", "--smooth-weight", "{reg}"],
    "bfly-64+reg": ["--ffn", "butterfly", "--experts", "64", "--smooth-weight", "{reg}"],
}


SUFFIXES = {"+alr=": "--angle-lr-scale", "+seed=": "--seed"}
FLAG_SUFFIXES = {"+sr": "--smooth-routing"}   # trained with smoothed routing


def split_suffixes(name):
    """("bfly-64+reg", ["--angle-lr-scale", "1", "--seed", "1"]) for "bfly-64+reg+alr=1+seed=1"."""
    extra = []
    for tag, flag in SUFFIXES.items():
        m = re.search(re.escape(tag) + r"([0-9.e-]+)", name)
        if m:
            extra += [flag, m[1]]
            name = name.replace(m[0], "")
    for tag, flag in FLAG_SUFFIXES.items():
        m = re.search(re.escape(tag) + r"(?=\+|$)", name)
        if m:
            extra.append(flag)
            name = name[:m.start()] + name[m.end():]
    return name, extra


def without_seed(name):
    """The run's name with any "+seed=N" taken out: the runs that differ only in seed."""
    return re.sub(r"\+seed=[0-9]+", "", name)


# The paper's comparison at a budget that ranks models (--plan comparison): dense vs standard
# MoE vs ButterflyViT, accuracy and memory against the number of experts, the smoothness
# regulariser's weight and routing on smoothed logits; every run at every seed of --seeds.
# Order: the first `run_major` runs (the headline comparison) at all their seeds, then the
# rest seed by seed, so that a plan cut short has one seed of every setting before a second.
PLANS = {
    "comparison": {
        "runs": ["dense", "moe-64", "bfly-64",
                 *(f"{kind}-{e}" for e in (4, 8, 16, 32) for kind in ("moe", "bfly")),
                 "bfly-64+reg=0.001", "bfly-64+reg=0.01", "bfly-64+reg=0.1", "bfly-64+sr"],
        "epochs": 15.0, "seeds": [0, 1, 2], "run_major": 3},
}


def run_flags(name, reg):
    """Flags of a grid run; besides GRID's names, "bfly-E+reg=L" / "moe-E" for any E, L, and
    any of them with "+alr=S" (butterfly angles' lr scale S, --angle-lr-scale), "+sr"
    (--smooth-routing) and/or "+seed=N" (--seed N) appended."""
    base, extra = split_suffixes(name)
    if base in GRID:
        return [f.format(reg=reg) for f in GRID[base]] + extra
    m = re.fullmatch(r"(bfly|moe)-(\d+)(?:\+reg=([0-9.e-]+))?", base)
    if not m:
        raise SystemExit(f"unknown run {name!r}")
    flags = ["--ffn", "butterfly" if m[1] == "bfly" else "moe", "--experts", m[2]]
    return flags + (["--smooth-weight", m[3]] if m[3] else []) + extra


def command(args, name):
    flags = run_flags(name, args.reg)
    seed = [] if "--seed" in flags else ["--seed", str(args.seed)]  # a "+seed=N" run has its own
    cmd = ["butterflyvit", "train", "--dataset", args.dataset, "--preset", args.preset,
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           *seed, "--eval-every", "0", "--no-progress"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.data:
        cmd += ["--data", args.data]
    if args.train_subset:
        cmd += ["--train-subset", str(args.train_subset)]
    return cmd + flags + list(args.extra)


def expand_seeds(runs, seeds, run_major=None):
    """Every run at every seed ("bfly-64" -> "bfly-64+seed=0", ...); no seeds: runs as given.
    Each run's seeds in turn, or, from run number `run_major` on, each seed's runs in turn."""
    if not seeds:
        return list(runs)
    first = len(runs) if run_major is None else run_major
    return ([f"{without_seed(r)}+seed={s}" for r in runs[:first] for s in seeds]
            + [f"{without_seed(r)}+seed={s}" for s in seeds for r in runs[first:]])


def run_grid(args):
    """Run every pending run, up to --jobs at once; returns the names of the failed ones."""
    RUNS.mkdir(parents=True, exist_ok=True)
    runs = expand_seeds(args.runs, args.seeds, args.run_major)
    pending = []
    for i, name in enumerate(runs, 1):
        out = RUNS / f"{args.dataset}-{name}.json"
        if out.exists() and not args.force:
            print(f"[{i}/{len(runs)}] skip {name}: {out} exists", file=sys.stderr)
        else:
            pending.append((i, name, out))
    failed, running = [], []
    while pending or running:
        while pending and len(running) < args.jobs:
            running.append(start_run(args, len(runs), *pending.pop(0)))
        time.sleep(0.2)
        for job in [j for j in running if j["proc"].poll() is not None]:
            running.remove(job)
            if not finish_run(job):
                failed.append(job["name"])
    return failed


def start_run(args, total, i, name, out):
    cmd = command(args, name)
    log = Path(args.log_dir) / f"{args.dataset}-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    resume = []
    if args.ckpt_dir:
        # a checkpoint every --save-every steps; an interrupted run continues from it
        ckpt = Path(args.ckpt_dir) / f"{args.dataset}-{name}.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        resume = ["--out", str(ckpt), "--save-every", str(args.save_every)]
        if ckpt.exists() and not args.force:
            resume += ["--resume", str(ckpt)]
    resumed = "--resume" in resume
    print(f"[{i}/{total}] run {name}: {shlex.join(cmd)}"
          f"{'  (resuming ' + resume[-1] + ')' if resumed else ''}  (log {log})",
          file=sys.stderr, flush=True)
    full = ([sys.executable, "-m", "butterflyvit.cli"] + cmd[1:] + resume
            + ["--metrics-out", str(out)])
    with open(log, "a" if resumed else "w") as f:
        proc = subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT)
    return {"name": name, "out": out, "log": log, "cmd": cmd, "resumed": resumed,
            "proc": proc, "t0": time.time()}


def finish_run(job):
    """Record a finished run's command and wall time in its JSON; False if it failed."""
    name, out, rc = job["name"], job["out"], job["proc"].returncode
    if rc:
        print(f"  {name} failed (exit {rc}), see {job['log']}", file=sys.stderr)
        return False
    if not out.exists():  # stopped part-way on purpose (--stop-after)
        print(f"  {name} stopped part-way; run again to continue from its checkpoint",
              file=sys.stderr)
        return True
    m = json.loads(out.read_text())
    m["command"] = shlex.join(job["cmd"])
    m["wall_seconds"] = round(time.time() - job["t0"], 1)   # of this sitting only
    if job["resumed"]:
        m["resumed"] = True
    out.write_text(json.dumps(m, indent=1))
    print(f"  {name}: top-1 {m['test_acc']:.4f} in {m['wall_seconds']:.0f} s", file=sys.stderr)
    return True


def fmt_pct(x):
    return "" if x is None else f"{100 * x:.2f}"


def f2(x):
    return "" if x is None else f"{x:.2f}"


def f3(x):
    return "" if x is None else f"{x:.3f}"


def expert_memory(cfg):
    sys.path.insert(0, str(HERE.parent / "host"))
    from butterflyvit.config import ModelConfig
    from butterflyvit.memory import compare
    r = compare(ModelConfig.from_dict(cfg))
    return r["model"]["expert_bytes"], r["model"]["total_bytes"]


NOTES_MARKER = "<!-- notes: hand-written, kept by --table-only -->"
PLOT = "train_accuracy.png"


def load_runs():
    """[(dataset, run name, metrics)] of every run JSON, in table order."""
    rows = []
    for path in sorted(RUNS.glob("*.json")):
        m = json.loads(path.read_text())
        ds = next(d for d in ("fashion-mnist", "cifar10", "digits") if path.stem.startswith(d))
        rows.append((ds, path.stem[len(ds) + 1:], m))

    def key(r):
        m = re.fullmatch(r"(dense|moe|bfly)-?(\d*)(\+reg)?=?([0-9.e-]*)", split_suffixes(r[1])[0])
        kind, e, reg, lam = m.groups() if m else (r[1], "", "", "")
        return (r[0], int(e or 0), {"dense": 0, "moe": 1, "bfly": 2}.get(kind, 3), bool(reg),
                float(lam or 0), r[1])
    return sorted(rows, key=key)


def stats(values):
    """(mean, sample sd or None for one value, min, max) of a non-empty list."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, sd, min(values), max(values)


def seed_groups(rows):
    """Runs that differ only in seed, at the same budget: {(dataset, name without seed,
    epochs): [metrics, ...]} in table order."""
    groups = {}
    for ds, name, m in rows:
        budget = m["train"].get("steps") or m["train"].get("epochs")
        groups.setdefault((ds, without_seed(name), budget), []).append(m)
    return groups


def trained_routing(m):
    """"smoothed" for a run trained (and evaluated) with smoothed routing, else "plain"."""
    return "smoothed" if m["config"].get("smooth_routing") else "plain"


def by_routing(m):
    """{"plain": (top-1 %, agreement), "smoothed": (top-1 %, agreement)} of an MoE run: its
    own routing's metrics and its alt_routing's (the same weights, smoothing switched the
    other way); None where a value is missing."""
    alt = m.get("alt_routing") or {}
    own = trained_routing(m)
    other = "plain" if own == "smoothed" else "smoothed"
    alt_acc = alt.get("test_acc")
    return {own: (100 * m["test_acc"], m.get("agreement")),
            other: (None if alt_acc is None else 100 * alt_acc, alt.get("agreement"))}


def routing_mean(ms, routing, i):
    """Mean over runs ms of by_routing(m)[routing][i] (0: top-1 %, 1: agreement); None if
    any run lacks it."""
    vals = [by_routing(m)[routing][i] for m in ms]
    return None if any(v is None for v in vals) else stats(vals)[0]


def smoothing_of(name):
    """("bfly" | "moe", E) for a run of the regulariser / smoothed-routing study at E experts
    ("bfly-64", "bfly-64+reg=0.01", "bfly-64+sr", any seed), else None."""
    m = re.fullmatch(r"(bfly|moe)-(\d+)(?:\+reg(?:=[0-9.e-]+)?)?(?:\+sr)?", without_seed(name))
    return (m[1], int(m[2])) if m else None


def smoothing_lines(groups):
    """The regulariser / smoothed-routing section: for each (data, budget, kind, E) with
    the plain run and at least one +reg or +sr run, every setting's seed means of top-1
    and neighbour agreement under each routing, and the change of both (as trained)
    against the plain run at the same seeds; [] when no such runs."""
    studies = {}
    for (ds, name, budget), ms in groups.items():
        kind_e = smoothing_of(name)
        if kind_e:
            studies.setdefault((ds, budget, *kind_e), []).append((name, ms))
    rows = []
    for (ds, budget, kind, e), settings in studies.items():
        base = dict(settings).get(f"{kind}-{e}")
        if base is None or len(settings) < 2:
            continue
        base_by_seed = {m["train"].get("seed"): m for m in base}
        for name, ms in settings:
            # paired: against the plain run at the same seeds (all of its seeds if it lacks one)
            seeds = [m["train"].get("seed") for m in ms]
            pair = ([base_by_seed[sd] for sd in seeds] if all(sd in base_by_seed for sd in seeds)
                    else base)
            base_acc = stats([100 * m["test_acc"] for m in pair])[0]
            base_agr = routing_mean(pair, trained_routing(pair[0]), 1)
            own = trained_routing(ms[0])
            acc = stats([100 * m["test_acc"] for m in ms])[0]
            agr = routing_mean(ms, own, 1)
            rows.append("| " + " | ".join(str(c) for c in [
                ds, budget, name, ms[0]["train"].get("smooth_weight", 0), own, len(ms),
                *(f(routing_mean(ms, r, i)) for i, f in ((0, f2), (1, f3))
                  for r in ("plain", "smoothed")),
                f"{acc:.2f}", f"{acc - base_acc:+.2f}",
                "" if agr is None or base_agr is None else f"{agr - base_agr:+.3f}"]) + " |")
    if not rows:
        return []
    return ["", "## Smoothness regulariser and smoothed routing", "",
            "Seed means. Each setting evaluated with plain top-k routing and with smoothed "
            "routing (one of the two is the routing it trained with); the changes are of "
            "top-1 and agreement as trained, against the run without the regulariser or "
            "smoothed routing at the same number of experts, budget and seeds (paired: a "
            "setting run at seed 0 only is compared with the plain run's seed 0).", "",
            "| data | epochs | run | reg. λ | routing | seeds | top-1 % plain | top-1 % "
            "smoothed | agreement plain | agreement smoothed | top-1 % as trained | change | "
            "agreement change |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + rows


def experts_of(name):
    """("bfly" | "moe", E) for a plain "bfly-E" / "moe-E" run (any seed), else None."""
    m = re.fullmatch(r"(bfly|moe)-(\d+)", without_seed(name))
    return (m[1], int(m[2])) if m else None


def summary_lines(rows):
    groups = seed_groups(rows)
    out = ["## Over seeds", "",
           "Runs that differ only in `--seed`, at the same budget: top-1 mean, sample standard "
           "deviation and min-max over the seeds (points of %).", "",
           "| data | run | epochs | seeds | top-1 % | sd | min-max | other routing % | "
           "agreement | agr. other | FFN memory |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    means = {}
    for (ds, name, budget), ms in groups.items():
        mean, sd, lo, hi = stats([100 * m["test_acc"] for m in ms])
        alts = [100 * m["alt_routing"]["test_acc"] for m in ms if m.get("alt_routing")]
        agr = [m["agreement"] for m in ms if m.get("agreement") is not None]
        agr_s = [m["alt_routing"]["agreement"] for m in ms if m.get("alt_routing")]
        ffn_b = expert_memory(ms[0]["config"])[0]
        means[(ds, name, budget)] = (mean, sd, ffn_b, len(ms))
        out.append("| " + " | ".join(str(c) for c in [
            ds, name, budget, len(ms), f"{mean:.2f}", f2(sd), f"{lo:.2f}-{hi:.2f}",
            f"{stats(alts)[0]:.2f}" if alts else "", f"{stats(agr)[0]:.3f}" if agr else "",
            f"{stats(agr_s)[0]:.3f}" if agr_s else "", f"{ffn_b / 1e3:,.1f} KB"]) + " |")

    pairs = sorted({(ds, budget, experts_of(name)[1]) for ds, name, budget in means
                    if experts_of(name)})
    cmp_rows = []
    for ds, budget, e in pairs:
        b, s = means.get((ds, f"bfly-{e}", budget)), means.get((ds, f"moe-{e}", budget))
        if b and s:
            cmp_rows.append("| " + " | ".join(str(c) for c in [
                ds, budget, e, f"{b[0]:.2f}", f"{s[0]:.2f}", f"{b[0] - s[0]:+.2f}",
                f"{b[2] / 1e3:,.1f} KB", f"{s[2] / 1e3:,.1f} KB", f"{s[2] / b[2]:.0f}x"]) + " |")
    if cmp_rows:
        out += ["", "## ButterflyViT against the standard MoE, by number of experts", "",
                f"Seed means of the table above (plot: `{PLOT}`); gap = ButterflyViT - standard "
                "MoE in points; memory: every stored byte of the feed-forward layers.", "",
                "| data | epochs | E | ButterflyViT top-1 % | standard MoE top-1 % | gap | "
                "ButterflyViT FFN | standard MoE FFN | memory ratio |",
                "|---|---|---|---|---|---|---|---|---|"] + cmp_rows
    return out + smoothing_lines(groups), means


def write_plot(means, path):
    """Top-1 and FFN memory against the number of experts, one row of panels per (data set,
    budget) with at least two E; returns whether a plot was written."""
    panels = {}
    for (ds, name, budget), (mean, sd, ffn_b, n) in means.items():
        ke = experts_of(name)
        if ke:
            panels.setdefault((ds, budget), {}).setdefault(ke[0], []).append(
                (ke[1], mean, sd or 0, ffn_b, n))
    panels = {k: v for k, v in panels.items()
              if len({e for pts in v.values() for e, *_ in pts}) >= 2}
    if not panels:
        path.unlink(missing_ok=True)
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3.8 * len(panels)), squeeze=False)
    labels = {"bfly": "ButterflyViT", "moe": "standard MoE"}
    for (ax_acc, ax_mem), ((ds, budget), kinds) in zip(axes, sorted(panels.items())):
        for kind, pts in sorted(kinds.items()):
            pts.sort()
            es = [p[0] for p in pts]
            ax_acc.errorbar(es, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                            capsize=3, label=labels[kind])
            ax_mem.plot(es, [p[3] / 1e3 for p in pts], marker="o", label=labels[kind])
            for e, mean, _, _, n in pts:   # a point of one seed has no error bar: say so
                ax_acc.annotate(f"n={n}", (e, mean), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
        dense = means.get((ds, "dense", budget))
        if dense:
            ax_acc.axhline(dense[0], color="grey", linestyle="--", label="dense ViT")
        all_e = sorted({p[0] for pts in kinds.values() for p in pts})
        for ax in (ax_acc, ax_mem):
            ax.set_xscale("log", base=2)
            ax.set_xticks(all_e, [str(e) for e in all_e])
            ax.set_xlabel("experts per layer")
            ax.legend()
        ax_acc.set_ylabel("top-1 % (mean over n seeds, ± sd)")
        ax_acc.set_title(f"{ds}, {budget} epochs: accuracy")
        ax_mem.set_yscale("log")
        ax_mem.set_ylabel("feed-forward memory, KB")
        ax_mem.set_title(f"{ds}: feed-forward memory")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plan_progress_lines(plan_name, dataset, rows):
    """Which of the plan's runs (at its epochs) the results hold, and which are missing: the
    plan runs over several sittings, and its tables are read before it is complete."""
    plan = PLANS[plan_name]
    want = expand_seeds(plan["runs"], plan["seeds"], plan.get("run_major"))
    done = {name for ds, name, m in rows
            if ds == dataset and m["train"].get("epochs") == plan["epochs"]}
    missing = [name for name in want if name not in done]
    out = ["## Progress of the plan", "",
           f"`--plan {plan_name}` on {dataset}: {len(want) - len(missing)} of its {len(want)} runs "
           f"({plan['epochs']:g} epochs, seeds {' '.join(map(str, plan['seeds']))}) are here."]
    if missing:
        out += ["Until all are, the tables below rank nothing beyond the runs they show. "
                f"Missing: {', '.join(missing)}."]
    return out + [""]


def write_table(progress=None):
    """The results' train_accuracy.md (and .png) from every run JSON; `progress(rows)`: lines
    to put before the tables (plan_progress_lines)."""
    rows = load_runs()
    out = ["# Training accuracy: dense ViT vs standard MoE-ViT vs ButterflyViT", "",
           "Made by `benchmarks/train_accuracy.py`; every run is `butterflyvit train` with the "
           "command in the second table (its --threads; wall times depend on the machine and "
           "its load, so are indicative only).", "",
           "- top-1: test-set accuracy after the last step (no early stopping, no test-set "
           "model selection).",
           "- routing: the routing a run trained and is evaluated with: plain top-k, or "
           "smoothed (router logits averaged over the 4-neighbourhood, `--smooth-routing`); "
           "other routing: the same weights evaluated with smoothing switched the other way, "
           "without retraining.",
           "- agreement: fraction of 4-neighbour patch pairs whose top-1 experts are equal, "
           "test set, mean over the MoE layers (agr. other: with the other routing).",
           "- eff. experts: exp(entropy of the expert load) / E, mean over layers (1.0 = "
           "perfectly balanced); used: fraction of experts that got any token.",
           "- FFN memory: every stored byte of the feed-forward layers (`butterflyvit "
           "memory`: trits 5/byte, fp32 row scales and biases, fp16 angles, fp32 float "
           "experts); model: every stored byte of the model.", "",
           *(progress(rows) if progress else []),
           "| data | run | ffn | E | reg. λ | angle lr × | routing | epochs | steps | top-1 % | "
           "other routing % | agreement | agr. other | eff. experts | used | FFN memory | "
           "model memory | wall s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cmds = []
    for ds, name, m in rows:
        cfg, tr = m["config"], m["train"]
        moe = cfg["ffn"] != "dense"
        alt = m.get("alt_routing") or {}
        u = m.get("utilisation") or {}
        ffn_b, tot_b = expert_memory(cfg)
        cells = [ds, name, cfg["ffn"], cfg["num_experts"] if moe else "-",
                 tr.get("smooth_weight", 0) if moe else "-",
                 tr.get("angle_lr_scale", 1.0) if cfg["ffn"] == "butterfly" else "-",
                 trained_routing(m) if moe else "-", tr.get("epochs"), m.get("steps"),
                 fmt_pct(m["test_acc"]), fmt_pct(alt.get("test_acc")), f3(m.get("agreement")),
                 f3(alt.get("agreement")), f2(u.get("mean_effective_experts_frac")),
                 f2(u.get("mean_used_experts_frac")), f"{ffn_b / 1e3:,.1f} KB",
                 f"{tot_b / 1e3:,.1f} KB", m.get("wall_seconds", "")]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
        cmds.append(f"| {ds} | {name} | `{m.get('command', '')}` |")
    out += ["", "| data | run | command |", "|---|---|---|"] + cmds + [""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    if rows:
        summary, means = summary_lines(rows)
        if not write_plot(means, RESULTS / PLOT):   # fewer than two numbers of experts
            summary = [line.replace(f" (plot: `{PLOT}`)", "") for line in summary]
        out += summary + [""]
    path = RESULTS / "train_accuracy.md"
    # hand-written notes below NOTES_MARKER survive a rebuild of the tables
    old = path.read_text() if path.exists() else ""
    if NOTES_MARKER in old:
        out += [NOTES_MARKER + old.split(NOTES_MARKER, 1)[1].rstrip("\n"), ""]
    path.write_text("\n".join(out))
    print(f"wrote {path}", file=sys.stderr)
    return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10", "digits"])
    p.add_argument("--data", help="data location (CIFAR-10: pickle dir, image tree or .tar.gz)")
    p.add_argument("--preset", default="pico")
    p.add_argument("--plan", choices=sorted(PLANS),
                   help="a named set of runs, epochs and seeds (comparison: "
                        f"{PLANS['comparison']['epochs']:g} epochs x seeds "
                        f"{' '.join(map(str, PLANS['comparison']['seeds']))} of "
                        f"{' '.join(PLANS['comparison']['runs'])}); --runs, --epochs and "
                        "--seeds given too override it")
    p.add_argument("--epochs", type=float, help="epochs per run (default 2, or the plan's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (0: torch's default, e.g. on a GPU machine)")
    p.add_argument("--seed", type=int, default=0, help="seed of runs without +seed=N")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="run every run at each of these seeds (names get +seed=N)")
    p.add_argument("--reg", type=float, default=0.1, help="smoothness weight of the +reg runs")
    p.add_argument("--train-subset", type=int)
    p.add_argument("--runs", nargs="+",
                   help=f"runs (default: {' '.join(GRID)}, or the plan's); also bfly-E[+reg=L] / "
                        "moe-E for other E, L, with +alr=S, +sr (trained on smoothed routing), "
                        "+seed=N")
    p.add_argument("--ckpt-dir", help="keep each run's checkpoint here (every --save-every "
                                      "steps); a run interrupted part-way resumes from it")
    p.add_argument("--save-every", type=int, default=200, metavar="STEPS")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once (e.g. 2 runs x --threads 1 on a 2-core machine, or "
                        "several runs sharing one GPU)")
    p.add_argument("--log-dir", default="/tmp")
    p.add_argument("--force", action="store_true", help="rerun runs whose JSON exists")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--results", default=str(RESULTS), help="results directory")
    p.add_argument("extra", nargs="*", help="extra flags for butterflyvit train (after --)")
    args = p.parse_args(argv)
    plan = PLANS.get(args.plan, {})
    args.runs = args.runs or plan.get("runs") or list(GRID)
    args.epochs = args.epochs if args.epochs is not None else plan.get("epochs", 2.0)
    args.seeds = args.seeds or plan.get("seeds")
    args.run_major = plan.get("run_major") if args.runs == plan.get("runs") else None
    for name in args.runs:
        try:
            run_flags(name, args.reg)
        except SystemExit as e:
            p.error(str(e))
    if args.epochs <= 0:
        p.error(f"--epochs {args.epochs:g}: must be more than 0")
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: must be 1 or more")
    return args


def main(argv=None):
    args = parse_args(argv)
    set_results(args.results)
    failed = [] if args.table_only else run_grid(args)
    write_table((lambda rows: plan_progress_lines(args.plan, args.dataset, rows))
                if args.plan else None)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {' '.join(failed)}")


if __name__ == "__main__":
    main()
