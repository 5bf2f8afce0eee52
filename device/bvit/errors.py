# What classify.py says after a failure, imported only then (its code takes no RAM before).

import sys


def memory_advice(cfg, app_file):
    """What could make room, leaving out what is already so: a smaller weight buffer
    (when above 2048), the package precompiled (when its sources are compiled on the
    board) or frozen (when it is precompiled on the file system)."""
    tips = ["a smaller model (fewer tokens, smaller dim / ffn_dim)"]
    if cfg["weight_buffer"] > 2048:
        tips.append('"weight_buffer": 2048')
    here = app_file
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


def oserror(e, cfg, stage):
    try:
        from errno import EISDIR, ENODEV, ENOENT
    except ImportError:
        EISDIR, ENODEV, ENOENT = 21, 19, 2
    if e.args and e.args[0] == EISDIR:
        return "%r is a directory" % (cfg["model"] if stage == "loading the model" else cfg["input"])
    # ENODEV: a board with no file system mounted (code and model frozen into the firmware);
    # the WebAssembly port reports Emscripten's ENOENT (44) while its errno module says 2
    if e.args and (e.args[0] in (ENOENT, ENODEV) or (e.args[0] == 44 and sys.platform == "webassembly")):
        if stage == "loading the model":
            return ("no model file %r on the board (copy one: mpremote cp pico-fmnist.bvit :%s; "
                    "or freeze one into the firmware: scripts/build_firmware.py --model)"
                    % (cfg["model"], cfg["model"]))
        return "no such file %r" % cfg["input"]
    return str(e)
