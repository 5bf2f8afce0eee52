# The board agent: load a Classifier, classify frames, print one checked line per frame.
#
# The harness drives it over the raw REPL (docs/harness.md, "What goes over the wire"):
#
#     from bvit.agent import Agent
#     _bva = Agent("model.bvit", "auto", 4096)   # prints BVIT-READY (...)
#     _bva.ready()
#     _bva.frame(0, b"<base64 frame>", 28, 28, "GRAYSCALE")   # prints BVIT 0 ... crc
#     _bva.again()                              # the same line once more (it came damaged)
#
# and the demo, the benchmarks and the tests run it as a script over a job file:
#
#     micropython -m bvit.agent jobs.json       # or: micropython device/bvit/agent.py jobs.json
#
# The lines it prints (the host reads them with butterflyvit.harness.protocol):
#
#     BVIT-RETRY                                 the first load ran out of heap; trying again
#     BVIT-READY (buffers, heap total, heap in use, heap free, kernels, timer)
#     BVIT index microseconds heap_peak heap_before logit0 ... logitN crc
#
# crc: the CRC-32 (zlib's) of the text between "BVIT " and the last space, 8 lowercase hex
# digits, so that a line damaged on a serial wire is told from a board that computed wrong.
# Absolute imports: the file also runs as a script, with the package's folder on sys.path.

import gc

from bvit.model import Classifier
from bvit.timing import HeapProbe, ticks_diff, ticks_us


def model_source(spec):
    """What Classifier takes for a model spec: a path or bytes as they are; "module:NAME" is
    a model frozen into the firmware (the bytes object NAME.MODEL, read in place)."""
    if isinstance(spec, str) and spec.startswith("module:"):
        return __import__(spec[7:]).MODEL
    return spec


def load(spec, backend="auto", weight_buffer=4096, probe=None):
    """The Classifier. A heap too full for it is freed and collected (what the failed
    attempt, or an earlier run, left may be garbage now) and the load tried once more,
    after printing BVIT-RETRY."""
    for retry in (False, True):
        gc.collect()
        try:
            return Classifier(model_source(spec), backend=backend, weight_buffer=weight_buffer,
                              probe=probe)
        except MemoryError as e:
            if retry:
                raise MemoryError("%s; again after freeing and collecting the heap" % e)
        print("BVIT-RETRY")


def result_line(payload, crc32):
    """'BVIT payload crc': the payload and its CRC-32 (crc32: binascii's or crc32_py)."""
    return "BVIT %s %08x" % (payload, crc32(payload.encode()) & 0xFFFFFFFF)


def _crc32():
    try:
        from binascii import crc32
    except ImportError:                 # a port without it: the package's pure-Python CRC-32
        from bvit.modelfile import crc32_py as crc32
    return crc32


class _TimedProbe(HeapProbe):
    """A HeapProbe that adds up the time its collections take (`spent`, microseconds), so
    that the time reported for a forward is the forward's own."""

    def __init__(self, collect):
        HeapProbe.__init__(self, collect)
        self.spent = 0

    def __call__(self):
        t = ticks_us()
        HeapProbe.__call__(self)
        if self.collect:
            self.spent += ticks_diff(ticks_us(), t)


class Agent:
    """One loaded model and the result line of its last frame. collect=True (the harness):
    the heap peak is the live heap, collected at the forward's probes, whose collections are
    not counted in its time; else the heap as it stands (garbage included: an upper bound
    that costs no time)."""

    def __init__(self, spec, backend="auto", weight_buffer=4096, collect=False):
        self.probe = _TimedProbe(collect)
        self.net = load(spec, backend, weight_buffer, self.probe)
        gc.collect()
        # after the classifier: its buffers want the heap in one piece
        self.crc = _crc32()
        self.line = ""

    def ready(self):
        """Print BVIT-READY: the buffers, the heap after loading, the kernels, the timer."""
        import time
        timer = "us" if hasattr(time, "ticks_us") else "ms"
        gc.collect()
        print("BVIT-READY", repr((self.net.ram, self.probe.total, gc.mem_alloc(), gc.mem_free(),
                                  self.net.k.NAME, timer)))

    def classify(self, index, frame):
        """Classify one frame (a bvit.frames frame) and print its result line."""
        gc.collect()
        before = gc.mem_alloc()
        self.probe.peak = before
        self.probe.spent = 0
        t = ticks_us()
        logits = self.net.classify_frame(frame)
        t = ticks_diff(ticks_us(), t) - self.probe.spent
        p = "%d %d %d %d %s" % (index, t, self.probe.peak, before, " ".join([str(v) for v in logits]))
        self.line = result_line(p, self.crc)
        print(self.line)

    def frame(self, index, b64, width, height, fmt):
        """Classify a frame sent as base64 text (the harness's call)."""
        from binascii import a2b_base64
        from bvit.frames import Frame
        fr = Frame(a2b_base64(b64), width, height, fmt)
        b64 = None
        self.classify(index, fr)

    def again(self):
        """Print the last result line again (no second forward)."""
        print(self.line)

    def close(self):
        self.net.close()


def run_jobs(path):
    """Run the jobs of a JSON file: a list of {"model": path, "frames": [path or [path,
    "WxH"], ...]} with optional "in_ram" (the model read into RAM and used in place),
    "backend", "weight_buffer" and "collect". Each job prints BVIT-READY, then one result
    line per frame, numbered from 0."""
    import json
    with open(path) as f:
        jobs = json.load(f)
    for job in jobs:
        spec = job["model"]
        if job.get("in_ram"):
            with open(spec, "rb") as f:
                spec = f.read()
        a = Agent(spec, job.get("backend", "auto"), job.get("weight_buffer", 4096),
                  job.get("collect", False))
        spec = None
        a.ready()
        from bvit.frames import frame_file
        for i, fr in enumerate(job["frames"]):
            fr = frame_file(fr) if isinstance(fr, str) else frame_file(fr[0], fr[1])
            a.classify(i, fr)
            fr.close()
        a.close()
        a = None
        gc.collect()


def main():
    import sys
    if len(sys.argv) != 2:
        print("usage: micropython -m bvit.agent JOBS.json")
        sys.exit(2)
    run_jobs(sys.argv[1])


if __name__ == "__main__":
    main()
