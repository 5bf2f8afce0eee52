"""butterflyvit memory: the paper's memory accounting and every stored byte of a model."""

from . import nonnegative_int, positive_int

HELP = "memory accounting: the paper's (--paper) and the full one for a config or checkpoint"


def add_arguments(p):
    src = p.add_argument_group("what to account")
    src.add_argument("--paper", action="store_true",
                     help="reproduce the paper's count (7 layers, d 256, d_ff 1024, 64 experts, "
                          "n_l 4) and its 8..128-expert sweep, then the full count of that model")
    src.add_argument("--checkpoint", "-c", metavar="CKPT", help="a trained checkpoint")
    src.add_argument("--preset", help="a preset config: pico (default), cifar, paper, tiny")
    pos = positive_int
    for flag, dest, typ in (("--ffn", "ffn", str), ("--experts", "num_experts", pos),
                            ("--stages", "butterfly_stages", nonnegative_int), ("--dim", "dim", pos),
                            ("--ffn-dim", "ffn_dim", pos), ("--depth", "depth", pos),
                            ("--top-k", "top_k", pos), ("--patch", "patch_size", pos),
                            ("--image-size", "image_size", pos), ("--channels", "in_channels", pos),
                            ("--classes", "num_classes", pos), ("--heads", "heads", pos)):
        src.add_argument(flag, dest=dest, type=typ, help=f"override {dest}")
    src.add_argument("--sweep", default="8,16,32,64,128", metavar="E,E,...", type=_expert_counts,
                     help="expert counts for the sweep (default 8,16,32,64,128; '' for none)")
    st = p.add_argument_group("storage assumed for the full count")
    st.add_argument("--float-bytes", type=int, default=4, choices=[1, 2, 4],
                    help="bytes per float value (embeddings, attention, norms, router, head, biases)")
    st.add_argument("--angle-bytes", type=int, default=2, choices=[1, 2, 4], help="bytes per angle (paper: 2)")
    st.add_argument("--scale-bytes", type=int, default=4, choices=[1, 2, 4], help="bytes per row scale")
    st.add_argument("--baseline-float-bytes", type=int, default=4, choices=[1, 2, 4],
                    help="bytes per standard-MoE expert weight (paper: 4)")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print JSON instead of tables")
    out.add_argument("--plot", metavar="FILE.png", help="write a figure")


def _expert_counts(text):
    """--sweep: comma-separated expert counts, each at least 1 ('' for none)."""
    return [positive_int(e.strip()) for e in text.split(",") if e.strip()]


MODEL_KEYS = ("ffn", "num_experts", "butterfly_stages", "dim", "ffn_dim", "depth", "top_k",
              "patch_size", "image_size", "in_channels", "num_classes", "heads")


def _config(args):
    from ..config import ModelConfig
    from ..errors import UserError
    from ..presets import PRESETS

    overrides = {k: getattr(args, k) for k in MODEL_KEYS if getattr(args, k) is not None}
    if args.checkpoint:
        from . import read_checkpoint
        ck = read_checkpoint(args.checkpoint)
        base, title = dict(ck["config"]), f"checkpoint {args.checkpoint}"
    else:
        name = args.preset or ("paper" if args.paper else "pico")
        if name not in PRESETS:
            raise UserError(f"--preset {name}: unknown; choose from {', '.join(sorted(PRESETS))}")
        base, title = dict(PRESETS[name]), f"preset {name}"
    if overrides:
        title += " with " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    base.update(overrides)
    try:
        return ModelConfig.from_dict(base), title
    except (TypeError, ValueError) as exc:  # options that make no model
        raise UserError(f"{title}: {exc}") from None


def run(args) -> int:
    import json

    from .. import memory as M
    from . import check_output

    if args.plot:
        check_output(args.plot, "--plot")

    kw = dict(float_bytes=args.float_bytes, angle_bytes=args.angle_bytes,
              scale_bytes=args.scale_bytes, baseline_float_bytes=args.baseline_float_bytes)
    experts = args.sweep
    report = {}
    if args.paper:
        report["paper"] = M.paper_accounting(angle_bytes=args.angle_bytes)
        report["paper_sweep"] = M.paper_sweep(experts or M.PAPER_SWEEP, angle_bytes=args.angle_bytes)
    cfg, title = _config(args)
    report["title"] = title
    report["compare"] = M.compare(cfg, **kw)
    if experts and cfg.ffn != "dense":
        report["sweep"] = M.sweep(cfg, experts, **kw)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        blocks = []
        if args.paper:
            blocks.append(M.format_paper(report["paper"], report["paper_sweep"]))
        blocks.append(M.format_compare(report["compare"], title))
        if report.get("sweep"):
            blocks.append("Sweep over experts (full accounting):\n" + M.format_sweep(report["sweep"]))
        print("\n\n".join(blocks))
    if args.plot:
        M.plot(args.plot, report)
        if not args.json:
            print(f"\nwrote {args.plot}")
    return 0
