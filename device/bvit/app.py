# What classify.py runs (kept in the package, so that a board compiles only the few lines
# of classify.py, or nothing when the package is precompiled or frozen): options, loading,
# one frame file or a camera loop (a camera driver, or a folder of frame files), the
# report, and clear errors.

import gc
import sys


class OptionError(ValueError):
    """A wrong option (argument, classify.json or CONFIG): exit status 2, as for the host's
    butterflyvit; other failures exit with 1."""


# --input values that are camera drivers (bvit.live.CAMERAS); a folder of frame files is one too
_CAMERAS = ("esp32", "openmv")


def _is_folder(path):
    import os
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def _model_source(spec):
    if spec.startswith("module:"):          # a model frozen into the firmware as bytes
        return __import__(spec[7:]).MODEL
    if spec.startswith("/rom/"):            # ROMFS: the file's bytes, in place
        try:
            return memoryview(open(spec, "rb"))
        except TypeError:
            pass
    return spec


def _kb(n):
    return "%.1f KB" % (n / 1024)


def _frame(cfg, net):
    from .frames import frame_file, size_from_name
    path = cfg["input"]
    size = cfg["size"] or size_from_name(path)
    if not size:                            # a frame at the model's size
        s = net.cfg["image_size"]
        size = "%dx%d" % (s, s)
    return frame_file(path, size)


def main(config):
    """Run classify.py's job with its CONFIG (any of bvit.options.DEFAULTS' keys),
    classify.json and arguments;
    returns the exit status: 0; 2 after a wrong option; 1 after any other error. Each error
    is one `error...` line on stdout (all a board's REPL has)."""
    from .timing import HeapProbe, ticks_diff, ticks_ms
    try:
        from . import options
        cfg = options.parse(config)
    except OptionError as e:
        print("error: %s" % e)
        return 2
    finally:                                # unloaded: its code is not needed again
        options = None
        sys.modules.pop("bvit.options", None)
        try:
            delattr(sys.modules["bvit"], "options")
        except (KeyError, AttributeError, TypeError):
            pass
    probe = HeapProbe(collect=True)
    stage = "loading the model"
    net = None
    try:
        from .model import Classifier
        t0 = ticks_ms()
        net = Classifier(_model_source(cfg["model"]), backend=cfg["backend"],
                         weight_buffer=cfg["weight_buffer"], verify=cfg["verify"], probe=probe)
        load_ms = ticks_diff(ticks_ms(), t0)
        c = net.cfg
        print("model %s (%d bytes): %dx%dx%d -> %d classes, %d blocks, %d experts top-%d%s; "
              "kernels: %s; loaded in %d ms"
              % (cfg["model"], net.file_size, c["image_size"], c["image_size"], c["in_channels"],
                 c["num_classes"], c["depth"], c["num_experts"], c["top_k"],
                 ", smoothed routing" if c["smooth_routing"] else "",
                 net.k.NAME + (" (whole layers)" if net.layers else ""), load_ms))
        gc.collect()
        probe()
        loaded = gc.mem_alloc()
        if cfg["input"] in _CAMERAS or _is_folder(cfg["input"]):
            stage = "starting the camera"
            from .live import open_camera, run
            cam = open_camera(cfg, net)
            stage = "classifying camera frames"
            run(cfg, net, cam)
            return 0
        stage = "reading " + cfg["input"]
        t0 = ticks_ms()
        frame = _frame(cfg, net)
        net.frame_to_tokens(frame)
        frame.close()
        t1 = ticks_ms()
        stage = "classifying " + cfg["input"]
        logits = net.forward()
        t2 = ticks_ms()
        probe()
        print("%s: %dx%d %s" % (cfg["input"], frame.width, frame.height, frame.format))
        probs = net.probabilities(logits)
        rank = 1
        for i, v in net.top(logits, cfg["top_k"]):
            print("  %d. %-16s %5.1f%%  (logit %d)" % (rank, net.classes[i], 100 * probs[i], v))
            rank += 1
        if cfg["logits"]:
            print("logits: " + " ".join(str(v) for v in logits))
        print("time: %d ms (frame %d ms, model %d ms); heap: %s in use after loading, peak %s of %s"
              % (ticks_diff(t2, t0), ticks_diff(t1, t0), ticks_diff(t2, t1), _kb(loaded),
                 _kb(probe.peak), _kb(probe.total)))
        return 0
    except MemoryError as e:
        net = None
        gc.collect()
        msg = e.args[0] if e.args and isinstance(e.args[0], str) else ""
        print("error: out of memory while %s%s (heap: %s, %s free)."
              % (stage, ": " + msg if msg else "", _kb(probe.total), _kb(gc.mem_free())))
        if "needs" not in msg:                  # say what the model needs, when it can be told
            try:
                from .model import requirements
                need = requirements(_model_source(cfg["model"]), cfg["weight_buffer"])
            except MemoryError:                 # too little even for that: the advice below
                need = None
            if need:
                print("This model needs %s of RAM for its buffers, besides the code; loading "
                      "it also parses %s of metadata." % (_kb(need[0]), _kb(need[1])))
        try:
            from .errors import memory_advice
            print("Try " + ", or ".join(memory_advice(cfg, globals().get("__file__", ""))) + ".")
        except MemoryError:
            pass
    except OSError as e:
        from .errors import oserror
        print("error while %s: %s" % (stage, oserror(e, cfg, stage)))
    except OptionError as e:
        print("error: %s" % e)
        return 2
    except ValueError as e:
        print("error while %s: %s" % (stage, e))
    finally:
        if net is not None:
            net.close()
    return 1
