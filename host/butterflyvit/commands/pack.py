"""butterflyvit pack: a float ButterflyViT checkpoint -> one integer model file, and what it costs."""

from . import positive_int

HELP = "quantise a ButterflyViT checkpoint to the integer model and write the packed model file"

# Report parts, in print order: (key, label). Section names map to parts by `part_of`.
PARTS = [
    ("substrates", "substrates W_in, W_out (trit5)"),
    ("scales", "substrate row scales + W_out bias"),
    ("angles", "butterfly angles (uint16 phases)"),
    ("router", "routers (int8)"),
    ("attention", "attention qkv + proj (int8)"),
    ("embeddings", "patch + position embedding, input"),
    ("norms", "LayerNorms"),
    ("head", "classifier head"),
    ("metadata", "metadata (JSON)"),
    ("container", "header, section table, padding"),
]


def add_arguments(p):
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a ButterflyViT checkpoint (butterflyvit train)")
    p.add_argument("-o", "--out", metavar="MODEL", required=True, help="model file to write (*.bvit)")
    p.add_argument("--calib", type=positive_int, default=512, metavar="N",
                   help="training images used to calibrate activation scales (default 512)")
    p.add_argument("--dataset", help="calibration data set (default: the checkpoint's)")
    p.add_argument("--data", metavar="PATH", help="data location (default: the checkpoint's, or the data set's default)")
    p.add_argument("--cache-dir", metavar="DIR", help="decoded-image cache (CIFAR-10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subset (default 0)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads for calibration (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


# --------------------------------------------------------------------------- accounting

def part_of(name: str) -> str:
    leaf = name.split(".")
    if name.startswith(("input.", "embed.")):
        return "embeddings"
    if name.startswith("head."):
        return "head"
    if ".attn." in name:
        return "attention"
    if leaf[-1] in ("g", "b") and leaf[-2].startswith("norm"):
        return "norms"
    if ".ffn.router." in name:
        return "router"
    if name.endswith((".ffn.phi", ".ffn.theta")):
        return "angles"
    if name.endswith((".ffn.w_in", ".ffn.w_out")):
        return "substrates"
    if ".ffn.w_in." in name or ".ffn.w_out." in name:
        return "scales"
    raise ValueError(f"section {name!r} belongs to no part")


def paper_accounting(cfg) -> dict:
    """The paper's own expert-memory count (arXiv 2603.06746): standard = depth x E x 2 fp32 matrices;
    ButterflyViT = depth x (one d_ff x d substrate at 1.58 bits + E x n_l x (d/2 + d_ff/2)
    fp16 angles), rounded once at the end as the paper's figures are."""
    d, f, E, n_l, L = cfg.dim, cfg.ffn_dim, cfg.num_experts, cfg.butterfly_stages, cfg.depth
    standard = L * E * 2 * d * f * 4
    butterfly = int(L * (d * f * 1.58 / 8 + E * n_l * (d / 2 + f / 2) * 2))
    return {"standard_fp32": standard, "butterfly": butterfly, "ratio": standard / butterfly}


def standard_moe_sizes(cfg, file_bytes: dict) -> dict:
    """What a standard MoE-ViT of the same shape (E independent Linear-ReLU-Linear experts)
    stores: all parameters in fp32; and with int8 experts (per-row int16 multiplier + int8
    shift + int32 bias, as this file's int8 layers) beside everything else as in this file."""
    d, f, E, L = cfg.dim, cfg.ffn_dim, cfg.num_experts, cfg.depth
    pd, N, C = cfg.patch_dim, cfg.num_patches, cfg.num_classes
    expert_params = E * (f * d + f + d * f + d)
    per_block = 4 * d + 3 * d * d + 3 * d + d * d + d + E * d + expert_params
    params = d * pd + d + N * d + L * per_block + 2 * d + C * d + C
    experts_int8 = L * E * (2 * d * f + (f + d) * (4 + 2 + 1))
    ours_experts = file_bytes["substrates"] + file_bytes["scales"] + file_bytes["angles"]
    int8_total = sum(file_bytes.values()) - ours_experts + experts_int8
    return {"parameters": params, "fp32": 4 * params, "int8_experts": experts_int8,
            "int8_total": int8_total}


def size_report(path, cfg=None) -> dict:
    """Sizes by part of a written model file, measured from the file itself."""
    import math
    import os

    from ..boards import flash_table
    from ..config import ModelConfig
    from ..modelfile import ENTRY_SIZE, HEADER_SIZE, read_model

    m = read_model(path)
    cfg = cfg or ModelConfig.from_dict(m.metadata["config"])
    parts = {k: 0 for k, _ in PARTS}
    trits = trit_bytes = w_in = 0
    for name, s in m.sections.items():
        parts[part_of(name)] += s.nbytes
        if name.endswith(".ffn.w_in"):
            w_in += s.nbytes
        if s.dtype == "trit5":
            trits += s.shape[0] * s.shape[1]
            trit_bytes += s.nbytes
    parts["metadata"] = m.metadata_size
    parts["container"] = m.file_size - sum(parts.values())
    assert parts["container"] >= HEADER_SIZE + ENTRY_SIZE * len(m.sections)
    disk = os.path.getsize(path)
    assert disk == m.file_size
    bits = 8 * trit_bytes / trits if trits else 0.0
    return {
        "file": str(path), "file_size": disk, "sections": len(m.sections),
        "parts": parts,
        "trits": trits, "trit_bytes": trit_bytes, "bits_per_trit": bits,
        "trit_efficiency": (math.log2(3) / bits) if bits else 0.0,
        "paper_accounting": paper_accounting(cfg),
        # the paper's count (one substrate per layer + the angles), measured from the file
        "paper_count_measured": w_in + parts["angles"],
        "standard_moe": standard_moe_sizes(cfg, parts),
        "boards": flash_table(disk),
        "config": cfg.to_dict(),
    }


def _kb(n):
    return f"{n:,} B ({n / 1024:,.1f} KiB)" if n < 10 * 1024 * 1024 else f"{n:,} B ({n / 1e6:,.2f} MB)"


def format_report(r: dict) -> str:
    total = r["file_size"]
    lines = [f"{r['file']}: {total:,} bytes, {r['sections']} sections (model file format v1)", "",
             f"  {'part':<38}{'bytes':>12}{'share':>8}"]
    for key, label in PARTS:
        n = r["parts"][key]
        lines.append(f"  {label:<38}{n:>12,}{100 * n / total:>7.1f}%")
    lines.append(f"  {'total (size on disk)':<38}{total:>12,}{100.0:>7.1f}%")
    lines.append("")
    lines.append(f"  ternary packing: {r['trits']:,} trits in {r['trit_bytes']:,} bytes = "
                 f"{r['bits_per_trit']:.4f} bits/trit ({100 * r['trit_efficiency']:.2f}% of log2 3)")
    pa, sm = r["paper_accounting"], r["standard_moe"]
    lines += ["", "  against a standard MoE of the same shape:",
              f"    paper's accounting (expert weights only): standard fp32 {_kb(pa['standard_fp32'])}"
              f" vs ButterflyViT {_kb(pa['butterfly'])} = {pa['ratio']:.1f}x",
              f"    the same count measured from this file (W_in substrates + angles): "
              f"{_kb(r['paper_count_measured'])} = {pa['standard_fp32'] / r['paper_count_measured']:.1f}x",
              f"    whole model, standard MoE-ViT fp32: {_kb(sm['fp32'])} vs this file {_kb(total)}"
              f" = {sm['fp32'] / total:.1f}x",
              f"    whole model, standard MoE-ViT with int8 experts: {_kb(sm['int8_total'])}"
              f" = {sm['int8_total'] / total:.1f}x this file"]
    lines += ["", "  flash (file system of a stock MicroPython build; RAM is measured on the device):"]
    for b in r["boards"]:
        lines.append(f"    {b['title']:<30} {b['fs'] // 1024:>6} KiB  "
                     f"{'fits' if b['fits'] else 'DOES NOT FIT'} ({100 * b['share_of_fs']:.0f}%)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command

def run(args) -> int:
    import json
    import os

    import torch

    from ..checkpoint import build_model
    from ..config import ModelConfig
    from ..data import load_dataset
    from ..errors import UserError
    from ..modelfile import write_model
    from ..quantize import QuantizeError, calibration_images, check_butterfly, quantize_model
    from . import check_output, read_checkpoint

    check_output(args.out, "-o")
    ckpt = read_checkpoint(args.checkpoint)
    try:
        cfg = ModelConfig.from_dict(ckpt["config"])
        check_butterfly(cfg)
        model = build_model(cfg)
        model.load_state_dict(ckpt["model"])
        model.eval()
    except QuantizeError as exc:
        raise UserError(f"{args.checkpoint}: {exc}") from None
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:  # config and weights do not fit
        msg = " ".join(str(exc).split())
        raise UserError(f"{args.checkpoint}: cannot read the checkpoint ({msg})") from None

    train_cfg = ckpt.get("train") or {}
    dataset = args.dataset or ckpt.get("dataset") or train_cfg.get("dataset") or "fashion-mnist"
    data = args.data or (train_cfg.get("data") if dataset == train_cfg.get("dataset") else None)
    try:
        ds = load_dataset(dataset, data, args.cache_dir, model.cfg.image_size)
    except (ValueError, ImportError) as exc:
        raise UserError(f"cannot load the calibration data set {dataset!r}: {exc} "
                        "(give --dataset/--data)") from None
    norm = ckpt.get("normalize") or {"mean": ds.mean, "std": ds.std}
    classes = ckpt.get("classes") or ds.classes
    if ds.channels != model.cfg.in_channels or ds.image_size != model.cfg.image_size:
        raise UserError(f"data set {dataset!r} has {ds.channels}x{ds.image_size}x{ds.image_size} "
                        f"images, the model takes {model.cfg.in_channels}x{model.cfg.image_size}x"
                        f"{model.cfg.image_size}")
    torch.set_num_threads(args.threads)
    calib = calibration_images(ds, args.calib, args.seed)
    metrics = ckpt.get("metrics") if isinstance(ckpt.get("metrics"), dict) else {}
    extra = {
        # where the data was (if not the data set's default), so eval finds it again
        "calibration": {"dataset": dataset, "split": "train", "seed": args.seed,
                        **({"data": str(data)} if data else {})},
        "source": {"checkpoint": os.path.basename(args.checkpoint),
                   "dataset": ckpt.get("dataset", dataset),
                   "float_test_acc": metrics.get("test_acc")},
    }
    try:
        arrays, meta = quantize_model(model, calib, norm["mean"], norm["std"], classes, extra)
    except QuantizeError as exc:
        raise UserError(f"{args.checkpoint}: {exc}") from None
    write_model(args.out, arrays, meta)
    report = size_report(args.out, model.cfg)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_report(report))
    return 0
