"""butterflyvit train: train ButterflyViT or a baseline (dense ViT, standard MoE-ViT)."""

from ..presets import PRESETS
from . import nonnegative_float, nonnegative_int, positive_float, positive_int

DATASETS = ("fashion-mnist", "cifar10", "digits", "folder")   # data.DATASETS, without importing torch

HELP = "train a ButterflyViT (or a dense / standard-MoE baseline); runs under torchrun too"

MODEL_FLAGS = [  # (flag, ModelConfig field, type, help)
    ("--ffn", "ffn", str, "feed-forward kind: butterfly, moe (standard MoE) or dense"),
    ("--experts", "num_experts", positive_int, "number of experts"),
    ("--top-k", "top_k", positive_int, "experts per token"),
    ("--stages", "butterfly_stages", nonnegative_int, "butterfly stages n_l"),
    ("--dim", "dim", positive_int, "model width"),
    ("--ffn-dim", "ffn_dim", positive_int, "feed-forward width"),
    ("--depth", "depth", positive_int, "number of blocks"),
    ("--heads", "heads", positive_int, "attention heads"),
    ("--patch", "patch_size", positive_int, "patch size in pixels"),
    ("--router-noise", "router_noise", nonnegative_float, "std of router logit noise while training"),
]


def _fraction(text):
    """--label-smoothing: a number in [0, 1)."""
    import argparse
    v = nonnegative_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not in [0, 1)")
    return v


def add_arguments(p):
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashion-mnist", choices=DATASETS,
                   help="fashion-mnist (default), cifar10, digits, or folder: your own images")
    g.add_argument("--data", metavar="PATH",
                   help="data location: Fashion-MNIST IDX directory (default "
                        "/usr/share/datasets/fashion-mnist); CIFAR-10 pickle directory, "
                        "image-folder tree or .tar.gz of either; folder: DIR/<class>/<image> "
                        "(or DIR/{train,test}/<class>/<image>), any format and size")
    g.add_argument("--image-size", type=positive_int, metavar="PX",
                   help="folder data set: images are centre-cropped and resized to PX x PX "
                        "(default 32)")
    g.add_argument("--cache-dir", metavar="DIR", help="decoded-image cache (default ~/.cache/butterflyvit)")
    g.add_argument("--train-subset", type=positive_int, metavar="N", help="use only the first N training images")
    g.add_argument("--no-augment", dest="augment", action="store_false", help="no crops or flips")
    g.add_argument("--pad", type=nonnegative_int, help="random-crop padding in pixels (default by image size)")
    g.add_argument("--flip", dest="flip", action="store_true", default=None, help="random horizontal flips")
    g.add_argument("--no-flip", dest="flip", action="store_false")

    g = p.add_argument_group("model")
    g.add_argument("--preset", default="pico", choices=sorted(PRESETS), help="pico (default), cifar, paper or tiny")
    for flag, _, typ, h in MODEL_FLAGS:
        g.add_argument(flag, type=typ, help=h)
    g.add_argument("--smooth-routing", dest="smooth_routing", action="store_true", default=None,
                   help="route on logits averaged over each patch's 4-neighbourhood")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_float, default=10.0, help="epochs (may be fractional; default 10)")
    g.add_argument("--steps", type=positive_int, help="total optimiser steps (overrides --epochs)")
    g.add_argument("--batch-size", type=positive_int, default=128, help="global batch size (default 128)")
    g.add_argument("--lr", type=positive_float, default=2e-3, help="peak learning rate (AdamW; default 2e-3)")
    g.add_argument("--min-lr", type=nonnegative_float, default=1e-5, help="final learning rate of the cosine decay")
    g.add_argument("--weight-decay", type=nonnegative_float, default=0.05)
    g.add_argument("--angle-lr-scale", type=nonnegative_float, help="butterfly angles' learning rate = "
                   "--lr times this (default: the TrainConfig default)")
    g.add_argument("--warmup-steps", type=nonnegative_int, help="linear warm-up steps (default 5%%, at most 500)")
    g.add_argument("--clip", type=nonnegative_float, default=1.0, help="gradient-norm clipping (0: off)")
    g.add_argument("--balance-weight", type=nonnegative_float, default=0.01, help="load-balancing loss weight")
    g.add_argument("--smooth-weight", type=nonnegative_float, default=0.0,
                   help="spatial smoothness regulariser weight (0: off; paper sweep 1e-3..1e-1)")
    g.add_argument("--label-smoothing", type=_fraction, default=0.0)
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("run")
    g.add_argument("--out", "-o", metavar="CKPT", help="checkpoint file to write (at epoch ends and at the end)")
    g.add_argument("--export", metavar="CKPT",
                   help="at the end also write a model-only checkpoint (no optimiser state)")
    g.add_argument("--resume", metavar="CKPT", help="continue the run saved in CKPT")
    g.add_argument("--save-every", type=nonnegative_int, default=0, metavar="STEPS", help="also checkpoint every STEPS steps")
    g.add_argument("--stop-after", type=positive_int, metavar="STEP",
                   help="stop after this global step with a checkpoint (continue with --resume)")
    g.add_argument("--eval-every", type=nonnegative_int, default=1, metavar="EPOCHS", help="test-set evaluation period (0: end only)")
    g.add_argument("--eval-batch-size", type=positive_int, default=500)
    g.add_argument("--threads", type=positive_int, help="torch CPU threads per process")
    g.add_argument("--log", metavar="FILE", help="append evaluations as JSON lines")
    g.add_argument("--metrics-out", metavar="FILE", help="write the final metrics as JSON")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar: one plain line an epoch instead (for log files)")


def run(args) -> int:
    import json

    from ..errors import UserError
    from ..presets import preset_config
    from ..train import TrainConfig, train

    from . import check_output

    # outputs that would otherwise fail only after the training
    for option, path, makes_folder in (("--out", args.out, True), ("--export", args.export, True),
                                       ("--log", args.log, False),
                                       ("--metrics-out", args.metrics_out, False)):
        if path:
            check_output(path, option, makes_folder)
    overrides = {field: getattr(args, flag.lstrip("-").replace("-", "_"))
                 for flag, field, _, _ in MODEL_FLAGS}
    overrides["smooth_routing"] = args.smooth_routing
    try:
        cfg = preset_config(args.preset, **overrides)
    except ValueError as exc:  # an unknown preset, or options that make no model
        raise UserError(f"--preset {args.preset} with these options: {exc}") from None
    tc = TrainConfig(
        dataset=args.dataset, data=args.data, cache_dir=args.cache_dir, image_size=args.image_size,
        epochs=args.epochs,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
        weight_decay=args.weight_decay, **({} if args.angle_lr_scale is None else
                                           {"angle_lr_scale": args.angle_lr_scale}),
        warmup_steps=args.warmup_steps, clip=args.clip,
        balance_weight=args.balance_weight, smooth_weight=args.smooth_weight,
        label_smoothing=args.label_smoothing, augment=args.augment, pad=args.pad,
        flip=args.flip, train_subset=args.train_subset, eval_batch_size=args.eval_batch_size,
        eval_every=args.eval_every, save_every=args.save_every, stop_after=args.stop_after, seed=args.seed, out=args.out, export=args.export,
        resume=args.resume, threads=args.threads, progress=args.progress, log=args.log,
        metrics_out=args.metrics_out)
    final = train(cfg, tc)   # a refused --resume or data file is a UserError: cli.main says it
    import os
    if os.environ.get("RANK", "0") == "0":
        keep = ("test_acc", "test_loss", "agreement", "steps", "parameters", "stopped_at")
        print(json.dumps({k: final[k] for k in keep if k in final}))
    return 0
