# Milliseconds and heap figures that work on MicroPython, CircuitPython and the WebAssembly
# port (which has only millisecond ticks).
import gc

try:
    from time import ticks_ms, ticks_diff, ticks_us
except ImportError:  # CircuitPython: supervisor.ticks_ms, or time.monotonic_ns
    try:
        from supervisor import ticks_ms as _tms

        def ticks_ms():
            return _tms()
    except ImportError:
        from time import monotonic_ns as _ns

        def ticks_ms():
            return _ns() // 1000000

    def ticks_us():
        return ticks_ms() * 1000

    def ticks_diff(a, b):
        return a - b


class HeapProbe:
    """Highest gc.mem_alloc() seen at the probes (garbage not yet collected included: an
    upper bound of the live heap at those points), and the heap's total size."""

    def __init__(self):
        self.peak = 0
        self.total = gc.mem_alloc() + gc.mem_free()

    def __call__(self):
        a = gc.mem_alloc()
        if a > self.peak:
            self.peak = a
