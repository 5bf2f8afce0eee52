"""butterflyvit eval: integer top-1 of a model file beside the float checkpoint's, same images."""

from . import nonnegative_int, positive_int

HELP = "evaluate a model file's integer reference on a test set (beside the float checkpoint)"


def add_arguments(p):
    p.add_argument("model", metavar="MODEL", help="packed model file (butterflyvit pack)")
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10", "digits", "folder"],
                   help="default: the checkpoint's data set, else the one the model file was "
                        "calibrated on, else fashion-mnist")
    p.add_argument("--data", metavar="PATH", help="data location (as for train; default: the "
                   "checkpoint's or the model file's, for the same data set)")
    p.add_argument("--cache-dir", metavar="DIR", help="decoded-image cache (CIFAR-10, folder)")
    p.add_argument("--checkpoint", metavar="CKPT", help="the float checkpoint, evaluated on the same images")
    p.add_argument("--limit", type=nonnegative_int, metavar="N",
                   help="only N test images, spread evenly over the test set (every k-th: a test "
                        "set stored in class order is still sampled from every class)")
    p.add_argument("--frames", action="store_true",
                   help="feed the integer model camera frames (GRAYSCALE, or RGB565 for 3 channels) "
                        "instead of the 8-bit pixels the float model sees")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads for the float model (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def spread_indices(total: int, n: int):
    """n indices spread evenly over range(total) (all of them when n >= total). The first n
    would be a biased sample of a test set stored in class order, as image trees are."""
    import numpy as np

    n = min(n, total)
    return (np.arange(n, dtype=np.int64) * total) // n if n else np.zeros(0, np.int64)


# Fields that do not change what a trained model computes (noise only while training).
TRAINING_ONLY = ("router_noise",)


def _config_difference(ckpt_cfg, file_cfg) -> str:
    """'' when the checkpoint's config is the packed model's, else which fields differ."""
    a, b = ckpt_cfg.to_dict(), file_cfg.to_dict()
    return ", ".join(f"{k} {a[k]!r} in the checkpoint, {b.get(k)!r} in the model file"
                     for k in a if k not in TRAINING_ONLY and a[k] != b.get(k))


def _data_source(args, ckpt, metadata) -> tuple:
    """(data set, --data) to evaluate on: the options, else what the checkpoint was trained
    on, else what the model file was calibrated on, else Fashion-MNIST's defaults."""
    train = (ckpt or {}).get("train") or {}
    calib = metadata.get("calibration") if isinstance(metadata.get("calibration"), dict) else {}
    known = [(train.get("dataset") or (ckpt or {}).get("dataset"), train.get("data")),
             (calib.get("dataset"), calib.get("data"))]
    dataset = args.dataset or next((d for d, _ in known if d), "fashion-mnist")
    data = args.data or next((p for d, p in known if d == dataset and p), None)
    return dataset, data


def run(args) -> int:
    import json
    import sys
    import time

    import numpy as np

    from ..data import load_dataset
    from ..errors import UserError
    from ..intmodel import IntModel, rgb_to_rgb565
    from ..modelfile import ModelFormatError

    try:
        model = IntModel.load(args.model)
    except ModelFormatError as exc:
        raise UserError(f"{args.model}: {exc}") from None
    cfg = model.cfg
    ckpt = None
    if args.checkpoint:  # read and matched before the data set, which can take a while
        from ..checkpoint import build_model
        from ..config import ModelConfig
        from . import read_checkpoint

        ckpt = read_checkpoint(args.checkpoint)
        try:
            ckpt_cfg = ModelConfig.from_dict(ckpt["config"])
        except (TypeError, ValueError) as exc:
            raise UserError(f"{args.checkpoint}: cannot read the checkpoint ({exc})") from None
        differ = _config_difference(ckpt_cfg, cfg)
        if differ:
            raise UserError(f"--checkpoint {args.checkpoint} is not the model packed in "
                            f"{args.model}: {differ}")
    dataset, data = _data_source(args, ckpt, model.meta)
    try:
        ds = load_dataset(dataset, data, args.cache_dir, cfg.image_size)
    except (ValueError, ImportError) as exc:
        raise UserError(f"cannot load {dataset!r}: {exc}") from None
    split = ds.test
    pick = spread_indices(len(split), len(split) if args.limit is None else args.limit)
    n = len(pick)
    if ds.channels != cfg.in_channels or ds.image_size != cfg.image_size:
        raise UserError(f"{dataset} images are {ds.channels}x{ds.image_size}x{ds.image_size}, "
                        f"{args.model} takes {cfg.in_channels}x{cfg.image_size}x{cfg.image_size}")
    chosen = split.images[pick]
    images = chosen.numpy()
    labels = split.labels[pick].numpy()

    float_pred = None
    if ckpt is not None:
        import torch

        from ..data import normalize
        torch.set_num_threads(args.threads)
        fmodel = build_model(ckpt_cfg)
        try:
            fmodel.load_state_dict(ckpt["model"])
        except (RuntimeError, TypeError, KeyError) as exc:  # weights of another shape
            msg = " ".join(str(exc).split())
            raise UserError(f"{args.checkpoint}: cannot read the checkpoint ({msg})") from None
        fmodel.eval()
        norm = ckpt.get("normalize") or {"mean": ds.mean, "std": ds.std}
        preds = []
        with torch.no_grad():
            for i in range(0, n, 500):
                x = normalize(chosen[i:i + 500], norm["mean"], norm["std"])
                preds.append(fmodel(x).argmax(-1).numpy())
        float_pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)

    it = range(n)
    if args.progress and n > 100 and not args.json:
        from tqdm import tqdm
        it = tqdm(it, desc="integer reference", unit="img", file=sys.stderr)
    int_pred = np.zeros(n, dtype=np.int64)
    t0 = time.perf_counter()
    for j in it:
        img = images[j]
        if args.frames:
            if cfg.in_channels == 1:
                r = model.forward_frame(img[0].tobytes(), cfg.image_size, cfg.image_size, "GRAYSCALE")
            else:
                r = model.forward_frame(rgb_to_rgb565(img.transpose(1, 2, 0)), cfg.image_size,
                                        cfg.image_size, "RGB565")
        else:
            r = model.forward_pixels(img)
        int_pred[j] = r.top(1)[0][0]
    dt = time.perf_counter() - t0

    res = {"model": args.model, "dataset": dataset, "split": "test", "images": n,
           "input": ("frames " + ("GRAYSCALE" if cfg.in_channels == 1 else "RGB565")) if args.frames
           else "8-bit pixels",
           "integer_top1": float((int_pred == labels).mean()) if n else None,
           "ms_per_image": 1000 * dt / n if n else None}
    if float_pred is not None:
        res["float_top1"] = float((float_pred == labels).mean()) if n else None
        res["difference_points"] = 100 * (res["integer_top1"] - res["float_top1"]) if n else None
        res["same_prediction"] = float((float_pred == int_pred).mean()) if n else None
        res["checkpoint"] = args.checkpoint
    if args.json:
        print(json.dumps(res))
        return 0
    if not n:
        print("no images")
        return 0
    print(f"{dataset} test, {n} images ({res['input']}):")
    print(f"  integer reference top-1 {100 * res['integer_top1']:.2f}%   "
          f"({res['ms_per_image']:.1f} ms/image in numpy)")
    if float_pred is not None:
        print(f"  float checkpoint  top-1 {100 * res['float_top1']:.2f}%   "
              f"difference {res['difference_points']:+.2f} points, same top-1 on "
              f"{100 * res['same_prediction']:.2f}% of images")
    return 0
