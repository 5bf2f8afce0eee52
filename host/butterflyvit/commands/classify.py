"""butterflyvit classify: run the numpy integer reference on images and print the top classes."""

from . import positive_int

HELP = "classify images with the integer reference (the golden implementation) of a model file"


def _frame_size(text):
    """--size WIDTHxHEIGHT, both at least 1."""
    import argparse
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 160x120)") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be at least 1")
    return w, h


def add_arguments(p):
    p.add_argument("model", metavar="MODEL", help="packed model file (butterflyvit pack)")
    p.add_argument("images", metavar="IMAGE", nargs="+",
                   help="PNG/JPEG/... (sent as a GRAYSCALE frame to a 1-channel model, RGB565 to "
                        "a 3-channel one), or a raw camera frame NAME_WxH.gray / NAME_WxH.rgb565 (or with --size)")
    p.add_argument("--top-k", "-k", type=positive_int, default=3, help="classes to print (default 3)")
    p.add_argument("--size", metavar="WxH", type=_frame_size,
                   help="width x height of raw .gray / .rgb565 frames whose name does not say it")
    p.add_argument("--format", choices=["GRAYSCALE", "RGB565"],
                   help="frame format for image files (default by the model's channels)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: integer logits, top-k, and the experts chosen per layer")


def run(args) -> int:
    """Every image is tried; each one that cannot be classified gets its error line (naming
    it) and the status becomes 2, the others are still printed."""
    import json
    import os
    from pathlib import Path

    from ..cli import error, user_error
    from ..errors import UserError
    from ..intmodel import FRAME_EXT, IntModel, image_to_frame, read_raw_frame
    from ..modelfile import ModelFormatError
    from .frame import size_from_name

    try:
        model = IntModel.load(args.model)
    except ModelFormatError as exc:
        raise UserError(f"{args.model}: {exc}") from None
    cfg = model.cfg
    out = []
    status = 0
    for path in args.images:
        try:
            if os.path.splitext(path)[1].lower() in FRAME_EXT:
                size = args.size or size_from_name(Path(path))   # NAME_WxH.ext, as the board
                if not size:
                    raise UserError(f"{path}: a raw frame needs --size WIDTHxHEIGHT, or a name "
                                    f"like NAME_160x120{os.path.splitext(path)[1]}")
                buf, w, h, fmt = read_raw_frame(path, size)
            else:
                buf, w, h, fmt = image_to_frame(path, args.format, cfg.in_channels)
            r = model.forward_frame(buf, w, h, fmt)
        except Exception as exc:
            # a bad image spoils only its own line; the status says one was bad
            msg = user_error(exc) or (f"{path}: {exc}" if isinstance(exc, ValueError) else None)
            if msg is None:
                raise
            status = error("classify", msg)
            continue
        probs = model.probabilities(r.logits)
        top = [{"class": i, "name": str(model.classes[i]), "logit": v, "prob": round(float(probs[i]), 4)}
               for i, v in r.top(args.top_k)]
        if args.json:
            out.append({"image": path, "frame": {"format": fmt, "width": w, "height": h},
                        "logits": [int(v) for v in r.logits], "top": top,
                        "experts": [idx.tolist() for idx, _ in r.routes],
                        "gates": [g.tolist() for _, g in r.routes]})
        else:
            best = ", ".join(f"{t['name']} {t['prob']:.3f} ({t['logit']})" for t in top)
            print(f"{path}: {best}")
    if args.json:
        print(json.dumps(out if len(out) != 1 else out[0]))
    return status
