#!/usr/bin/env python3
"""Top-1, expert utilisation and routing smoothness of dense ViT, standard MoE-ViT and
ButterflyViT (with and without the spatial smoothness regulariser) at 8 and 64 experts,
all with the same architecture, data, schedule and number of steps.

Each run is `butterflyvit train ... --metrics-out benchmarks/results/runs/<dataset>-<run>.json`,
one at a time per invocation (two invocations with disjoint --runs may share a machine).
Runs whose JSON exists are skipped, so the grid can be extended over several sessions; the
table (benchmarks/results/train_accuracy.md) is rebuilt from every
JSON present, each row with the exact command that produced it.

    python benchmarks/train_accuracy.py --dataset fashion-mnist --epochs 2 --threads 1
    python benchmarks/train_accuracy.py --dataset cifar10 --data cifar10-jpeg.tar.gz
    python benchmarks/train_accuracy.py --table-only
"""

import argparse
import json
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


def split_suffixes(name):
    """("bfly-64+reg", ["--angle-lr-scale", "1", "--seed", "1"]) for "bfly-64+reg+alr=1+seed=1"."""
    extra = []
    for tag, flag in SUFFIXES.items():
        m = re.search(re.escape(tag) + r"([0-9.e-]+)", name)
        if m:
            extra += [flag, m[1]]
            name = name.replace(m[0], "")
    return name, extra


def run_flags(name, reg):
    """Flags of a grid run; besides GRID's names, "bfly-E+reg=L" / "moe-E" for any E, L, and
    any of them with "+alr=S" (butterfly angles' lr scale S, --angle-lr-scale) and/or
    "+seed=N" (--seed N) appended."""
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


def run_grid(args):
    RUNS.mkdir(parents=True, exist_ok=True)
    for name in args.runs:
        out = RUNS / f"{args.dataset}-{name}.json"
        if out.exists() and not args.force:
            print(f"skip {name}: {out} exists", file=sys.stderr)
            continue
        cmd = command(args, name)
        log = Path(args.log_dir) / f"{args.dataset}-{name}.log"
        print(f"run {name}: {shlex.join(cmd)}  (log {log})", file=sys.stderr, flush=True)
        t0 = time.time()
        full = [sys.executable, "-m", "butterflyvit.cli"] + cmd[1:] + ["--metrics-out", str(out)]
        with open(log, "w") as f:
            rc = subprocess.call(full, stdout=f, stderr=subprocess.STDOUT)
        if rc:
            print(f"  failed (exit {rc}), see {log}", file=sys.stderr)
            continue
        m = json.loads(out.read_text())
        m["command"] = shlex.join(cmd)
        m["wall_seconds"] = round(time.time() - t0, 1)
        out.write_text(json.dumps(m, indent=1))
        print(f"  top-1 {m['test_acc']:.4f} in {m['wall_seconds']:.0f} s", file=sys.stderr)


def fmt_pct(x):
    return "" if x is None else f"{100 * x:.2f}"


def expert_memory(cfg):
    sys.path.insert(0, str(HERE.parent / "host"))
    from butterflyvit.config import ModelConfig
    from butterflyvit.memory import compare
    r = compare(ModelConfig.from_dict(cfg))
    return r["model"]["expert_bytes"], r["model"]["total_bytes"]


NOTES_MARKER = "<!-- notes: hand-written, kept by --table-only -->"


def write_table(order):
    rows = []
    for path in sorted(RUNS.glob("*.json")):
        m = json.loads(path.read_text())
        ds = next(d for d in ("fashion-mnist", "cifar10", "digits") if path.stem.startswith(d))
        name = path.stem[len(ds) + 1:]
        rows.append((ds, name, m))
    def key(r):
        m = re.fullmatch(r"(dense|moe|bfly)-?(\d*)(\+reg)?=?([0-9.e-]*)", split_suffixes(r[1])[0])
        kind, e, reg, lam = m.groups() if m else (r[1], "", "", "")
        return (r[0], int(e or 0), {"dense": 0, "moe": 1, "bfly": 2}.get(kind, 3), bool(reg),
                float(lam or 0), r[1])
    rows.sort(key=key)
    out = ["# Training accuracy: dense ViT vs standard MoE-ViT vs ButterflyViT", "",
           "Made by `benchmarks/train_accuracy.py`; every run is `butterflyvit train` with the "
           "command in the second table, 1 CPU thread, on a 2-core machine, at times two runs "
           "at once or shared with other jobs (so wall times are indicative only).", "",
           "- top-1: test-set accuracy after the last step (no early stopping, no test-set "
           "model selection).",
           "- smoothed: the same weights evaluated with smoothed routing switched on (logits "
           "averaged over the 4-neighbourhood), without retraining.",
           "- agreement: fraction of 4-neighbour patch pairs whose top-1 experts are equal, "
           "test set, mean over the MoE layers (agr. smoothed: with smoothed routing).",
           "- eff. experts: exp(entropy of the expert load) / E, mean over layers (1.0 = "
           "perfectly balanced); used: fraction of experts that got any token.",
           "- FFN memory: every stored byte of the feed-forward layers (`butterflyvit "
           "memory`: trits 5/byte, fp32 row scales and biases, fp16 angles, fp32 float "
           "experts); model: every stored byte of the model.", "",
           "| data | run | ffn | E | reg. λ | angle lr × | epochs | steps | top-1 % | smoothed % | agreement | "
           "agr. smoothed | eff. experts | used | FFN memory | model memory | wall s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cmds = []
    for ds, name, m in rows:
        cfg, tr = m["config"], m["train"]
        moe = cfg["ffn"] != "dense"
        alt = m.get("alt_routing") or {}
        u = m.get("utilisation") or {}
        ffn_b, tot_b = expert_memory(cfg)
        f3 = lambda x: "" if x is None else f"{x:.3f}"
        f2 = lambda x: "" if x is None else f"{x:.2f}"
        cells = [ds, name, cfg["ffn"], cfg["num_experts"] if moe else "-",
                 tr.get("smooth_weight", 0) if moe else "-",
                 tr.get("angle_lr_scale", 1.0) if cfg["ffn"] == "butterfly" else "-", tr.get("epochs"), m.get("steps"),
                 fmt_pct(m["test_acc"]), fmt_pct(alt.get("test_acc")), f3(m.get("agreement")),
                 f3(alt.get("agreement")), f2(u.get("mean_effective_experts_frac")),
                 f2(u.get("mean_used_experts_frac")), f"{ffn_b / 1e3:,.1f} KB",
                 f"{tot_b / 1e3:,.1f} KB", m.get("wall_seconds", "")]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
        cmds.append(f"| {ds} | {name} | `{m.get('command', '')}` |")
    out += ["", "| data | run | command |", "|---|---|---|"] + cmds + [""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "train_accuracy.md"
    # hand-written notes below NOTES_MARKER survive a rebuild of the tables
    old = path.read_text() if path.exists() else ""
    if NOTES_MARKER in old:
        out += [NOTES_MARKER + old.split(NOTES_MARKER, 1)[1].rstrip("\n"), ""]
    path.write_text("\n".join(out))
    print(f"wrote {RESULTS / 'train_accuracy.md'}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10", "digits"])
    p.add_argument("--data", help="data location (CIFAR-10: pickle dir, image tree or .tar.gz)")
    p.add_argument("--preset", default="pico")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reg", type=float, default=0.1, help="smoothness weight of the +reg runs")
    p.add_argument("--train-subset", type=int)
    p.add_argument("--runs", nargs="+", default=list(GRID),
                   help=f"runs: {' '.join(GRID)}, or bfly-E[+reg=L] / moe-E for other E, L")
    p.add_argument("--log-dir", default="/tmp")
    p.add_argument("--force", action="store_true", help="rerun runs whose JSON exists")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--results", default=str(RESULTS), help="results directory")
    p.add_argument("extra", nargs="*", help="extra flags for butterflyvit train (after --)")
    args = p.parse_args()
    set_results(args.results)
    if not args.table_only:
        run_grid(args)
    write_table(list(GRID))


if __name__ == "__main__":
    main()
