"""Training speed of one feed-forward MoE layer: forward + backward, CPU.

Rows: the ButterflyViT layer (`moe.ButterflyMoE`) on the path its cost model chooses, then
each path forced (grouped and slots also without the C training kernels, "PyTorch ops
only": the kernels' share); the standard MoE layer (`moe.StandardMoE`, independent float experts);
and the author's ButterflyMoE layer (`HOMoE_Layer` of the paper's public code, followed by
the shared Linear(d_ff, d) its transformer block applies, so every row maps dim -> dim) when
`--author PATH` names a checkout of that code. The author's code is imported from PATH at
run time and never copied here; without it those rows say "not given".

Then the whole pico model, as `butterflyvit train` steps it (`--model-batch` images of
28x28, 0 to skip): the dense ViT, the standard MoE-ViT and ButterflyViT, E and top-k as
above; a step is zero-grad, forward, cross-entropy + the load-balancing loss, backward and
one AdamW update.

Every layer step: zero the gradients, y = layer(x), loss = mean(y^2), backward. The layers run
interleaved (one timed step of each in turn, each round starting one row further on;
`--repeats` rounds after `--warmup` rounds), so a change in the machine's load hits every
row alike; the ratios are taken round by round and their median is printed. Median and
spread (min-max of the rounds) in milliseconds.

    python benchmarks/train_speed.py --author ../butterfly_moe      # writes results/train_speed.md
"""

import argparse
import importlib
import importlib.util
import os
import platform
import shlex
import statistics
import sys
import time
import types
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from butterflyvit.config import ModelConfig
from butterflyvit.moe import ButterflyMoE, StandardMoE
from butterflyvit.presets import preset_config
from butterflyvit.train import TrainConfig
from butterflyvit.vit import ViT

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "train_speed.md"
# (dim, ffn_dim, tokens): the pico shape at a training batch, and a wider layer
DEFAULT_SHAPES = [(64, 256, 4096), (256, 1024, 1024)]
NOT_GIVEN = "not given"
CHOSEN = "butterfly, chosen"
STANDARD = "standard MoE"
NO_KERNELS = "PyTorch ops only"   # rows without the C training kernels
MODELS = {"dense ViT": "dense", "standard MoE-ViT": "moe", "ButterflyViT": "butterfly"}
AUTHOR = "author's ButterflyMoE"
# Text below this line in the results file is hand-written and kept when the table is rewritten.
NOTES = "<!-- notes: kept when the table above is rewritten -->"


@dataclass
class Shape:
    dim: int
    ffn: int
    tokens: int

    def label(self) -> str:
        return f"d {self.dim} / d_ff {self.ffn} / {self.tokens} tokens"


def parse_shape(text: str) -> Shape:
    """'DIM,FFN,TOKENS', e.g. '64,256,4096'."""
    try:
        d, f, t = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not DIM,FFN,TOKENS (three integers)")
    if min(d, f, t) < 1:
        raise argparse.ArgumentTypeError(f"'{text}': every number must be 1 or more")
    return Shape(d, f, t)


def positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer (1 or more)")
    return v


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--author", type=Path, default=None, metavar="PATH",
                   help="checkout of the author's code (models/experts.py with HOMoE_Layer)")
    p.add_argument("--shape", type=parse_shape, action="append", dest="shapes", metavar="D,F,T",
                   help="dim,ffn_dim,tokens (repeatable); default 64,256,4096 and 256,1024,1024")
    p.add_argument("--experts", type=positive, default=64)
    p.add_argument("--top-k", type=positive, default=2)
    p.add_argument("--stages", type=positive, default=4, help="butterfly stages n_l")
    p.add_argument("--threads", type=positive, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=positive, default=7, help="timed rounds (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--model-batch", type=int, default=128, metavar="N",
                   help="images per whole-model step (default 128, as training; 0: no "
                        "whole-model table)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"markdown table (default {RESULTS})")
    p.add_argument("--no-write", action="store_true", help="print only")
    a = p.parse_args(argv)
    a.shapes = a.shapes or [Shape(*s) for s in DEFAULT_SHAPES]
    if a.top_k > a.experts:
        p.error(f"--top-k {a.top_k} is more than --experts {a.experts}")
    if a.warmup < 0:
        p.error(f"--warmup {a.warmup} must be 0 or more")
    if a.model_batch < 0:
        p.error(f"--model-batch {a.model_batch} must be 0 or more")
    if not a.no_write and not a.out.parent.is_dir():
        p.error(f"--out {a.out}: no such folder {a.out.parent}")
    if a.author is not None:
        try:
            a.author_layer, a.author_file = load_author(a.author)
        except (OSError, ImportError, AttributeError, SyntaxError) as e:
            p.error(f"--author {a.author}: {e}")
    else:
        a.author_layer = a.author_file = None
    return a


def load_author(path: Path):
    """(HOMoE_Layer, the file it came from) from a checkout of the author's code: its
    models/experts.py (models/ mounted as a bare package: the package's __init__ imports
    modules the checkout does not have), or, where that does not import (at the newest
    commit experts.py asks butterfly.py for a name it lacks), the single-file full_work.py,
    which holds the same layer."""
    path = Path(path)
    models, single = path / "models", path / "full_work.py"
    if not (models / "experts.py").is_file() and not single.is_file():
        raise OSError(f"no models/experts.py or full_work.py in {path} "
                      "(give a checkout of the author's code)")
    errors = []
    if (models / "experts.py").is_file():
        name = "_author_butterfly_moe_models"
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(models)]
        sys.modules[name] = pkg
        try:
            return importlib.import_module(f"{name}.experts").HOMoE_Layer, models / "experts.py"
        except (ImportError, AttributeError) as e:
            errors.append(f"models/experts.py: {e}")
    if single.is_file():
        spec = importlib.util.spec_from_file_location("_author_butterfly_moe_full", single)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
            return mod.HOMoE_Layer, single
        except (ImportError, AttributeError) as e:
            errors.append(f"full_work.py: {e}")
    raise ImportError("; ".join(errors))


class AuthorLayer(nn.Module):
    """The author's MoE layer (output d_ff) and the Linear(d_ff, d) of its transformer block."""

    def __init__(self, cls, s: Shape, experts: int, top_k: int, stages: int):
        super().__init__()
        self.moe = cls(s.dim, s.ffn, experts, top_k, stages)
        self.proj = nn.Linear(s.ffn, s.dim)

    def forward(self, x):
        return self.proj(self.moe(x, training=True)[0])


def make_layers(a, s: Shape) -> dict:
    """name -> module (or None: a row without a layer, "not given")."""
    grid = 8
    while s.tokens % (grid * grid):
        grid //= 2
    cfg = ModelConfig(image_size=4 * grid, in_channels=1, patch_size=4, dim=s.dim, heads=1,
                      depth=1, ffn_dim=s.ffn, num_experts=a.experts, top_k=a.top_k,
                      butterfly_stages=a.stages)
    chosen = ButterflyMoE(cfg)
    n = s.tokens // (grid * grid)
    layers = {CHOSEN: chosen}
    for impl in ButterflyMoE.IMPLS:
        m = ButterflyMoE(cfg, impl=impl)
        m.load_state_dict(chosen.state_dict())
        layers[f"butterfly, {impl} forced"] = m
        if impl in ("grouped", "slots"):   # the same path in PyTorch ops: the kernels' share
            m = ButterflyMoE(cfg, impl=impl, kernels=False)
            m.load_state_dict(chosen.state_dict())
            layers[f"butterfly, {impl} forced, {NO_KERNELS}"] = m
    layers[STANDARD] = StandardMoE(cfg)
    layers[AUTHOR] = (AuthorLayer(a.author_layer, s, a.experts, a.top_k, a.stages)
                                       if a.author_layer else None)
    for m in layers.values():
        if m is not None:
            m.train()
    return layers, (n, grid * grid)


def step(layer, x) -> float:
    """Seconds for one zero-grad + forward + backward."""
    t0 = time.perf_counter()
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.square().mean().backward()
    return time.perf_counter() - t0


def measure(a, s: Shape) -> dict:
    """name -> list of seconds per round (None for a row without a layer). The chosen
    butterfly row is named after the path(s) the cost model took."""
    torch.manual_seed(0)
    layers, (b, n) = make_layers(a, s)
    x = torch.randn(b, n, s.dim)
    taken = set()

    def chosen_step() -> float:
        t = step(layers[CHOSEN], x)
        taken.add(layers[CHOSEN].last_impl)
        return t

    steps = {k: (chosen_step if k == CHOSEN else partial(step, m, x))
             for k, m in layers.items() if m is not None}
    times = interleaved(a, steps)
    label = f"{CHOSEN} ({', '.join(sorted(taken))})"
    return {label if k == CHOSEN else k: times.get(k) for k in layers}


def interleaved(a, steps: dict) -> dict:
    """name -> seconds of each timed round: every step (a callable returning its seconds)
    once a round, `a.warmup` untimed rounds, then `a.repeats` timed ones. Each round starts
    one row further on, so that no row always runs right after the same one: a step finds
    the caches and the allocator as its predecessor left them (in a fixed order the first
    row, after the author's large layer, read 3-5 % slower than the same code forced)."""
    names = list(steps)
    times = {k: [] for k in names}
    for r in range(a.warmup + a.repeats):
        start = r % len(names)
        for k in names[start:] + names[:start]:
            t = steps[k]()
            if r >= a.warmup:
                times[k].append(t)
    return times


def measure_models(a) -> dict:
    """Whole-model training steps, interleaved like the layers: name -> seconds per round."""
    torch.manual_seed(0)
    balance = TrainConfig.balance_weight
    steps = {}
    for name, ffn in MODELS.items():
        model = ViT(preset_config("pico", ffn=ffn, num_experts=a.experts, top_k=a.top_k,
                                  butterfly_stages=a.stages)).train()
        steps[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    images = torch.randn(a.model_batch, 1, 28, 28)
    labels = torch.randint(0, 10, (a.model_batch,))

    def one(model, opt) -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits, aux = model(images, return_aux=True)
        loss = nn.functional.cross_entropy(logits, labels) + balance * aux["balance"]
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return interleaved(a, {k: partial(one, *mo) for k, mo in steps.items()})


def summarise(times: dict, against: list[str]) -> list[dict]:
    """Rows: median and spread in ms, and the ratio to each row of `against`: the median of
    the round-by-round ratios, so both sides of a ratio saw the same load."""
    rows = []
    for k, ts in times.items():
        row = {"layer": k}
        if ts is None:
            row.update(median=NOT_GIVEN, spread=NOT_GIVEN)
        else:
            row.update(median=f"{1e3 * statistics.median(ts):.1f}",
                       spread=f"{1e3 * min(ts):.1f}-{1e3 * max(ts):.1f}")
        for other in against:
            col = f"x {other}"
            if ts is None or times.get(other) is None:
                row[col] = NOT_GIVEN
            else:
                row[col] = f"{statistics.median(u / v for u, v in zip(ts, times[other])):.2f}"
        rows.append(row)
    return rows


def table(rows: list[dict], first: str = "layer") -> str:
    cols = list(rows[0])
    head = [first, "median ms", "spread ms"] + [c.replace("x ", "time / ") for c in cols[3:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
            f"load average {load} at the end")


def model_label(a) -> str:
    return f"Whole pico model, one training step of {a.model_batch} images"


def report(a, results: list[tuple[Shape, list[dict]]], argv: list[str],
           model_rows: list[dict] | None) -> str:
    cmd = "python benchmarks/train_speed.py " + " ".join(shlex.quote(v) for v in argv)
    out = ["# Training speed of one MoE layer (forward + backward, CPU)", "",
           "Written by `benchmarks/train_speed.py`; the command:", "```sh", cmd.strip(), "```",
           f"E {a.experts}, top-{a.top_k}, n_l {a.stages}; {a.repeats} interleaved rounds (each "
           f"starting one row further on) after {a.warmup} warm-up rounds; median and min-max "
           "spread of one step; ratios are the median of the round-by-round ratios (< 1: "
           "faster than that row).", "",
           f"Machine: {machine()}.", "",
           "The author's layer: " + (f"`HOMoE_Layer` from `{a.author_file}` of the checkout "
                                     "given, followed by Linear(d_ff, d)." if a.author_file else
                                     f"{NOT_GIVEN} (`--author PATH`)."), ""]
    for s, rows in results:
        out += [f"## {s.label()}", "", table(rows), ""]
    if model_rows:
        out += [f"## {model_label(a)}", "",
                "dim 64, depth 4, ffn 256, 49 tokens an image; forward, loss, backward and one "
                "AdamW update, as `butterflyvit train` steps.", "",
                table(model_rows, "model"), ""]
    return "\n".join(out)


def run(argv=None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    results = []
    for s in a.shapes:
        times = measure(a, s)
        rows = summarise(times, [STANDARD, AUTHOR])
        results.append((s, rows))
        print(f"{s.label()}\n{table(rows)}\n", flush=True)
    model_rows = None
    if a.model_batch:
        model_rows = summarise(measure_models(a), ["standard MoE-ViT"])
        print(f"{model_label(a)}\n{table(model_rows, 'model')}\n", flush=True)
    text = report(a, results, argv, model_rows)
    if not a.no_write:
        old = a.out.read_text() if a.out.is_file() else ""
        if NOTES in old:
            text += "\n" + NOTES + old.split(NOTES, 1)[1]
        a.out.write_text(text)
        print(f"wrote {a.out}")
    return text


if __name__ == "__main__":
    run()
