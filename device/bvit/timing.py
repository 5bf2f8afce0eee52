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
    """The highest heap use seen at the probes, and the heap's size. collect=True: after a
    collection (the live heap at that point: code, model buffers, objects in use);
    collect=False: as it stands (garbage included, an upper bound; no time spent)."""

    def __init__(self, collect=True):
        self.collect = collect
        self.peak = 0
        self.total = gc.mem_alloc() + gc.mem_free()

    def __call__(self):
        if self.collect:
            gc.collect()
        a = gc.mem_alloc()
        if a > self.peak:
            self.peak = a
