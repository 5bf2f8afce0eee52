# Which implementation of the hot loops runs: native C module, viper, or pure Python.
#
#     from bvit import ops
#     k = ops.load()            # "auto": native if importable, else viper, else python
#     k = ops.load("python")    # force one (tests, benchmarks); ValueError if unavailable
#     k.name, k.matvec8(...), k.ternary_matvec(...), k.butterfly(...), ...
#
# Every backend gives the integers of bvit.kernels (the pure-MicroPython reference on the
# board, itself equal to host/butterflyvit/intops.py); tests/test_device_kernels.py checks
# it op by op. Nothing here needs viper: on CircuitPython or the WebAssembly port the
# viper module fails to import and the pure kernels are used.

# The hot loops a backend provides (signatures and buffer types: bvit.kernels, bvit.kviper).
NAMES = ("matvec8", "ternary_stream", "ternary_matvec", "butterfly", "butterfly_ph", "sincos_raw",
         "attn_scores", "attn_pv")
ORDER = ("native", "viper", "python")


class Backend:
    def __init__(self, name, mod):
        self.name = name
        for n in NAMES:
            setattr(self, n, getattr(mod, n))


def _native():
    import bvitnative  # noqa: F401  (the C module, docs/native.md)
    from . import knative
    return knative


def _viper():
    from . import kviper
    return kviper


_cache = {}


def load(which="auto"):
    """A Backend: "auto" (first that imports of native, viper, python) or one by name."""
    if which in _cache:
        return _cache[which]
    if which == "auto":
        for name in ORDER:
            try:
                b = load(name)
            except (ImportError, SyntaxError, ValueError, AttributeError):
                continue
            _cache["auto"] = b
            return b
    if which == "python":
        from . import kernels
        b = Backend("python", kernels)
    elif which == "viper":
        try:
            b = Backend("viper", _viper())
        except (ImportError, SyntaxError, AttributeError) as e:
            raise ValueError("viper kernels unavailable on this port (%s)" % e)
    elif which == "native":
        try:
            b = Backend("native", _native())
        except (ImportError, SyntaxError, AttributeError) as e:
            raise ValueError("native module bvitnative unavailable (%s)" % e)
    else:
        raise ValueError("unknown kernel backend %r (choose auto, native, viper or python)" % (which,))
    _cache[which] = b
    return b


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
