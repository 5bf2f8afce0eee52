"""Memory accounting: the paper's own count, and every stored byte of a model.

Pure Python (no torch): computed from a ModelConfig, so the paper-sized standard MoE
(117 M expert weights) never has to be built.

The paper's count (arXiv 2603.06746, its headline memory figure):
  standard   = layers * E * 2 * dim * ffn * 4 B                 (two fp32 matrices/expert)
  butterfly  = floor(layers * (dim*ffn*1.58/8 + E * n_l * (dim/2 + ffn/2) * 2 B))
  7 layers, dim 256, ffn 1024, E 64, n_l 4: 939,524,096 B vs 2,656,174 B = 353.7x.
It leaves out the shared output projection, the row scales, the router, and everything
outside the experts. The full count (`full_accounting`) includes all of it:
  - ternary matrices at 5 trits per byte (3^5 = 243 <= 256; 1.6 bits/trit), each row
    rounded up to whole bytes as the file stores them (1.625 bits/trit at 64 or 256);
  - per-row scales (gamma) at `scale_bytes`; angles at `angle_bytes` (padded pairs
    included: they are stored, as zeros);
  - every other tensor (embeddings, attention, norms, router, head, biases, float
    experts) at `float_bytes`.
These are layout-independent estimates from the shapes; the packed file adds its header
and alignment, which `butterflyvit pack` reports.
"""

import math
from dataclasses import asdict, dataclass

from .butterfly import padded_size
from .config import ModelConfig

TRITS_PER_BYTE = 5
PAPER_TRIT_BITS = 1.58
PAPER_SWEEP = (8, 16, 32, 64, 128)
PAPER_MODEL = dict(layers=7, dim=256, ffn_dim=1024, experts=64, stages=4)


@dataclass
class Part:
    group: str      # "embedding", "attention", "norms", "router", "experts", "head"
    name: str
    values: int     # number of stored values (trits, floats, angles)
    bytes: int
    fmt: str        # "fp32", "fp16", "trit", ...

    def as_dict(self):
        return asdict(self)


def _fmt(nbytes: int) -> str:
    return {4: "fp32", 2: "fp16", 1: "int8"}.get(nbytes, f"{nbytes}B")


def trit_bytes(n: int) -> int:
    return math.ceil(n / TRITS_PER_BYTE)


# ----------------------------------------------------------------------- paper accounting

def paper_accounting(layers=7, dim=256, ffn_dim=1024, experts=64, stages=4,
                     angle_bytes=2, trit_bits=PAPER_TRIT_BITS, float_bytes=4) -> dict:
    """The paper's expert-memory count, reproduced exactly (see module docstring)."""
    standard = layers * experts * 2 * dim * ffn_dim * float_bytes
    substrate = dim * ffn_dim * trit_bits / 8
    angles = experts * stages * (padded_size(dim) // 2 + padded_size(ffn_dim) // 2) * angle_bytes
    butterfly = math.floor(layers * (substrate + angles))
    projection = layers * dim * ffn_dim * float_bytes  # the shared W_out the paper omits
    return {
        "layers": layers, "dim": dim, "ffn_dim": ffn_dim, "experts": experts,
        "stages": stages, "angle_bytes": angle_bytes, "trit_bits": trit_bits,
        "standard_bytes": standard,
        "substrate_bytes_per_layer": substrate,
        "angle_bytes_per_layer": angles,
        "butterfly_bytes": butterfly,
        "ratio": standard / butterfly,
        "with_fp32_projection_bytes": butterfly + projection,
        "ratio_with_fp32_projection": standard / (butterfly + projection),
    }


def paper_sweep(experts=PAPER_SWEEP, **kw) -> list:
    base = {**PAPER_MODEL, **kw}
    base.pop("experts", None)
    return [paper_accounting(experts=e, **base) for e in experts]


def paper_accounting_for(cfg: ModelConfig, angle_bytes=2) -> dict:
    """The paper's way of counting, applied to another config."""
    return paper_accounting(cfg.depth, cfg.dim, cfg.ffn_dim, cfg.num_experts,
                            cfg.butterfly_stages, angle_bytes)


# ------------------------------------------------------------------------ full accounting

def full_accounting(cfg: ModelConfig, kind: str | None = None, float_bytes=4, angle_bytes=2,
                    scale_bytes=4, expert_float_bytes=None) -> list:
    """Every stored tensor of a model with cfg's shape and feed-forward `kind`
    (default cfg.ffn): a list of Part. Float experts (kind "moe"/"dense") are counted at
    expert_float_bytes (default float_bytes)."""
    kind = kind or cfg.ffn
    efb = expert_float_bytes or float_bytes
    d, f, e, L, n_l = cfg.dim, cfg.ffn_dim, cfg.num_experts, cfg.depth, cfg.butterfly_stages
    fl = _fmt(float_bytes)
    parts = [
        Part("embedding", "patch embedding (weight+bias)", cfg.patch_dim * d + d,
             (cfg.patch_dim * d + d) * float_bytes, fl),
        Part("embedding", "position embedding", cfg.num_patches * d,
             cfg.num_patches * d * float_bytes, fl),
        Part("attention", "attention qkv+proj (weights+biases)", L * (4 * d * d + 4 * d),
             L * (4 * d * d + 4 * d) * float_bytes, fl),
        Part("norms", "LayerNorms (2 per block + final)", (2 * L + 1) * 2 * d,
             (2 * L + 1) * 2 * d * float_bytes, fl),
    ]
    if kind in ("butterfly", "moe"):
        parts.append(Part("router", "router", L * e * d, L * e * d * float_bytes, fl))
    if kind == "butterfly":
        dp, fp = padded_size(d), padded_size(f)
        parts += [
            Part("experts", "substrate W_in trits", L * f * d, L * f * trit_bytes(d), "trit"),
            Part("experts", "W_in row scales", L * f, L * f * scale_bytes, _fmt(scale_bytes)),
            Part("experts", "angles phi (input side)", L * e * n_l * dp // 2,
                 L * e * n_l * dp // 2 * angle_bytes, _fmt(angle_bytes)),
            Part("experts", "angles theta (output side)", L * e * n_l * fp // 2,
                 L * e * n_l * fp // 2 * angle_bytes, _fmt(angle_bytes)),
            Part("experts", "shared W_out trits", L * d * f, L * d * trit_bytes(f), "trit"),
            Part("experts", "W_out row scales", L * d, L * d * scale_bytes, _fmt(scale_bytes)),
            Part("experts", "W_out bias", L * d, L * d * float_bytes, fl),
        ]
    elif kind == "moe":
        n = L * e * (2 * d * f + f + d)
        parts.append(Part("experts", f"{e} float experts W1,b1,W2,b2", n, n * efb, _fmt(efb)))
    elif kind == "dense":
        n = L * (2 * d * f + f + d)
        parts.append(Part("experts", "dense FFN fc1,fc2", n, n * efb, _fmt(efb)))
    else:
        raise ValueError(f"unknown ffn kind {kind!r}")
    parts.append(Part("head", "final head (weight+bias)", d * cfg.num_classes + cfg.num_classes,
                      (d * cfg.num_classes + cfg.num_classes) * float_bytes, fl))
    return parts


def totals(parts) -> dict:
    experts = sum(p.bytes for p in parts if p.group == "experts")
    return {"expert_bytes": experts, "router_bytes": sum(p.bytes for p in parts if p.group == "router"),
            "total_bytes": sum(p.bytes for p in parts)}


def stored_parameter_count(parts) -> int:
    """Values that are model parameters (row scales are derived from the latent weights)."""
    return sum(p.values for p in parts if "row scales" not in p.name)


def compare(cfg: ModelConfig, float_bytes=4, angle_bytes=2, scale_bytes=4,
            baseline_float_bytes=4) -> dict:
    """This model (cfg.ffn) beside a standard MoE of the same shape (experts in fp32 like
    the paper's baseline; everything else at the same precision as this model)."""
    mine = full_accounting(cfg, None, float_bytes, angle_bytes, scale_bytes)
    std = full_accounting(cfg, "moe", float_bytes, angle_bytes, scale_bytes,
                          expert_float_bytes=baseline_float_bytes)
    tm, ts = totals(mine), totals(std)
    out = {
        "config": cfg.to_dict(),
        "storage": {"float_bytes": float_bytes, "angle_bytes": angle_bytes,
                    "scale_bytes": scale_bytes, "trits_per_byte": TRITS_PER_BYTE,
                    "baseline_expert_float_bytes": baseline_float_bytes},
        "model": {"kind": cfg.ffn, "parts": [p.as_dict() for p in mine], **tm},
        "standard_moe": {"kind": "moe", "parts": [p.as_dict() for p in std], **ts},
        "expert_ratio": ts["expert_bytes"] / tm["expert_bytes"],
        "total_ratio": ts["total_bytes"] / tm["total_bytes"],
    }
    if cfg.ffn == "butterfly":
        out["paper_count"] = paper_accounting_for(cfg, angle_bytes)
    return out


def sweep(cfg: ModelConfig, experts=PAPER_SWEEP, **kw) -> list:
    """compare() at several expert counts: expert and total bytes of both models."""
    rows = []
    for e in experts:
        c = ModelConfig.from_dict({**cfg.to_dict(), "num_experts": e,
                                   "top_k": min(cfg.top_k, e)})
        r = compare(c, **kw)
        row = {"experts": e, "model_expert_bytes": r["model"]["expert_bytes"],
               "model_total_bytes": r["model"]["total_bytes"],
               "standard_expert_bytes": r["standard_moe"]["expert_bytes"],
               "standard_total_bytes": r["standard_moe"]["total_bytes"],
               "expert_ratio": r["expert_ratio"], "total_ratio": r["total_ratio"]}
        if "paper_count" in r:
            row["paper_count_butterfly_bytes"] = r["paper_count"]["butterfly_bytes"]
            row["paper_count_standard_bytes"] = r["paper_count"]["standard_bytes"]
            row["paper_count_ratio"] = r["paper_count"]["ratio"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------- output

def human(n: float) -> str:
    """Decimal units, as the paper writes them (939 MB, 2.6 MB)."""
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n:.0f} B"


def format_paper(acc: dict, sweep_rows: list) -> str:
    a = acc
    lines = [
        "Paper accounting (expert memory only, as the paper counts it)",
        f"  {a['layers']} layers, dim {a['dim']}, ffn {a['ffn_dim']}, {a['experts']} experts, "
        f"n_l {a['stages']}, angles {8 * a['angle_bytes']}-bit, substrate {a['trit_bits']} bits/trit",
        f"  standard MoE: {a['layers']} x {a['experts']} x 2 x {a['dim']}x{a['ffn_dim']} x 4 B "
        f"= {a['standard_bytes']:,} B ({human(a['standard_bytes'])})",
        f"  ButterflyViT: {a['layers']} x ({a['substrate_bytes_per_layer']:,.2f} B substrate + "
        f"{a['angle_bytes_per_layer']:,} B angles) = {a['butterfly_bytes']:,} B "
        f"({human(a['butterfly_bytes'])})",
        f"  ratio: {a['ratio']:.1f}x",
        f"  with the shared output projection the paper leaves out (fp32): "
        f"{a['with_fp32_projection_bytes']:,} B, {a['ratio_with_fp32_projection']:.1f}x",
        "",
        "  experts   standard B        ButterflyViT B   ratio   (+fp32 W_out)",
    ]
    for r in sweep_rows:
        lines.append(f"  {r['experts']:>7}   {r['standard_bytes']:>15,}   {r['butterfly_bytes']:>13,}   "
                     f"{r['ratio']:>5.1f}x   {r['ratio_with_fp32_projection']:>5.1f}x")
    return "\n".join(lines)


def format_compare(r: dict, title: str = "") -> str:
    st = r["storage"]
    cfg = r["config"]
    lines = [
        f"Full accounting{': ' + title if title else ''}",
        f"  {cfg['ffn']} ViT: {cfg['depth']} blocks, dim {cfg['dim']}, ffn {cfg['ffn_dim']}, "
        f"{cfg['num_experts']} experts (top-{cfg['top_k']}), n_l {cfg['butterfly_stages']}, "
        f"image {cfg['image_size']}x{cfg['image_size']}x{cfg['in_channels']}, patch {cfg['patch_size']}",
        f"  storage: floats {_fmt(st['float_bytes'])}, angles {_fmt(st['angle_bytes'])}, "
        f"row scales {_fmt(st['scale_bytes'])}, trits {st['trits_per_byte']}/byte; "
        f"standard MoE experts {_fmt(st['baseline_expert_float_bytes'])}",
        "",
        f"  {'part':<38} {'values':>12} {'format':>6} {'bytes':>14}",
    ]
    for name, side in (("this model (" + r["model"]["kind"] + ")", r["model"]),
                       ("standard MoE, same shape", r["standard_moe"])):
        lines.append(f"  -- {name}")
        for p in side["parts"]:
            lines.append(f"  {p['name']:<38} {p['values']:>12,} {p['fmt']:>6} {p['bytes']:>14,}")
        lines.append(f"  {'experts (feed-forward) total':<38} {'':>12} {'':>6} {side['expert_bytes']:>14,}"
                     f"  {human(side['expert_bytes'])}")
        lines.append(f"  {'whole model':<38} {'':>12} {'':>6} {side['total_bytes']:>14,}"
                     f"  {human(side['total_bytes'])}")
    lines += ["",
              f"  feed-forward memory: {r['expert_ratio']:.1f}x smaller than the standard MoE "
              f"(router excluded, shared W_out, scales and biases included)",
              f"  whole model: {r['total_ratio']:.1f}x smaller"]
    if "paper_count" in r:
        p = r["paper_count"]
        lines.append(f"  the paper's count for this shape: {p['standard_bytes']:,} B vs "
                     f"{p['butterfly_bytes']:,} B = {p['ratio']:.1f}x")
    return "\n".join(lines)


def format_sweep(rows: list) -> str:
    lines = ["  experts   standard FFN B   this FFN B   ratio   standard total   this total   ratio"]
    for r in rows:
        lines.append(f"  {r['experts']:>7}   {r['standard_expert_bytes']:>14,}   {r['model_expert_bytes']:>10,}"
                     f"   {r['expert_ratio']:>5.1f}x   {r['standard_total_bytes']:>14,}"
                     f"   {r['model_total_bytes']:>10,}   {r['total_ratio']:>5.1f}x")
    return "\n".join(lines)


def _short(n: float) -> str:
    """An axis tick in decimal units: 100 KB, 2.5 MB, 1 GB."""
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= k:
            return f"{n / k:g} {unit}"
    return f"{n:g} B"


def _ratio(r: float) -> str:
    return f"{r:,.0f}x" if r >= 10 else f"{r:.1f}x"


def plot(path, report: dict):
    """Two panels: bytes per part (this model vs standard MoE, the ratio of each part), and
    feed-forward memory vs experts per layer (the paper's count and the full count, the
    standard-MoE / ButterflyViT ratio written at every point). Returns the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6))
    byte_ticks = FuncFormatter(lambda v, _: _short(v))
    comp = report.get("compare")
    if comp:
        groups = ["embedding", "attention", "norms", "router", "experts", "head"]
        mine = {g: sum(p["bytes"] for p in comp["model"]["parts"] if p["group"] == g) for g in groups}
        std = {g: sum(p["bytes"] for p in comp["standard_moe"]["parts"] if p["group"] == g) for g in groups}
        y = range(len(groups))
        ax1.barh([i + 0.2 for i in y], [std[g] or 0.1 for g in groups], 0.4, color="tab:red",
                 label="standard MoE (fp32 experts)")
        ax1.barh([i - 0.2 for i in y], [mine[g] or 0.1 for g in groups], 0.4, color="tab:green",
                 label=f"this model ({comp['model']['kind']})")
        for i, g in zip(y, groups):      # the ratio of a part that differs, beside its bars
            if mine[g] and std[g] != mine[g]:
                ax1.annotate(f"{_ratio(std[g] / mine[g])} smaller", (max(std[g], mine[g]), i),
                             xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
        ax1.set_yticks(list(y), groups)
        ax1.set_xscale("log")
        ax1.xaxis.set_major_formatter(byte_ticks)
        ax1.set_xlim(right=ax1.get_xlim()[1] * 30)     # room for the ratio labels
        ax1.set_xlabel("stored bytes (log scale; 1 KB = 1000 bytes)")
        ax1.set_title(f"every stored byte: {human(comp['model']['total_bytes'])} vs "
                      f"{human(comp['standard_moe']['total_bytes'])} ({_ratio(comp['total_ratio'])} smaller)")
        ax1.legend(loc="lower right", fontsize=8)
    else:
        ax1.axis("off")
    rows = report.get("sweep") or []
    prow = report.get("paper_sweep") or []
    # The paper's count and the full count of the standard MoE differ only by the experts'
    # biases (under 0.3%): on a log axis they coincide, so the two are told apart by style
    # (big hollow markers, solid line / small filled ones, dotted line), not by position.
    if prow:
        e = [r["experts"] for r in prow]
        ax2.plot(e, [r["standard_bytes"] for r in prow], "o-", color="tab:red", mfc="none", ms=12, lw=2.5,
                 alpha=0.6, label="paper count: standard MoE experts (fp32 weights)")
        ax2.plot(e, [r["butterfly_bytes"] for r in prow], "s-", color="tab:green", mfc="none", ms=11,
                 lw=2.5, alpha=0.6,
                 label="paper count: ButterflyViT experts (W_in trits + angles); green: ratio")
        ax2.plot(e, [r["with_fp32_projection_bytes"] for r in prow], "^--", color="tab:olive",
                 label="paper count + fp32 shared W_out")
        for r in prow:
            ax2.annotate(_ratio(r["ratio"]), (r["experts"], r["butterfly_bytes"]), xytext=(0, -16),
                         textcoords="offset points", ha="center", fontsize=8, color="darkgreen")
    if rows:
        e = [r["experts"] for r in rows]
        ax2.plot(e, [r["standard_expert_bytes"] for r in rows], "o:", color="black", ms=4, lw=1.2,
                 label="full count: standard MoE FFN (+ biases)")
        ax2.plot(e, [r["model_expert_bytes"] for r in rows], "D:", color="tab:purple", ms=5, lw=1.2,
                 label="full count: this model's FFN (+ shared W_out, scales, bias); purple: ratio")
        for r in rows:
            ax2.annotate(_ratio(r["expert_ratio"]), (r["experts"], r["model_expert_bytes"]), xytext=(0, 9),
                         textcoords="offset points", ha="center", fontsize=8, color="tab:purple")
    if prow or rows:
        ax2.set_xscale("log", base=2)
        ticks = sorted({r["experts"] for r in prow + rows})
        ax2.set_xticks(ticks, [str(t) for t in ticks])
        ax2.minorticks_off()
        ax2.set_yscale("log")
        ax2.yaxis.set_major_formatter(byte_ticks)
        low = min([r["butterfly_bytes"] for r in prow] + [r["model_expert_bytes"] for r in rows])
        ax2.set_ylim(bottom=low / 2.5)      # room for the ratio labels under the lowest line
    ax2.set_xlabel("experts per layer")
    ax2.set_ylabel("feed-forward bytes, all layers (log scale)")
    ax2.set_title("feed-forward memory vs experts; labels: standard MoE / ButterflyViT")
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax2.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig
