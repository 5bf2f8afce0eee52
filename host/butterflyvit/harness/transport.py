"""The serial protocol layer: a MicroPython / CircuitPython raw REPL over pyserial.

    with RawRepl.connect("/dev/ttyACM0") as repl:     # Ctrl-C, raw REPL (Ctrl-A)
        out = repl.exec("print(1 + 1)", timeout=10)    # "2\\n"; BoardException on a traceback
        info = repl.info()                              # implementation, version, heap, ...

The raw REPL is MicroPython's machine interface (the one mpremote and ampy use): Ctrl-A
enters it, code is sent followed by Ctrl-D, the board answers "OK", then the code's stdout,
Ctrl-D, its exception text, Ctrl-D and the prompt ">". Where the board supports it, code is
sent in raw-paste mode (flow-controlled windows, Ctrl-E "A" Ctrl-A); older firmware (the
micro:bit's MicroPython 1.9) gets it in small chunks with pauses. The harness never soft
resets the board (Ctrl-D at an empty prompt), so the unix port's process survives, as with
`mpremote ... resume`.

Every failure is a HarnessError that says what was being done: the port cannot be opened,
the board disconnected (the pty closed, the USB device vanished), it did not answer in time
(with the last bytes it sent), or the code raised on the board (with the traceback).
"""

from __future__ import annotations

import struct
import time

__all__ = ["HarnessError", "BoardDisconnected", "BoardTimeout", "BoardException",
           "SerialTransport", "RawRepl"]


class HarnessError(RuntimeError):
    """A harness step failed; str() says which step and why."""


class BoardDisconnected(HarnessError):
    """The serial port went away (board unplugged, reset, or its process ended)."""


class BoardTimeout(HarnessError):
    """The board did not answer within the time allowed."""


class BoardException(HarnessError):
    """Code sent to the board raised; .traceback is the board's text."""

    def __init__(self, message, traceback=""):
        super().__init__(message)
        self.traceback = traceback


def _tail(data: bytes, n: int = 200) -> str:
    return repr(data[-n:]) if data else "nothing"


try:  # pyserial's flush() calls termios.tcdrain unwrapped: a vanished pty raises termios.error
    import termios
    _PORT_GONE = (OSError, termios.error)
except ImportError:  # pragma: no cover - Windows
    _PORT_GONE = (OSError,)


class SerialTransport:
    """A serial port (pyserial) with deadline-based reads and disconnect detection."""

    def __init__(self, port: str, baud: int = 115200, *, what: str = "board"):
        import serial

        self.port_name = port
        self.what = what
        self._serial_mod = serial
        try:
            self.port = serial.Serial(port, baud, timeout=0.05, write_timeout=10)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise HarnessError(f"cannot open serial port {port}: {exc}") from None
        self.buffer = b""        # bytes read but not consumed yet

    # ------------------------------------------------------------------ low level

    def _lost(self, doing: str, exc) -> BoardDisconnected:
        return BoardDisconnected(f"{self.what} on {self.port_name} disconnected while {doing}: {exc}")

    def write(self, data: bytes, doing: str = "sending data"):
        try:
            self.port.write(data)
            self.port.flush()
        except self._serial_mod.SerialTimeoutException as exc:  # pragma: no cover - a subclass, so first
            raise BoardTimeout(f"{self.what} on {self.port_name} stopped accepting data while {doing}") from exc
        except _PORT_GONE + (self._serial_mod.SerialException,) as exc:
            raise self._lost(doing, exc) from None

    def read_some(self, doing: str) -> bytes:
        """Whatever arrives within the port's short timeout (may be b"")."""
        try:
            n = self.port.in_waiting
            return self.port.read(n or 1)
        except _PORT_GONE + (self._serial_mod.SerialException, TypeError) as exc:
            raise self._lost(doing, exc) from None

    def read_until(self, marker: bytes, timeout: float, doing: str) -> bytes:
        """Bytes up to and including `marker`; what follows stays buffered."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.buffer.find(marker)
            if i >= 0:
                out, self.buffer = self.buffer[:i + len(marker)], self.buffer[i + len(marker):]
                return out
            if time.monotonic() > deadline:
                raise BoardTimeout(f"{self.what} on {self.port_name} did not answer within "
                                   f"{timeout:g} s while {doing} (last output: {_tail(self.buffer)})")
            self.buffer += self.read_some(doing)

    def read_exactly(self, n: int, timeout: float, doing: str) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < n:
            if time.monotonic() > deadline:
                raise BoardTimeout(f"{self.what} on {self.port_name} did not answer within "
                                   f"{timeout:g} s while {doing} (last output: {_tail(self.buffer)})")
            self.buffer += self.read_some(doing)
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def drain(self, quiet: float = 0.1, limit: float = 2.0) -> bytes:
        """Read until the line has been quiet for `quiet` seconds (at most `limit`)."""
        got = self.buffer
        self.buffer = b""
        end = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            b = self.read_some("waiting for the board to be quiet")
            if b:
                got += b
                last = time.monotonic()
        return got

    def close(self):
        try:
            self.port.close()
        except Exception:  # noqa: BLE001 - closing a dead port
            pass


class RawRepl:
    """The raw REPL of a MicroPython or CircuitPython board on a SerialTransport."""

    PROMPT = b"raw REPL; CTRL-B to exit\r\n>"

    # Without raw-paste mode nothing paces the host: code goes in chunks of `chunk` bytes,
    # `chunk_delay` s apart, half the 64-byte UART buffer of the smallest boards (micro:bit).
    def __init__(self, transport: SerialTransport, *, chunk: int = 32, chunk_delay: float = 0.01,
                 use_raw_paste: bool = True):
        self.t = transport
        self.chunk = chunk
        self.chunk_delay = chunk_delay
        self.use_raw_paste = use_raw_paste
        self.in_raw = False
        self.flavour = None       # "micropython" / "circuitpython" (after info())

    @classmethod
    def connect(cls, port: str, baud: int = 115200, timeout: float = 10, **kw) -> "RawRepl":
        repl = cls(SerialTransport(port, baud), **kw)
        try:
            repl.enter(timeout)
        except BaseException:
            repl.t.close()
            raise
        return repl

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ modes

    def interrupt(self, timeout: float = 5) -> bytes:
        """Ctrl-C twice: stop what runs; answer CircuitPython's 'Press any key'."""
        t = self.t
        t.write(b"\r\x03", "interrupting the running program (Ctrl-C)")
        time.sleep(0.05)
        t.write(b"\x03", "interrupting the running program (Ctrl-C)")
        seen = t.drain(0.15, timeout)
        if b"Press any key to enter the REPL" in seen:      # CircuitPython after code.py
            t.write(b"\r", "entering CircuitPython's REPL")
            seen += t.drain(0.15, timeout)
        return seen

    def enter(self, timeout: float = 10):
        """Enter the raw REPL (no soft reset)."""
        t = self.t
        self.interrupt(min(timeout, 3))
        deadline = time.monotonic() + timeout
        while True:
            t.write(b"\r\x01", "entering the raw REPL (Ctrl-A)")
            try:
                t.read_until(self.PROMPT, min(2.0, max(0.1, deadline - time.monotonic())),
                             "entering the raw REPL (Ctrl-A)")
                break
            except BoardTimeout:
                if time.monotonic() > deadline:
                    raise BoardTimeout(f"no raw REPL on {t.port_name} within {timeout:g} s: is a "
                                       "MicroPython or CircuitPython board there, and no other "
                                       "program holding the port?") from None
                self.interrupt(1)
        t.drain(0.05, 0.5)
        self.in_raw = True

    def exit(self):
        """Back to the friendly REPL (Ctrl-B)."""
        if self.in_raw:
            try:
                self.t.write(b"\r\x02", "leaving the raw REPL")
            except HarnessError:
                pass
            self.in_raw = False

    def close(self):
        self.exit()
        self.t.close()

    # ------------------------------------------------------------------ running code

    def _send_raw_paste(self, data: bytes, timeout: float) -> bool:
        """Send code in raw-paste mode; False when the board does not support it."""
        t = self.t
        t.write(b"\x05A\x01", "starting raw-paste mode")
        head = t.read_exactly(2, timeout, "starting raw-paste mode")
        if head == b"R\x00":
            self.use_raw_paste = False
            return False
        if head != b"R\x01":
            # old firmware: it took the bytes as code, and Ctrl-A re-entered the raw REPL
            t.buffer = head + t.buffer
            t.read_until(self.PROMPT, timeout, "falling back from raw-paste mode")
            self.use_raw_paste = False
            return False
        window = struct.unpack("<H", t.read_exactly(2, timeout, "reading the raw-paste window"))[0]
        remain = window
        i = 0
        doing = "sending code (raw-paste)"
        while i < len(data):
            while remain == 0 or t.buffer or t.port.in_waiting:
                b = t.read_exactly(1, timeout, doing)
                if b == b"\x01":
                    remain += window
                elif b == b"\x04":
                    t.write(b"\x04", doing)
                    return True
                else:
                    raise HarnessError(f"unexpected byte {b!r} from the board during raw paste")
            piece = data[i:i + remain]
            t.write(piece, doing)
            remain -= len(piece)
            i += len(piece)
        t.write(b"\x04", doing)
        t.read_until(b"\x04", timeout, "finishing raw-paste mode")
        return True

    DAMAGED = "bvit: code damaged in transit"

    @classmethod
    def _checked(cls, data: bytes) -> bytes:
        """Code wrapped so that the board checks it arrived whole (length and sum of its
        characters) before running it: without raw-paste mode a busy board may drop bytes."""
        text = data.decode()
        total = sum(ord(c) for c in text) & 0xFFFF
        return (f"_c={text!r}\n_s=0\nfor _x in _c:\n _s+=ord(_x)\n"
                f"if len(_c)!={len(text)} or _s&65535!={total}:\n raise OSError({cls.DAMAGED!r})\n"
                "del _s,_x\nexec(_c)\n").encode()

    def send(self, code: str | bytes, timeout: float = 10):
        """Send code and start it; its output is read by follow()."""
        if not self.in_raw:
            self.enter(timeout)
        data = code.encode() if isinstance(code, str) else code
        if self.use_raw_paste and self._send_raw_paste(data, timeout):
            return
        t = self.t
        data = self._checked(data)
        for i in range(0, len(data), self.chunk):
            t.write(data[i:i + self.chunk], "sending code")
            if self.chunk_delay:
                time.sleep(self.chunk_delay)
        t.write(b"\x04", "sending code")
        ok = t.read_exactly(2, timeout, "waiting for the board to accept the code")
        if ok != b"OK":
            raise HarnessError(f"the board did not accept the code (answered {ok + t.buffer[:100]!r})")

    def follow(self, timeout: float, on_output=None, doing: str = "running code") -> tuple:
        """Read (stdout, stderr) of the code started by send(). `on_output(bytes)` sees
        stdout as it arrives. `timeout` is the most the board may stay silent; the whole run
        may take longer while it prints."""
        t = self.t
        outs = []
        for part in range(2):
            buf = b""
            last = time.monotonic()
            while True:
                i = (t.buffer).find(b"\x04")
                if i >= 0:
                    piece, t.buffer = t.buffer[:i], t.buffer[i + 1:]
                    buf += piece
                    if part == 0 and on_output and piece:
                        on_output(piece)
                    break
                if t.buffer:
                    piece, t.buffer = t.buffer, b""
                    buf += piece
                    if part == 0 and on_output:
                        on_output(piece)
                    last = time.monotonic()
                if time.monotonic() - last > timeout:
                    raise BoardTimeout(f"the board on {t.port_name} was silent for {timeout:g} s while "
                                       f"{doing} (last output: {_tail(buf)})")
                t.buffer += t.read_some(doing)
            outs.append(buf)
        t.read_until(b">", timeout, doing)
        return outs[0], outs[1]

    def exec_raw(self, code, timeout: float = 10, on_output=None, doing: str = "running code"):
        try:
            self.send(code, timeout)
            return self.follow(timeout, on_output, doing)
        except BoardTimeout:
            self.in_raw = False       # the next call interrupts and re-enters the raw REPL
            raise

    def exec(self, code, timeout: float = 10, on_output=None, doing: str = "running code") -> str:
        """Run code; its stdout as text. BoardException with the traceback if it raised.

        Without raw-paste mode nothing paces the host: a busy board can drop bytes from its
        UART buffer. The code then goes inside a check (_checked): damaged code does not
        run, and is sent again in smaller chunks (twice at most)."""
        for attempt in range(3):
            out, err = self.exec_raw(code, timeout, on_output, doing)
            if err and not self.use_raw_paste and attempt < 2 and self.chunk > 8 \
                    and (self.DAMAGED.encode() in err or b"SyntaxError" in err.splitlines()[-1:][0]
                         and b'"<stdin>"' in err):
                self.chunk //= 2
                self.chunk_delay *= 2
                continue
            break
        if err:
            text = err.decode(errors="replace").replace("\r\n", "\n").strip()
            last = text.splitlines()[-1] if text else "an exception"
            raise BoardException(f"the board raised while {doing}: {last}", text)
        return out.decode(errors="replace").replace("\r\n", "\n")

    # ------------------------------------------------------------------ facts

    INFO = (
        "import sys, gc\n"
        "try:\n import os; _u = os.uname(); _m = _u.machine; _r = _u.release\n"
        "except Exception:\n _m = sys.platform; _r = ''\n"
        "try:\n import machine; _f = machine.freq()\n"
        "except Exception:\n"
        " try:\n  import microcontroller; _f = microcontroller.cpu.frequency\n"
        " except Exception:\n  _f = None\n"
        "if isinstance(_f, tuple): _f = _f[0]\n"
        "gc.collect()\n"
        "print(repr((sys.implementation.name, '.'.join(str(v) for v in sys.implementation.version[:3]),"
        " sys.platform, _m, _r, getattr(sys.implementation, '_mpy', None), _f, gc.mem_free(),"
        " gc.mem_alloc())))\n"
        "del _m, _r, _f\n"
    )

    def info(self, timeout: float = 10) -> dict:
        """The board's implementation, version, platform, machine, clock and heap."""
        import ast

        text = self.exec(self.INFO, timeout, doing="asking the board what it is").strip()
        try:
            name, ver, platform, machine, release, mpy, freq, free, alloc = ast.literal_eval(
                text.splitlines()[-1])
        except (ValueError, SyntaxError, IndexError):
            raise HarnessError(f"unexpected answer from the board: {text[-200:]!r}") from None
        self.flavour = name
        return {"implementation": name, "version": ver, "platform": platform, "machine": machine,
                "release": release, "mpy": mpy, "freq_hz": freq, "heap_free": free,
                "heap_alloc": alloc, "heap_total": free + alloc}
