"""butterflyvit demo: the main job, end to end on this machine.

load the shipped checkpoint (or train one) -> pack it -> classify Fashion-MNIST test
images with the host integer reference and with the board agent (device/bvit/agent.py,
the code the serial harness drives on a board) on the real MicroPython unix port under a
board-sized heap -> compare the integer logits.
"""

from . import positive_int

HELP = "train or load a model, pack it, classify images on the MicroPython unix port, compare with the host"

DEFAULT_CHECKPOINT = "models/pico-fmnist.pt"
DEFAULT_SHIPPED_MODEL = "models/pico-fmnist.bvit"


def add_arguments(p):
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, metavar="CKPT",
                   help=f"float checkpoint to pack (default {DEFAULT_CHECKPOINT}, the shipped one)")
    p.add_argument("--train-steps", type=positive_int, metavar="N",
                   help="train a fresh pico model for N steps on Fashion-MNIST instead of loading one")
    p.add_argument("--images", type=positive_int, default=8, metavar="N",
                   help="Fashion-MNIST test images to classify (default 8)")
    p.add_argument("--heapsize", default="96k",
                   help="MicroPython heap, like a board's (default 96k: RP2040 / ESP32 class)")
    p.add_argument("--backend", default="auto", choices=["auto", "viper", "python"],
                   help="device kernels (default auto: viper where it exists)")
    p.add_argument("--out", default="out/demo", metavar="DIR", help="work folder (default out/demo)")


def _micropython():
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "micropython"
    if not exe.exists():
        raise SystemExit(f"butterflyvit demo: {exe} is missing: run scripts/setup.sh")
    return str(exe)


def _install_board(exe, device_dir, board_dir):
    """The device code as a small board holds it: bvit/ precompiled with mpy-cross for this
    MicroPython (compiling .py on import would need more heap than a board has), classify.py."""
    import shutil
    import subprocess

    from ..harness.files import compile_mpy, device_files

    mpy = int(subprocess.run([exe, "-c", "import sys; print(sys.implementation._mpy)"],
                             capture_output=True, text=True, check=True).stdout)
    (board_dir / "bvit").mkdir(parents=True, exist_ok=True)
    for local, remote in compile_mpy(device_files(device_dir), mpy, board_dir / "bvit"):
        if (board_dir / remote).resolve() != local.resolve():
            shutil.copyfile(local, board_dir / remote)


def _run_board(exe, heapsize, board_dir, model, frames, backend):
    """The board agent (bvit.agent, precompiled) on the unix port: the model loaded once,
    then each frame (path, "WxH"); returns a result dict per frame (logits, us, heap_peak)."""
    import os
    import subprocess

    from ..harness.protocol import job, read_jobs, write_jobs

    jobs = write_jobs(board_dir / "jobs.json", [job(model, frames, backend=backend, collect=True)])
    env = dict(os.environ, MICROPYPATH=f"{board_dir}{os.pathsep}.frozen")
    cmd = [exe, "-X", f"heapsize={heapsize}", "-m", "bvit.agent", str(jobs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    done = read_jobs(proc.stdout)
    if proc.returncode != 0 or len(done) != 1 or len(done[0]["results"]) != len(frames):
        raise RuntimeError("the board agent failed on MicroPython:\n" + proc.stdout + proc.stderr)
    return done[0]["results"]


def run(args) -> int:
    import filecmp
    from pathlib import Path

    import numpy as np

    from ..cli import main as cli
    from ..data import load_dataset
    from ..errors import UserError
    from ..intmodel import IntModel

    repo = Path(__file__).resolve().parents[3]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def step(msg):
        print(f"\n== {msg}", flush=True)

    checkpoint = Path(args.checkpoint)
    if args.train_steps:
        step(f"train: pico ButterflyViT on Fashion-MNIST, {args.train_steps} steps")
        checkpoint = out / "trained.pt"
        rc = cli(["train", "--preset", "pico", "--dataset", "fashion-mnist",
                  "--steps", str(args.train_steps), "--out", str(checkpoint)])
        if rc:
            return rc
    elif not checkpoint.exists():
        raise UserError(f"--checkpoint {checkpoint}: no such file (use --train-steps N to train one)")

    step(f"pack: {checkpoint} -> {out / 'model.bvit'}")
    model_file = out / "model.bvit"
    rc = cli(["pack", str(checkpoint), "-o", str(model_file)])
    if rc:
        return rc
    shipped = repo / DEFAULT_SHIPPED_MODEL
    if not args.train_steps and checkpoint.resolve() == (repo / DEFAULT_CHECKPOINT).resolve() \
            and shipped.exists():
        same = filecmp.cmp(model_file, shipped, shallow=False)
        print(f"packed file {'is byte-identical to' if same else 'DIFFERS from'} the shipped {DEFAULT_SHIPPED_MODEL}")

    step(f"classify {args.images} Fashion-MNIST test images: host reference vs MicroPython "
         f"unix port (heap {args.heapsize}, {args.backend} kernels)")
    net = IntModel.load(model_file)
    cfg = net.cfg
    test = load_dataset("fashion-mnist").test
    if args.images > len(test):
        raise UserError(f"--images {args.images}: the test set has {len(test)} images")
    frames = out / "frames"
    frames.mkdir(exist_ok=True)
    exe = _micropython()
    board_dir = out / "board"
    _install_board(exe, repo / "device", board_dir)
    size = f"{cfg.image_size}x{cfg.image_size}"
    classes = net.classes
    images = [test.images[i].numpy().astype(np.uint8).reshape(cfg.image_size, cfg.image_size).tobytes()
              for i in range(args.images)]
    paths = []
    for i, pixels in enumerate(images):
        paths.append((frames / f"test{i:04d}.gray", size))
        paths[-1][0].write_bytes(pixels)
    board = _run_board(exe, args.heapsize, board_dir, model_file, paths, args.backend)
    exact, board_right, host_right = 0, 0, 0
    print(f"{'#':>3}  {'label':<12} {'host':<12} {'board':<12} {'logits':<10} {'ms':>6}  heap peak")
    for i, (pixels, r) in enumerate(zip(images, board)):
        label = int(test.labels[i])
        host = net.forward_frame(pixels, cfg.image_size, cfg.image_size, "GRAYSCALE")
        host_logits = [int(v) for v in host.logits]
        same = host_logits == r["logits"]
        exact += same
        host_top, board_top = int(np.argmax(host_logits)), int(np.argmax(r["logits"]))
        host_right += host_top == label
        board_right += board_top == label
        print(f"{i:>3}  {classes[label]:<12} {classes[host_top]:<12} {classes[board_top]:<12} "
              f"{'identical' if same else 'DIFFER':<10} {r['us'] / 1000:>6.0f}  "
              f"{r['heap_peak'] / 1024:.1f} KB", flush=True)

    step("result")
    n = args.images
    print(f"integer logits identical on {exact}/{n} images; top-1 correct: host {host_right}/{n}, "
          f"board {board_right}/{n}")
    return 0 if exact == n else 1
