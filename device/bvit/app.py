# What classify.py runs (kept in the package, so that a board compiles only the few lines
# of classify.py, or nothing when the package is precompiled or frozen): options, loading,
# one frame file or a camera loop, the report, and clear errors.

import gc
import sys

def _options(defaults):
    cfg = dict(defaults)
    try:
        import json
        with open("classify.json") as f:
            cfg.update(json.load(f))
    except OSError:
        pass
    argv = sys.argv[1:] if len(sys.argv) > 1 else []
    i = 0
    while i < len(argv):
        key = argv[i].lstrip("-").replace("-", "_")
        if key not in defaults:
            raise ValueError("unknown option %s (options: %s)" % (argv[i], ", ".join(sorted(defaults))))
        if key in ("logits", "verify") and (i + 1 >= len(argv) or argv[i + 1].startswith("--")):
            cfg[key] = True
            i += 1
            continue
        v = argv[i + 1]
        cfg[key] = int(v) if key in ("top_k", "weight_buffer", "frames") else (
            v not in ("0", "false", "no") if key in ("logits", "verify") else v)
        i += 2
    return cfg


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


def main(defaults):
    """Run classify.py's job with its CONFIG (defaults), classify.json and arguments;
    returns the exit status (0, or 1 after printing the error)."""
    from .timing import HeapProbe, ticks_diff, ticks_ms
    try:
        cfg = _options(defaults)
    except ValueError as e:
        print("error: %s" % e)
        return 1
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
                 ", smoothed routing" if c["smooth_routing"] else "", net.k.NAME, load_ms))
        gc.collect()
        probe()
        loaded = gc.mem_alloc()
        if cfg["input"] in ("esp32", "openmv"):
            stage = "starting the camera"
            from . import camera
            cam = camera.Esp32Camera() if cfg["input"] == "esp32" else camera.OpenMVSensor()
            stage = "classifying camera frames"
            camera.live(net, cam, cfg["top_k"], cfg["frames"])
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
            from .model import requirements
            need = requirements(_model_source(cfg["model"]), cfg["weight_buffer"])
            if need:
                print("This model needs %s of RAM for its buffers, besides the code; loading "
                      "it also parses %s of metadata." % (_kb(need[0]), _kb(need[1])))
        print("Try a smaller model (fewer tokens, smaller dim / ffn_dim), \"weight_buffer\": 2048, "
              "or the bvit package precompiled (mpy-cross) or frozen into the firmware.")
    except OSError as e:
        print("error while %s: %s" % (stage, _oserror(e, cfg, stage)))
    except ValueError as e:
        print("error while %s: %s" % (stage, e))
    finally:
        if net is not None:
            net.close()
    return 1


def _oserror(e, cfg, stage):
    try:
        from errno import ENOENT
    except ImportError:
        ENOENT = 2
    # the WebAssembly port reports Emscripten's ENOENT (44) while its errno module says 2
    if e.args and (e.args[0] == ENOENT or (e.args[0] == 44 and sys.platform == "webassembly")):
        if stage == "loading the model":
            return ("no model file %r on the board (copy one: mpremote cp pico-fmnist.bvit :%s)"
                    % (cfg["model"], cfg["model"]))
        return "no such file %r" % cfg["input"]
    return str(e)
