# What classify.py runs (kept in the package, so that a board compiles only the few lines
# of classify.py, or nothing when the package is precompiled or frozen): options, loading,
# one frame file or a camera loop (a camera driver, or a folder of frame files), the
# report, and clear errors.

import gc
import sys


class OptionError(ValueError):
    """A wrong option (argument, classify.json or CONFIG): exit status 2, as for the host's
    butterflyvit; other failures exit with 1."""


# Every option with its default (classify.py's CONFIG overrides any of them).
DEFAULTS = {
    "model": "model.bvit", "input": "image.gray", "size": None, "top_k": 3, "backend": "auto",
    "weight_buffer": 4096, "verify": True, "frames": 1, "logits": False,
    "pixel_format": None, "frame_size": None, "camera_args": None, "save": None,
}
# Integer options: the least value each takes.
_INT_MIN = {"top_k": 1, "weight_buffer": 0, "frames": 0}
_FLAGS = ("logits", "verify")
# Options with a few accepted values (None: decided from the model and the camera).
_CHOICES = {"pixel_format": (None, "GRAYSCALE", "RGB565"),
            "backend": ("auto", "native", "viper", "python")}
# --input values that are cameras: (the driver module the board needs, what it is)
_CAMERAS = {"esp32": ("camera", "the ESP32 camera driver"), "openmv": ("sensor", "OpenMV's camera driver")}


def _options(config):
    defaults = dict(DEFAULTS)
    for key in config:
        if key not in defaults:
            raise OptionError("CONFIG: unknown key %r (keys: %s)" % (key, ", ".join(sorted(defaults))))
    defaults.update(config)
    cfg = dict(defaults)
    try:
        import json
        with open("classify.json") as f:
            try:
                extra = json.load(f)
            except ValueError:
                raise OptionError("classify.json: not valid JSON")
    except OSError:
        extra = {}
    if not isinstance(extra, dict):
        raise OptionError("classify.json: expected an object of options, like {\"top_k\": 5}")
    for key in extra:
        if key not in defaults:
            raise OptionError("classify.json: unknown key %r (keys: %s)" % (key, ", ".join(sorted(defaults))))
    cfg.update(extra)
    argv = sys.argv[1:] if len(sys.argv) > 1 else []
    i = 0
    while i < len(argv):
        key = argv[i].lstrip("-").replace("-", "_")
        if key not in defaults:
            raise OptionError("unknown option %s (options: %s)" % (argv[i], ", ".join(sorted(defaults))))
        if key == "camera_args":
            raise OptionError("option %s: give it in classify.json (a dictionary)" % argv[i])
        if key in _FLAGS and (i + 1 >= len(argv) or argv[i + 1].startswith("--")):
            cfg[key] = True
            i += 1
            continue
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            raise OptionError("option %s needs a value" % argv[i])
        v = argv[i + 1]
        if key in _INT_MIN:
            try:
                v = int(v)
            except ValueError:
                raise OptionError("option %s: %r is not an integer" % (argv[i], v))
        elif key in _FLAGS:
            v = v not in ("0", "false", "no")
        cfg[key] = v
        i += 2
    for key in _INT_MIN:                    # the same checks for classify.json and CONFIG
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < _INT_MIN[key]:
            raise OptionError("option %s (--%s) must be an integer of at least %d, got %r"
                              % (key, key.replace("_", "-"), _INT_MIN[key], v))
    if isinstance(cfg["pixel_format"], str):
        cfg["pixel_format"] = cfg["pixel_format"].upper()
    for key, allowed in _CHOICES.items():
        if cfg[key] not in allowed:
            raise OptionError("option %s (--%s) must be one of %s, got %r"
                              % (key, key.replace("_", "-"), ", ".join(str(a) for a in allowed if a), cfg[key]))
    if cfg["camera_args"] is not None and not isinstance(cfg["camera_args"], dict):
        raise OptionError("option camera_args must be a dictionary of the camera driver's "
                          "keyword arguments, got %r" % (cfg["camera_args"],))
    return cfg


def _is_folder(path):
    import os
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def _camera(cfg, net):
    """The camera for --input esp32 / openmv / a folder of frame files, set up for the
    model: its pixel format (RGB565 for a colour model) unless pixel_format says, the
    smallest frame size that covers its input unless frame_size says. A board without
    the driver module gets an OptionError saying so, and what to give instead."""
    from . import camera
    name = cfg["input"]
    if name not in _CAMERAS:
        return camera.folder_camera(name)
    module, what = _CAMERAS[name]
    try:
        __import__(module)
    except ImportError:
        raise OptionError("--input %s: this board has no '%s' module (%s); use --input "
                          "NAME.gray or NAME.rgb565, a raw frame file, or a folder of them"
                          % (name, module, what))
    c = net.cfg
    fmt = cfg["pixel_format"] or camera.model_pixel_format(c["in_channels"])
    sizes = camera.ESP32_SIZES if name == "esp32" else camera.OPENMV_SIZES
    size = cfg["frame_size"] or camera.covering_size(sizes, c["image_size"])
    try:
        if name == "esp32":
            return camera.Esp32Camera(pixel_format=fmt, frame_size=size, **(cfg["camera_args"] or {}))
        return camera.OpenMVSensor(pixel_format=fmt, frame_size=size)
    except (ValueError, TypeError) as e:
        raise OptionError("--input %s: %s" % (name, e))


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
    """Run classify.py's job with its CONFIG (any of DEFAULTS' keys), classify.json and arguments;
    returns the exit status: 0; 2 after a wrong option; 1 after any other error. Each error
    is one `error...` line on stdout (all a board's REPL has)."""
    from .timing import HeapProbe, ticks_diff, ticks_ms
    try:
        cfg = _options(config)
    except OptionError as e:
        print("error: %s" % e)
        return 2
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
        if cfg["input"] in _CAMERAS or _is_folder(cfg["input"]):
            stage = "starting the camera"
            cam = _camera(cfg, net)
            from . import camera
            print("camera: %s; the model takes %dx%d %s; %s" % (
                cam.describe(), c["image_size"], c["image_size"],
                camera.model_pixel_format(c["in_channels"]),
                "Ctrl-C stops" if cfg["frames"] == 0 else "%d frames" % cfg["frames"]))
            if c["in_channels"] == 3 and cfg["pixel_format"] == "GRAYSCALE":
                print("note: pixel_format GRAYSCALE: this colour model will see grey frames")
            stage = "classifying camera frames"
            try:
                camera.live(net, cam, cfg["top_k"], cfg["frames"], save=cfg["save"],
                            print_logits=cfg["logits"])
            finally:
                cam.close()
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
        print("Try " + ", or ".join(_memory_advice(cfg)) + ".")
    except OSError as e:
        print("error while %s: %s" % (stage, _oserror(e, cfg, stage)))
    except OptionError as e:
        print("error: %s" % e)
        return 2
    except ValueError as e:
        print("error while %s: %s" % (stage, e))
    finally:
        if net is not None:
            net.close()
    return 1


def _memory_advice(cfg):
    """What could make room, leaving out what is already so: a smaller weight buffer
    (when above 2048), the package precompiled (when its sources are compiled on the
    board) or frozen (when it is precompiled on the file system)."""
    tips = ["a smaller model (fewer tokens, smaller dim / ffn_dim)"]
    if cfg["weight_buffer"] > 2048:
        tips.append('"weight_buffer": 2048')
    here = globals().get("__file__", "")
    if here.endswith(".mpy"):
        tips.append("the bvit package frozen into the firmware (its code then stays in flash)")
    else:
        import os
        try:
            os.stat(here)               # a source file: compiled on the board at import
            tips.append("the bvit package precompiled (butterflyvit mpy) or frozen into the firmware")
        except OSError:
            pass                        # frozen already
    return tips


def _oserror(e, cfg, stage):
    try:
        from errno import EISDIR, ENOENT
    except ImportError:
        EISDIR, ENOENT = 21, 2
    if e.args and e.args[0] == EISDIR:
        return "%r is a directory" % (cfg["model"] if stage == "loading the model" else cfg["input"])
    # the WebAssembly port reports Emscripten's ENOENT (44) while its errno module says 2
    if e.args and (e.args[0] == ENOENT or (e.args[0] == 44 and sys.platform == "webassembly")):
        if stage == "loading the model":
            return ("no model file %r on the board (copy one: mpremote cp pico-fmnist.bvit :%s)"
                    % (cfg["model"], cfg["model"]))
        return "no such file %r" % cfg["input"]
    return str(e)
