"""Analytical energy per inference: ButterflyViT beside a standard MoE of the same shape.

The model (docs/boards.md, "Energy model") counts, for one image, the arithmetic operations
and the bytes moved, and prices them with per-operation energies at 45 nm from Horowitz,
"Computing's energy problem (and what we can do about it)", ISSCC 2014 (the figures
the paper quotes). Every result carries the constants and assumptions that produced it.

What is counted (N tokens, d = dim, f = ffn_dim, E experts, k = top_k, n_l stages):
- the parts both models share, identically: patch embedding, LayerNorms, attention (int8
  products, int32 accumulation), router, residual adds, pooling, head;
- ButterflyViT experts, per (token, selected expert): the input butterfly (n_l * dpad/2
  Givens rotations, 4 multiplies + 2 adds each), the ternary product with the shared W_in
  (one add or subtract per trit: no multiplies), the output butterfly, ReLU; per token the
  gate mixture and the shared ternary W_out;
- standard MoE experts, per (token, selected expert): Linear(d, f) - ReLU - Linear(f, d),
  d*f multiply-adds each, in fp32 (the paper's 939 MB baseline) or int8 (a fair integer
  baseline); per token the gate mixture.
Memory traffic: weights are read once per layer and inference (tokens grouped by expert);
only the experts that some token selects are read, E * (1 - (1 - k/E)^N) of them on
average under uniform routing. Weights live on chip when the whole model's weights fit
`onchip_bytes` (the board's flash, read like a large SRAM), else in DRAM. Activations are
read and written once per op in a small SRAM; attention reads K and V once per query.
"""

from __future__ import annotations

from dataclasses import dataclass

# Horowitz, ISSCC 2014, 45 nm, 0.9 V: energy per operation in picojoules.
CONSTANTS = {
    "int8_add": 0.03,
    "int8_mult": 0.2,
    "int32_add": 0.1,
    "int32_mult": 3.1,
    "fp32_add": 0.9,
    "fp32_mult": 3.7,
    # memory, per 32-bit word read (Horowitz gives 64-bit reads: halved)
    "sram_small_read32": 5.0,    # 8 KB SRAM: 10 pJ / 64 bit
    "sram_large_read32": 50.0,   # 1 MB SRAM: 100 pJ / 64 bit
    "dram_read32": 640.0,        # DRAM: 1.3-2.6 nJ / 64 bit, the paper's 640 pJ / 32 bit
}
SOURCE = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
          "ISSCC 2014, 45 nm, 0.9 V (as quoted in the paper)")
ASSUMPTIONS = [
    "int8 x int8 products are int8 multiplies accumulated with 32-bit adds",
    "16-bit fixed-point multiplies (butterfly rotations, requantisation, gates) are priced as 32-bit "
    "multiplies (conservative: Horowitz gives no 16-bit integer figure)",
    "a ternary weight costs one 32-bit add (or subtract); zero trits are counted too (upper bound)",
    "on-chip weights (flash / large SRAM) are priced as 1 MB SRAM reads: no 45 nm flash figure "
    "exists in the source; microcontroller flash read energy differs",
    "activations are read and written once per op from a small (8 KB-class) SRAM",
    "weights are read once per layer and inference; only experts that some token selects are read "
    "(expected count under uniform routing)",
    "control flow, address arithmetic, the interpreter and I/O are not counted: this is the "
    "arithmetic and data-movement floor, not what a MicroPython board draws",
]
DEFAULT_ONCHIP = 2 * 1024 * 1024   # bytes of weights that fit on chip when no board is given


@dataclass
class Tally:
    """Operation counts and bytes moved, by part of the network."""
    ops: dict
    weight_bytes_read: int
    activation_bytes: int
    stored_weight_bytes: int

    def add(self, part: str, op: str, n: float):
        d = self.ops.setdefault(part, {})
        d[op] = d.get(op, 0) + n


def _pad(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def _cfg(cfg):
    return cfg if isinstance(cfg, dict) else cfg.to_dict()


def expected_experts_read(c: dict) -> float:
    """Experts read per layer: E * (1 - (1 - k/E)^N), uniform routing, N tokens."""
    E, k = c["num_experts"], c["top_k"]
    n = (c["image_size"] // c["patch_size"]) ** 2
    return E * (1 - (1 - k / E) ** n)


def stored_bytes(cfg, kind: str) -> int:
    """Weight bytes stored on the device for kind "butterfly" (the integer model file),
    "moe_fp32" or "moe_int8" (everything else as in the integer model)."""
    from .boards import estimated_file_size

    c = _cfg(cfg)
    from .config import ModelConfig

    base = estimated_file_size(ModelConfig.from_dict(c), metadata_bytes=0)
    d, f, E, L = c["dim"], c["ffn_dim"], c["num_experts"], c["depth"]
    n_l = c["butterfly_stages"]
    ours_experts = L * (2 * ((f * d + 4) // 5) + f * 3 + d * 7
                        + E * n_l * (_pad(d) // 2 + _pad(f) // 2) * 2)
    if kind == "butterfly":
        return base
    per = {"moe_fp32": 4 * (2 * d * f + f + d), "moe_int8": 2 * d * f + (f + d) * 7}[kind]
    return base - ours_experts + L * E * per


def count(cfg, kind: str = "butterfly") -> Tally:
    """Operations and bytes of one inference for kind "butterfly", "moe_fp32" or "moe_int8"."""
    c = _cfg(cfg)
    d, f, E, k, n_l, L = (c["dim"], c["ffn_dim"], c["num_experts"], c["top_k"],
                          c["butterfly_stages"], c["depth"])
    g = c["image_size"] // c["patch_size"]
    N, pd, C, H = g * g, c["in_channels"] * c["patch_size"] ** 2, c["num_classes"], c["heads"]
    dp, fp = _pad(d), _pad(f)
    t = Tally({}, 0, 0, stored_bytes(c, kind))
    w = 0     # weight bytes read
    a = 0     # activation bytes read + written

    def linear(part, rows, n_in, n_out, wbytes):
        """rows x (n_out x n_in) int8 product + per-output requantisation."""
        nonlocal w, a
        t.add(part, "int8_mult", rows * n_out * n_in)
        t.add(part, "int32_add", rows * n_out * n_in)
        t.add(part, "int32_mult", rows * n_out)
        w += wbytes
        a += rows * (n_in + 2 * n_out)

    def layernorm(part, rows):
        nonlocal a
        t.add(part, "int32_add", 3 * rows * d)
        t.add(part, "int32_mult", 2 * rows * d)
        a += rows * d * 3

    linear("embedding", N, pd, d, d * pd + 4 * N * d + 3 * d)
    n_read = expected_experts_read(c)
    for _ in range(L):
        layernorm("norms", N)
        linear("attention", N, d, 3 * d, 3 * d * d + 7 * 3 * d)
        t.add("attention", "int8_mult", 2 * N * N * d)          # q.k and p.v
        t.add("attention", "int32_add", 2 * N * N * d + 2 * N * N * H)
        t.add("attention", "int32_mult", N * N * H)              # softmax scaling
        a += 2 * N * N * d + N * d
        linear("attention", N, d, d, d * d + 7 * d)
        t.add("residual", "int32_add", 2 * N * d)
        t.add("residual", "int32_mult", 2 * N * d)
        layernorm("norms", N)
        linear("router", N, d, E, E * d)
        t.add("router", "int32_add", N * E)                      # top-k compares
        rows = N * k
        if kind == "butterfly":
            rot = n_l * (dp // 2) + n_l * (fp // 2)
            t.add("experts", "int32_mult", rows * 4 * rot + rows * f)
            t.add("experts", "int32_add", rows * 2 * rot + rows * f * d + rows * f)
            w += 2 * ((f * d + 4) // 5) + 7 * (f + d) + n_read * rot * 2
            a += rows * (2 * dp + 4 * dp * n_l + 2 * fp * (2 + 2 * n_l) + 2 * f)
            # gate mixture, then the shared W_out once per token
            t.add("experts", "int32_mult", rows * f + N * d)
            t.add("experts", "int32_add", rows * f + N * d * f + N * d)
            a += N * (2 * f + 2 * d)
        else:
            mult, add, wb = (("fp32_mult", "fp32_add", 4) if kind == "moe_fp32"
                             else ("int8_mult", "int32_add", 1))
            t.add("experts", mult, rows * 2 * d * f)
            t.add("experts", add, rows * (2 * d * f + f + d))
            if kind == "moe_int8":
                t.add("experts", "int32_mult", rows * (f + d))
            w += n_read * (wb * (2 * d * f) + (4 * (f + d) if kind == "moe_fp32" else 7 * (f + d)))
            a += rows * wb * (d + 2 * f + 2 * d)
            t.add("experts", mult, rows * d)                       # gate mixture
            t.add("experts", add, rows * d)
        t.add("residual", "int32_add", 2 * N * d)
        t.add("residual", "int32_mult", 2 * N * d)
    t.add("head", "int32_add", N * d)                              # mean pool
    layernorm("norms", 1)
    linear("head", 1, d, C, C * d + 4 * C)
    t.weight_bytes_read, t.activation_bytes = int(round(w)), int(a)
    return t


def energy(cfg, kind: str = "butterfly", onchip_bytes: int = DEFAULT_ONCHIP,
           constants: dict | None = None) -> dict:
    """Energy of one inference (picojoules) by part and by cause, for one kind of model."""
    K = dict(CONSTANTS, **(constants or {}))
    t = count(cfg, kind)
    onchip = t.stored_weight_bytes <= onchip_bytes
    w_cost = K["sram_large_read32"] if onchip else K["dram_read32"]
    by_part = {part: sum(n * K[op] for op, n in ops.items()) for part, ops in t.ops.items()}
    totals = {}
    for ops in t.ops.values():
        for op, n in ops.items():
            totals[op] = totals.get(op, 0) + n
    compute = sum(by_part.values())
    weights = t.weight_bytes_read / 4 * w_cost
    acts = t.activation_bytes / 4 * K["sram_small_read32"]
    return {
        "kind": kind,
        "ops": {op: int(round(n)) for op, n in sorted(totals.items())},
        "ops_by_part": {p: {op: int(round(n)) for op, n in o.items()} for p, o in t.ops.items()},
        "stored_weight_bytes": t.stored_weight_bytes,
        "weights_location": "on-chip (flash / SRAM)" if onchip else "off-chip DRAM",
        "weight_bytes_read": t.weight_bytes_read,
        "activation_bytes": t.activation_bytes,
        "energy_pj": {"compute": compute, "weights": weights, "activations": acts,
                      "total": compute + weights + acts},
        "compute_pj_by_part": by_part,
    }


def compare(cfg, onchip_bytes: int = DEFAULT_ONCHIP, constants: dict | None = None) -> dict:
    """ButterflyViT beside standard MoEs of the same shape: energy per inference, savings,
    and the constants and assumptions used."""
    r = {kind: energy(cfg, kind, onchip_bytes, constants)
         for kind in ("butterfly", "moe_fp32", "moe_int8")}
    ours = r["butterfly"]["energy_pj"]["total"]
    out = {
        "model": "analytical, per inference (butterflyvit.energy)",
        "config": _cfg(cfg),
        "onchip_bytes": onchip_bytes,
        "butterfly": r["butterfly"], "moe_fp32": r["moe_fp32"], "moe_int8": r["moe_int8"],
        "saving_vs_moe_fp32": 1 - ours / r["moe_fp32"]["energy_pj"]["total"],
        "saving_vs_moe_int8": 1 - ours / r["moe_int8"]["energy_pj"]["total"],
        "ratio_moe_fp32": r["moe_fp32"]["energy_pj"]["total"] / ours,
        "ratio_moe_int8": r["moe_int8"]["energy_pj"]["total"] / ours,
        "constants_pj": dict(CONSTANTS, **(constants or {})),
        "source": SOURCE,
        "assumptions": ASSUMPTIONS,
    }
    return out


def _uj(pj: float) -> str:
    return f"{pj / 1e6:,.3f} uJ" if pj < 1e9 else f"{pj / 1e9:,.3f} mJ"


def format_compare(r: dict) -> str:
    lines = ["Energy per inference (analytical model: operation and memory-access counts x "
             "per-operation energies)", ""]
    lines.append(f"  {'model':<30}{'compute':>14}{'weights':>14}{'activations':>14}{'total':>14}"
                 f"  weights stored / where")
    names = {"butterfly": "ButterflyViT (integer)", "moe_fp32": "standard MoE, fp32 experts",
             "moe_int8": "standard MoE, int8 experts"}
    for kind in ("butterfly", "moe_fp32", "moe_int8"):
        e = r[kind]["energy_pj"]
        lines.append(f"  {names[kind]:<30}{_uj(e['compute']):>14}{_uj(e['weights']):>14}"
                     f"{_uj(e['activations']):>14}{_uj(e['total']):>14}  "
                     f"{r[kind]['stored_weight_bytes'] / 1e6:,.2f} MB, {r[kind]['weights_location']}")
    lines += ["",
              f"  ButterflyViT saves {100 * r['saving_vs_moe_fp32']:.1f}% against the fp32 standard MoE "
              f"({r['ratio_moe_fp32']:.1f}x) and {100 * r['saving_vs_moe_int8']:.1f}% against the int8 one "
              f"({r['ratio_moe_int8']:.1f}x); on-chip weight budget {r['onchip_bytes'] / 1e6:,.2f} MB.",
              f"  constants (pJ): " + ", ".join(f"{k} {v:g}" for k, v in r["constants_pj"].items()),
              f"  source: {r['source']}",
              "  assumptions:"]
    lines += [f"    - {a}" for a in r["assumptions"]]
    return "\n".join(lines)
