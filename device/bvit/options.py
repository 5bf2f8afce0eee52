# classify.py's options: CONFIG (any of DEFAULTS' keys), then classify.json on the board, then
# arguments (unix port), checked. bvit.app imports this module, parses, and unloads it: its
# code does not stay in RAM next to the model.

import sys

from .app import OptionError

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


def _known(keys, where):
    for key in keys:
        if key not in DEFAULTS:
            raise OptionError("%s: unknown key %r (keys: %s)" % (where, key, ", ".join(sorted(DEFAULTS))))


def parse(config):
    """The options as a dict; OptionError (one line, naming the option) when one is wrong."""
    _known(config, "CONFIG")
    cfg = dict(DEFAULTS)
    cfg.update(config)
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
    _known(extra, "classify.json")
    cfg.update(extra)
    argv = sys.argv[1:] if len(sys.argv) > 1 else []
    i = 0
    while i < len(argv):
        key = argv[i].lstrip("-").replace("-", "_")
        if key not in DEFAULTS:
            raise OptionError("unknown option %s (options: %s)" % (argv[i], ", ".join(sorted(DEFAULTS))))
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
    if cfg["model"] == DEFAULTS["model"]:
        cfg["model"] = _default_model(cfg["model"])
    return cfg


def _default_model(name):
    """The default model file if the board has it; else the same name in ROMFS (/rom);
    else a model frozen into the firmware (module bvitmodel: scripts/build_firmware.py
    --model). Boards without a writable file system then need no option."""
    import os
    for path in (name, "/rom/" + name):
        try:
            os.stat(path)
            return path
        except OSError:                     # ENOENT, or ENODEV: no file system at all
            pass
    try:
        __import__("bvitmodel")
        return "module:bvitmodel"
    except ImportError:
        return name                         # loading then says what to copy where
