"""One harness run: the board's integer outputs, timings and heap against the host reference.

    report = run_harness(HarnessOptions(port="/dev/ttyACM0", board="rp2040-pico",
                                        model="models/pico-fmnist.bvit", images=50))

Steps: read the model (host reference: IntModel) and N test images: the test split of the
model's own data set, or the user's files (--images-from; images.py);
connect to the board's raw REPL; look at what it holds (onboard.py: device code frozen into
its firmware, a frozen or ROMFS model that is this one, whether its file system can be
written); copy the device code and the model where needed and the board's copies are
missing or differ (by hash); start the board agent (device/bvit/agent.py, protocol.py)
with the model; send each image as a raw frame and read back one checked line (integer
logits, ticks_us of the forward, heap); compare with the host's logits bit for bit (an image
that differs is run once more before it counts). After every image the report (report.py)
is rewritten, so a board that dies leaves a partial report and `--resume` continues where it
stopped. At the end: the board's top-1 against the labels (near chance is a warning),
latency statistics, energy two ways and a PNG plot.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import files as F
from . import onboard as O
from . import protocol as P
from . import report as R
from .images import frame_for, load_dataset_images, load_folder_images
from .transport import BoardDisconnected, BoardException, HarnessError, RawRepl

REPO = Path(__file__).resolve().parents[3]
DEVICE_DIR = REPO / "device"


@dataclass
class HarnessOptions:
    port: str
    board: str
    model: str
    images: int = 20
    report: str = "harness-report.json"
    plot: str | None = None              # default: the report's name with .png
    resume: bool = False
    first: int = 0                       # index of the first test image
    dataset: str | None = None           # data set (default: the one the model file records)
    data: str | None = None              # where that data set is (butterflyvit.data's --data)
    images_from: str | None = None       # your own images: DIR/<class>/<image> and/or DIR/<image>
    cache_dir: str | None = None         # decoded-image cache (CIFAR-10, folder data sets)
    baud: int = 115200
    timeout: float = 60.0                # seconds the board may stay silent per step
    remote_dir: str = ""                 # folder on the board for bvit/, classify.py, the model
    remote_model: str | None = None      # the model's name on the board (default: its file name)
    transfer: str = "repl"               # repl | ampy | drive | none
    drive: str | None = None             # a mounted board drive (CircuitPython CIRCUITPY)
    device_dir: str | None = None
    power_w: float | None = None         # overrides the profile's active power
    backend: str = "auto"
    weight_buffer: int = 4096            # the classifier's weight buffer on the board
    mpy: bool = False                    # copy the package precompiled with mpy-cross
    progress: bool = True
    log: object = field(default=None, repr=False)   # a callable(str) for messages (default: stderr)


def run_harness(o: HarnessOptions) -> dict:
    """Run the harness; returns the report (also written to o.report). Raises HarnessError
    after writing a partial report when the board fails."""
    return HarnessRun(o).run()


class HarnessRun:
    """The state of one run: options, board profile, host reference, report, the REPL."""

    def __init__(self, o: HarnessOptions):
        from ..boards import get_board
        from ..intmodel import IntModel

        self.o = o
        self.log = o.log or (lambda msg: print(msg, file=sys.stderr))
        self.board = get_board(o.board)
        self.model_path = Path(o.model)
        if not self.model_path.is_file():
            raise HarnessError(f"model file {self.model_path} not found")
        self.ref = IntModel.load(self.model_path)
        self.cfg = self.ref.cfg
        self.model_bytes = self.model_path.read_bytes()
        self.report_path = Path(o.report)
        self.plot_path = Path(o.plot) if o.plot else self.report_path.with_suffix(".png")
        self.root = o.remote_dir.rstrip("/")
        self.device_dir = Path(o.device_dir) if o.device_dir else DEVICE_DIR
        remote_model = o.remote_model or self.model_path.name    # until the board says (copy_files)
        self.remote_model = (remote_model if remote_model.startswith(("module:", "/")) or not self.root
                             else f"{self.root}/{remote_model}")
        self.repl = None
        self.stage = "connecting"
        self.current = None             # the image being classified

    # ------------------------------------------------------------------ the steps

    def run(self) -> dict:
        self.test = self.load_images()
        self.report = self.open_report()
        todo = self.images_to_do()
        if not todo:
            self.report["status"] = "complete"
            return self.finish()
        try:
            self.connect()
            self.copy_files(self.look_at_board())
            self.start_agent()
            self.classify_all(todo)
        except (HarnessError, OSError) as exc:
            self.fail(exc)
        finally:
            self.disconnect()
        return self.finish()

    def load_images(self):
        """The images this run can send (images.py): --images-from, else a data set's test split."""
        o = self.o
        if o.images_from:
            if o.dataset or o.data:
                raise HarnessError("--images-from DIR sends your own images: leave out --dataset/--data")
            test = load_folder_images(o.images_from, self.ref.meta, self.cfg)
        else:
            test = load_dataset_images(self.model_path, self.ref.meta, self.cfg, o.dataset, o.data,
                                       o.cache_dir)
        if not 0 <= o.first < len(test):
            raise HarnessError(f"--first {o.first}: {_where(test.source)} holds {len(test)} image(s) "
                               f"(0..{len(test) - 1})")
        return test

    def open_report(self) -> dict:
        """The report this run writes: the one to resume, or a new one."""
        o, path = self.o, self.report_path
        if o.resume and path.is_file():
            report = R.resumed_report(path, self.model_bytes, self.board, o.first, self.test.source)
        else:
            if o.resume:
                self.log(f"no report {path} to resume: starting afresh")
            report = R.new_report(o, self.board, self.model_path, self.model_bytes, self.cfg,
                                  self.remote_model, self.test.source)
        report.update(port=o.port, status="running", error=None, updated=R.now())
        return report

    def images_to_do(self) -> list:
        """The indices of the images not in the report yet. A resumed report keeps every
        image it holds: the run covers at least those."""
        o, report = self.o, self.report
        done = {r["index"] for r in report["results"]}
        left = len(self.test) - o.first
        if o.images > left and not done:
            self.log(f"{_where(self.test.source)} holds {left} image(s) from image {o.first}: "
                     f"sending {left}, not {o.images}")
        self.count = max([min(o.images, left)] + [i - o.first + 1 for i in done])
        report["images"]["count"] = self.count
        todo = [o.first + j for j in range(self.count) if o.first + j not in done]
        if o.resume and "resumed" in report:
            self.log(f"resuming {self.report_path}: {len(done)} image(s) done, asked for {o.images}: "
                     + (f"{len(todo)} to go" if todo else "nothing to do"))
        return todo

    def connect(self):
        o = self.o
        self.repl = RawRepl.connect(o.port, o.baud, timeout=min(o.timeout, 20))
        self.stage = "reading the board's facts"
        info = self.info = self.repl.info(o.timeout)
        self.report["board_info"] = info
        self.log(f"connected to {info['implementation']} {info['version']} on {o.port} "
                 f"({info['machine']}, heap {info['heap_total'] // 1024} KB)")
        self.repl.exec(P.CLEANUP, o.timeout, doing="clearing what an earlier run left on the board")
        if info["implementation"] == "circuitpython":
            self.repl.exec("try:\n import supervisor\n supervisor.runtime.autoreload = False\n"
                           "except Exception:\n pass\n", o.timeout, doing="turning off auto-reload")

    def look_at_board(self) -> O.Plan:
        """What the board holds already (its code frozen or not, its file system, its models)
        and so what to copy and which model to load (onboard.py)."""
        o = self.o
        self.stage = "looking at what the board holds"
        named = self.remote_model if o.remote_model else None     # --remote-model, in --remote-dir
        s = O.survey(self.repl, self.root, O.candidates(self.root, self.model_path.name, named),
                     o.timeout)
        self.report["on_board"] = s.to_dict()
        plan = O.plan(s, transfer=o.transfer, root=self.root, model_path=self.model_path,
                      model_bytes=self.model_bytes, remote_model=named,
                      host_ver=O.host_version(self.device_dir),
                      circuitpython=self.info["implementation"] == "circuitpython")
        self.remote_model = plan.model
        self.report["model"]["remote_path"] = plan.model
        self.report["on_board"].update(code_copied=plan.copy_code, model_used=plan.model,
                                       model_copied=plan.copy_model)
        for note in (plan.code_note, plan.model_note):
            if note:
                self.log(note)
        if o.mpy and not plan.copy_code:
            self.log("--mpy: nothing to compile, the device code is not copied")
        return plan

    def copy_files(self, plan: O.Plan):
        """The device code (the agent included) and the model onto the board, by hash, as
        far as the plan copies them."""
        o = self.o
        self.stage = "copying the device code and the model"
        want, stale = self.files_wanted(plan)
        if not want:
            return
        actions = self.transfer(want)
        if o.transfer == "repl" and stale:
            gone = F.remove(self.repl, stale, o.timeout)
            if gone:
                self.log(f"removed stale copies on the board: {', '.join(gone)}")
        copied = [a for a in actions if a["action"] == "copied"]
        self.report.setdefault("transfers", []).append({"at": R.now(), "how": o.transfer, "files": actions})
        what = " and ".join(w for w, c in (("device code", plan.copy_code), ("model", plan.copy_model)) if c)
        self.log(f"{what}: {len(copied)} file(s) copied "
                 f"({sum(a['bytes'] for a in copied):,} bytes), {len(actions) - len(copied)} already the same")
        if o.transfer == "ampy":
            self.check_copies(actions)

    def files_wanted(self, plan: O.Plan):
        """([(local path or bytes, board path)] to put on the board, [board paths of stale
        copies]: a .py beside its .mpy, or the other way round, would shadow the new one)."""
        o = self.o
        model = [(self.model_bytes, plan.model)] if plan.copy_model else []
        if not plan.copy_code:
            return model, []
        want = F.device_files(self.device_dir, self.root)
        if o.mpy:
            import tempfile

            self._mpy_dir = tempfile.TemporaryDirectory(prefix="bvit-mpy-")
            compiled = F.compile_mpy(want, self.info.get("mpy"), Path(self._mpy_dir.name))
            stale = [r for (_, r), (_, c) in zip(want, compiled) if r != c]
            want = compiled
        else:
            stale = [r[:-3] + ".mpy" for _, r in want if r.endswith(".py") and "/bvit/" in "/" + r]
        return want + model, stale

    def transfer(self, want) -> list:
        o = self.o
        if o.transfer == "repl":
            bar = _BytesBar() if o.progress else None
            actions = F.sync(self.repl, want, timeout=o.timeout, progress=bar.update if bar else None)
            if bar:
                bar.close()
            return actions
        if o.transfer == "drive":
            if not o.drive:
                raise HarnessError("--transfer drive needs --drive PATH (the mounted board drive)")
            return F.copy_to_drive(want, Path(o.drive))
        if o.transfer == "ampy":
            self.repl.close()
            self.repl = None
            actions = F.ampy_put(o.port, want, o.baud)
            self.repl = RawRepl.connect(o.port, o.baud, timeout=min(o.timeout, 20))
            return actions
        if o.transfer == "none":
            return []
        raise HarnessError(f"unknown transfer {o.transfer!r} (repl, ampy, drive or none)")

    def check_copies(self, actions):
        """What ampy wrote, checked by the board's own hashes."""
        hashes = F.remote_hashes(self.repl, [a["path"] for a in actions], self.o.timeout)
        bad = [a["path"] for a in actions if hashes.get(a["path"]) is None or
               (hashes[a["path"]].startswith("sha256:") and hashes[a["path"]] != a["hash"])]
        if bad:
            raise HarnessError(f"files on the board differ from the host's after copying: {bad}")

    def start_agent(self):
        """Load the model in the board's agent; its BVIT-READY line goes in the report."""
        o = self.o
        self.stage = "loading the model on the board"
        code = P.start_code(self.root, self.remote_model, o.backend, o.weight_buffer)
        out = self.repl.exec(code, max(o.timeout, 120), doing=self.stage)
        setup = P.parse_ready(out)
        if setup is None:
            raise HarnessError(f"the board did not report the model loaded: {out[-300:]!r}")
        setup["heap_peak"] = P.HEAP_PEAK
        self.report["setup"] = setup
        if setup.get("load_retried"):
            self.log("the board ran out of heap loading the model; it loaded after freeing and collecting")
        self.log(f"model loaded on the board: buffers {setup['ram_buffers'] / 1024:.1f} KB, heap in use "
                 f"{setup['heap_after_load'] / 1024:.1f} KB of {setup['heap_total'] / 1024:.0f} KB, "
                 f"backend {setup['backend']}")
        R.save(self.report, self.report_path)

    def classify_all(self, todo):
        o = self.o
        self.stage = "classifying"
        done = len(self.report["results"])
        bar = _image_bar(self.count, done) if o.progress else None
        for idx in todo:
            self.current = idx
            entry = self.classify_image(idx)
            self.report["results"].append(entry)
            R.save(self.report, self.report_path)
            if bar:
                s = self.report["summary"]
                bar.set_postfix_str(f"exact {s['bit_exact']}/{s['done']}, {entry['us'] / 1000:.0f} ms")
                bar.update(1)
        if bar:
            bar.close()
        self.current = None
        self.report["results"].sort(key=lambda r: r["index"])
        self.report["status"] = "complete"

    def classify_image(self, idx) -> dict:
        """Test image idx on the board and on the host: the report's entry for it. A checked
        line that differs from the host is run once more before it counts, so that a one-off
        fault (a glitch, a brown-out) is told from a real one."""
        test = self.test
        buf, w, h, fmt = frame_for(test.pixels[idx])
        host = self.ref.forward_frame(buf, w, h, fmt)
        hl = [int(v) for v in host.logits]
        call = P.classify_call(idx, buf, w, h, fmt)
        classes, timeout = self.cfg.num_classes, self.o.timeout
        r, resends = P.classify_on_board(self.repl, idx, call, classes, timeout)
        entry = {"index": idx, "label": test.labels[idx], "format": fmt, "width": w, "height": h}
        if test.names:
            entry["file"] = test.names[idx]
        if r["logits"] != hl:
            entry["rerun"] = True
            entry["first_try"] = {"logits_board": r["logits"], "us": r["us"]}
            r, more = P.classify_on_board(self.repl, idx, call, classes, timeout)
            resends += more
        entry.update({"logits_board": r["logits"], "logits_host": hl, "match": r["logits"] == hl,
                      "top1_board": int(np.argmax(np.asarray(r["logits"]))),   # first maximum, as intops.topk
                      "top1_host": host.top(1)[0][0], "us": r["us"],
                      "heap_peak": r["heap_peak"], "heap_before": r["heap_before"]})
        if resends:
            entry["line_resends"] = resends
        return entry

    def fail(self, exc):
        """Write the partial report and raise the HarnessError that says what to do."""
        o, report = self.o, self.report
        what = self.stage + (f" (image {self.current})" if self.current is not None else "")
        if isinstance(exc, BoardException) and exc.traceback:
            detail = f"the board raised {exc.traceback.splitlines()[-1]}\n{exc.traceback}"
        else:
            detail = str(exc)
        R.save_failed(report, self.report_path, self.board, self.cfg, o.power_w,
                      {"stage": what, "message": detail, "type": type(exc).__name__,
                       "disconnected": isinstance(exc, BoardDisconnected)})
        head = f"harness failed while {what}: {detail}"
        if "MemoryError" in detail:
            head += "\n" + memory_advice(o, self.board, detail)
        raise HarnessError(f"{head}\npartial report kept: {self.report_path} ({len(report['results'])} of "
                           f"{report['images']['count']} images done); run again with --resume to continue"
                           ) from None

    def disconnect(self):
        """Close the port; after a complete run, give the board its heap back first."""
        if self.repl is None:
            return
        if self.report.get("status") == "complete":
            try:
                self.repl.exec(P.CLEANUP, self.o.timeout, doing="clearing up on the board")
            except HarnessError:
                pass
        self.repl.close()

    def finish(self) -> dict:
        return R.finish(self.report, self.report_path, self.plot_path, self.board, self.cfg, self.o.power_w)


def _where(source: dict) -> str:
    """Where the images came from, in words: 'the fashion-mnist test split', 'photos/'."""
    if source["source"] == "images-from":
        return f"--images-from {source['folder']}"
    return f"the {source['dataset']} test split"


def memory_advice(o: HarnessOptions, board, detail: str) -> str:
    """What to do when the board ran out of heap. Loading the model, the agent has already
    freed and collected once and tried again; what is left then is the heap's own state: a
    board that ran earlier harness runs since its reset keeps their leftovers scattered
    through its heap (strings interned for good, modules), and the model's buffers want long
    free runs. Only a reset clears that."""
    if board.kind == "host":
        reset = "restart its micropython process: the unix port has no reset"
    else:
        reset = f"mpremote connect {o.port} reset, or press its reset button"
    reset = (f"reset the board ({reset}) and run the same command again with --resume: what "
             "earlier runs left since its last reset fragments the heap")
    tips = ([] if o.mpy else ["--mpy (the package precompiled, nothing compiled on the board)"])
    tips += [f"--weight-buffer {o.weight_buffer // 2}"] if o.weight_buffer > 1024 else []
    tips += ["firmware with the package frozen (boards/<name>/manifest.py)"]
    tips = "try " + (", ".join(tips[:-1]) + " or " if len(tips) > 1 else "") + tips[-1]
    again = " (also after freeing and collecting it)" if "after freeing and collecting" in detail else ""
    if o.mpy:       # nothing left to compile on the board: the heap's state is the suspect
        return f"the board ran out of heap{again}: {reset}. If a freshly reset board runs out too, {tips}"
    return f"the board ran out of heap{again}: {tips}. On a board used since its last reset, {reset}"


def _image_bar(total, initial):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc="images", file=sys.stderr,
                dynamic_ncols=True, disable=None)


class _BytesBar:
    """One progress bar over all the bytes copied to the board."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None

    def update(self, name, sent, total):
        if self.bar is None:
            self.bar = self._tqdm(total=total, unit="B", unit_scale=True, desc="copy to board",
                                  file=sys.stderr, dynamic_ncols=True, disable=None)
        self.bar.set_postfix_str(name, refresh=False)
        self.bar.n = sent
        self.bar.refresh()

    def close(self):
        if self.bar:
            self.bar.n = self.bar.total
            self.bar.close()


__all__ = ["HarnessOptions", "HarnessRun", "run_harness", "memory_advice"]
