"""butterflyvit classify: run the numpy integer reference on images and print the top classes."""

HELP = "classify images with the integer reference (the golden implementation) of a model file"


def add_arguments(p):
    p.add_argument("model", metavar="MODEL", help="packed model file (butterflyvit pack)")
    p.add_argument("images", metavar="IMAGE", nargs="+",
                   help="PNG/JPEG/... (sent as a GRAYSCALE frame to a 1-channel model, RGB565 to "
                        "a 3-channel one), or a raw camera frame NAME.gray / NAME.rgb565 with --size")
    p.add_argument("--top-k", "-k", type=int, default=3, help="classes to print (default 3)")
    p.add_argument("--size", metavar="WxH", help="width x height of raw .gray / .rgb565 frames")
    p.add_argument("--format", choices=["GRAYSCALE", "RGB565"],
                   help="frame format for image files (default by the model's channels)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: integer logits, top-k, and the experts chosen per layer")


def run(args) -> int:
    import json
    import os
    import sys

    from ..intmodel import FRAME_EXT, IntModel, image_to_frame, read_raw_frame
    from ..modelfile import ModelFormatError

    def fail(msg):
        print(f"butterflyvit classify: error: {msg}", file=sys.stderr)
        return 2

    if args.top_k < 1:
        return fail("--top-k must be at least 1")
    try:
        model = IntModel.load(args.model)
    except FileNotFoundError:
        return fail(f"{args.model}: no such file")
    except IsADirectoryError:
        return fail(f"{args.model}: is a directory")
    except ModelFormatError as exc:
        return fail(f"{args.model}: {exc}")
    cfg = model.cfg
    out = []
    status = 0
    for path in args.images:
        try:
            if os.path.splitext(path)[1].lower() in FRAME_EXT:
                if not args.size:
                    raise ValueError("a raw frame needs --size WIDTHxHEIGHT")
                buf, w, h, fmt = read_raw_frame(path, args.size)
            else:
                buf, w, h, fmt = image_to_frame(path, args.format, cfg.in_channels)
            r = model.forward_frame(buf, w, h, fmt)
        except FileNotFoundError:
            print(f"butterflyvit classify: error: {path}: no such file", file=sys.stderr)
            status = 2
            continue
        except (ValueError, OSError) as exc:  # wrong frame size, not an image, ...
            print(f"butterflyvit classify: error: {path}: {exc}", file=sys.stderr)
            status = 2
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
