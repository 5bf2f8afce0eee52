# Which implementation of the hot loops runs: native C module, viper, or pure Python.
#
#     from bvit import ops
#     k = ops.load()            # "auto": native if importable, else viper, else python
#     k = ops.load("python")    # one by name (tests, benchmarks); ValueError if unavailable
#     k.NAME, k.matvec8(...), k.ternary_rows(...), k.butterfly_ph(...), k.attn_scores(...)
#
# A backend is a module with NAME and the functions in NAMES, with the signatures and
# results of bvit.kernels (the pure-MicroPython backend, equal to host/butterflyvit/intops.py);
# tests/test_device_kernels.py checks every backend op by op on the golden vectors.
# get(backend, name): the backend's function if its EXTRAS list it, else bvit.nn's.
# Nothing here needs viper: on CircuitPython or the WebAssembly port bvit.kviper does not
# compile and the pure kernels are used.

NAMES = ("matvec8", "ternary_rows", "butterfly_ph", "attn_scores", "attn_pv")
# Per-element steps a backend may also provide, listed in its EXTRAS (else bvit.nn's are
# used): bvit.nn's signatures.
OPTIONAL = ("requant_rows", "relu", "expert_input", "mix_add", "mix_round")
# bvit.frames' steps: the native backend takes their viper twins (bvit.kframes) where viper
# compiles (the frame's per-pixel loops are not in C); the others take bvit.frames'.
FRAME_STEPS = ("frame_row_pixels", "quantize_patches")
ORDER = ("native", "viper", "python")


def _import(which):
    if which == "python":
        from . import kernels as m
    elif which == "viper":
        from . import kviper as m
    elif which == "native":
        import bvitnative as m              # the C module (native/, docs/native.md)
    else:
        raise ValueError("unknown kernel backend %r (choose auto, native, viper or python)" % (which,))
    return m


def load(which="auto"):
    """The backend module: "auto" (the first of native, viper, python that loads) or one by name."""
    if which == "auto":
        for name in ORDER:
            try:
                return load(name)
            except ValueError:
                pass
    try:
        m = _import(which)
        for n in NAMES:
            getattr(m, n)
    except (ImportError, SyntaxError, AttributeError) as e:
        raise ValueError("%s kernels unavailable on this port (%s)" % (which, e))
    return m


def available():
    """Names of the backends that load on this port, in preference order."""
    out = []
    for name in ORDER:
        try:
            load(name)
            out.append(name)
        except ValueError:
            pass
    return out


def get(backend, name):
    if name in getattr(backend, "EXTRAS", ()):
        return getattr(backend, name)
    if name in FRAME_STEPS:
        if getattr(backend, "NAME", "") == "native":
            try:
                from . import kframes
                return getattr(kframes, name)
            except (ImportError, SyntaxError):
                pass
        from . import frames
        return getattr(frames, name)
    from . import nn
    return getattr(nn, name)
