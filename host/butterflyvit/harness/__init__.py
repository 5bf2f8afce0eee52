"""The serial harness: run the board's classifier on test images over a serial port and
compare its integer outputs, timings and heap with the host reference (docs/harness.md).

- transport: the raw REPL over pyserial (MicroPython and CircuitPython), HarnessError.
- files: hashes, copies and sync of the device code and the model on the board.
- session: one harness run (report JSON, plot, resume).
"""

from .transport import (BoardDisconnected, BoardException, BoardTimeout, HarnessError,  # noqa: F401
                        RawRepl, SerialTransport)
