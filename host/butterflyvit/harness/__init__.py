"""The serial harness: run the board's classifier on test images over a serial port and
compare its integer outputs, timings and heap with the host reference (docs/harness.md).

- transport: the raw REPL over pyserial (MicroPython and CircuitPython), HarnessError.
- files: hashes, copies and sync of the device code and the model on the board.
- protocol: the host's half of the board agent (device/bvit/agent.py): starting it in the
  REPL, the per-image calls, the checked result lines; job files for local MicroPythons.
- images: the test images sent, as camera frames.
- report: the JSON report, its summary, energy, plot.
- run: one harness run (HarnessOptions, run_harness): connect, copy, classify, resume.
"""

from .transport import (BoardDisconnected, BoardException, BoardTimeout, HarnessError,  # noqa: F401
                        RawRepl, SerialTransport)
