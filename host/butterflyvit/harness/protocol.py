"""The host's half of the board agent (device/bvit/agent.py): the code that starts it in a
board's REPL, the calls that classify a frame there, and the reading of the lines it prints.

    BVIT-RETRY                                 the first load ran out of heap; trying again
    BVIT-READY (buffers, heap total, heap in use, heap free, kernels, timer)
    BVIT index microseconds heap_peak heap_before logit0 ... logitN crc

The same lines come from a job file run on a local MicroPython (`micropython -m bvit.agent
JOBS.json`: the demo, the benchmarks, the tests): `job`, `write_jobs` and `read_jobs`.
"""

from __future__ import annotations

import ast
import base64
import json
import zlib
from pathlib import Path

from .transport import HarnessError

# How often a result line that fails its checksum is asked for again before giving up.
LINE_TRIES = 4

# Forget what an earlier run left on the board (the REPL keeps its globals and modules): the
# agent and its classifier's buffers, and the bvit modules, so that files copied now are
# imported afresh. (_bvnet and the rest: the globals of harnesses before the agent module.)
CLEANUP = """
import sys, gc
_g = globals()
for _n in ('_bva', '_bvnet'):
    if _n in _g:
        try:
            _g[_n].close()
        except Exception:
            pass
for _n in ('_bva', '_bv', '_bvr', '_bvnet', '_bvload', '_bvline', '_hp', '_a2b', '_crc', '_src', '_root',
           'Agent', 'Classifier', 'Frame', 'ticks_us', 'ticks_diff', 'HeapProbe'):
    if _n in _g:
        del _g[_n]
for _n in [k for k in sys.modules if k == 'bvit' or k.startswith('bvit.')]:
    del sys.modules[_n]
del _g
gc.collect()
"""


# What the harness reports as a forward's heap peak: the live heap, collected at each of the
# forward's probes (after each block's attention and FFN), not the heap as it stands, which
# counts the garbage a board has not collected yet (a qemu board "peaked" at 135.7 KB that way).
HEAP_PEAK = "live heap after a collection at each block's probes (bvit.agent, collect=True)"


def start_code(root: str, model: str, backend: str, weight_buffer: int) -> str:
    """REPL code that loads the model in the board's agent and prints BVIT-READY; `_bv` and
    `_bvr` are then the per-image calls (short: they are sent once per image). The agent
    collects the heap at its probes (HEAP_PEAK); their time is not counted in the forward's."""
    return (f"import sys\n_root = {root!r}\n"
            "if _root not in sys.path:\n    sys.path.insert(0, _root)\n"
            "from bvit.agent import Agent\n"
            f"_bva = Agent({model!r}, {backend!r}, {weight_buffer!r}, True)\n"
            "_bva.ready()\n_bv = _bva.frame\n_bvr = _bva.again\n")


def classify_call(index: int, frame: bytes, width: int, height: int, fmt: str) -> str:
    """The REPL line that classifies one frame on the board."""
    return f"_bv({index}, {base64.b64encode(frame)!r}, {width}, {height}, {fmt!r})\n"


AGAIN = "_bvr()\n"


def parse_ready(text: str) -> dict | None:
    """The setup the board reported in its BVIT-READY line (None when there is none), with
    "load_retried" when it said BVIT-RETRY first."""
    ready = [ln for ln in text.splitlines() if ln.startswith("BVIT-READY")]
    if not ready:
        return None
    ram, total, alloc, free, kernels, timer = ast.literal_eval(ready[-1][len("BVIT-READY"):].strip())
    setup = {"ram_buffers": ram, "heap_total": total, "heap_after_load": alloc,
             "heap_free_after_load": free, "backend": kernels,
             "timer": "time.ticks_us" if timer == "us" else "millisecond ticks (no time.ticks_us on this port)"}
    if "BVIT-RETRY" in text:
        setup["load_retried"] = True
    return setup


def checked_payload(line: str) -> tuple[str | None, str]:
    """(payload, "") of a result line whose CRC-32 is right, else (None, why)."""
    payload, _, crc = line[5:].rpartition(" ")
    if f"{zlib.crc32(payload.encode()):08x}" != crc:
        return None, f"checksum mismatch in {line[:120]!r}"
    return payload, ""


def result_of(line: str, payload: str) -> dict:
    """{"index", "us", "heap_peak", "heap_before", "logits"} of a checked result line."""
    try:
        vals = [int(v) for v in payload.split()]
    except ValueError:
        vals = []
    if len(vals) < 5:
        raise HarnessError(f"the board's result line is not one the harness knows: {line[:200]!r}")
    return {"index": vals[0], "us": vals[1], "heap_peak": vals[2], "heap_before": vals[3],
            "logits": vals[4:]}


def parse_result(text: str, index: int, classes: int):
    """The result dict from the board's answer for image `index`, or (None, why) when no
    line in it passes its CRC-32 (damaged on the wire, or cut short): then ask again."""
    why = "no result line"
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("BVIT "):
            continue
        payload, bad = checked_payload(line)
        if payload is None:
            why = bad
            continue
        r = result_of(line, payload)
        i = r.pop("index")
        if i != index or len(r["logits"]) != classes:
            raise HarnessError(f"the board answered for image {i} with {len(r['logits'])} logits, "
                               f"image {index} with {classes} expected: {line[:200]!r}")
        return r, None
    return None, why


def classify_on_board(repl, index, call, classes, timeout):
    """Run `call` (a `_bv(...)` line) on the board and read its result line; a line that
    fails its checksum is asked for again (`_bvr()` prints it again, the forward is not
    re-run), LINE_TRIES times at most. Returns (result, resends)."""
    text = repl.exec(call, timeout, doing=f"classifying image {index}")
    for resends in range(LINE_TRIES):
        r, why = parse_result(text, index, classes)
        if r is not None:
            return r, resends
        if resends + 1 < LINE_TRIES:
            text = repl.exec(AGAIN, timeout, doing=f"asking again for the result of image {index}")
    raise HarnessError(f"the board's result line for image {index} failed its check {LINE_TRIES} times "
                       f"(last: {why}; the board said {text[-200:]!r}): the serial line damages data - "
                       "check the cable and its length, or try a lower --baud")


# ------------------------------------------------------------------ job files (local MicroPythons)

def job(model, frames, *, backend="auto", weight_buffer=4096, in_ram=False, collect=False) -> dict:
    """One job for `run_jobs`: a model file and frame files (paths, or (path, "WxH"))."""
    return {"model": str(model), "frames": [str(f) if isinstance(f, (str, Path)) else [str(f[0]), f[1]]
                                            for f in frames],
            "backend": backend, "weight_buffer": weight_buffer, "in_ram": in_ram, "collect": collect}


def write_jobs(path, jobs) -> Path:
    path = Path(path)
    path.write_text(json.dumps(jobs))
    return path


def read_jobs(text: str) -> list:
    """The jobs' outcomes from what `micropython -m bvit.agent JOBS.json` printed: for each
    job {"setup": parse_ready's dict, "results": [result dicts]}. A line failing its
    checksum is an error here: nothing lies between the process and its pipe."""
    out = []
    retried = ""
    for line in text.splitlines():
        if line.startswith("BVIT-RETRY"):
            retried = line + "\n"
        elif line.startswith("BVIT-READY"):
            out.append({"setup": parse_ready(retried + line), "results": []})
            retried = ""
        elif line.startswith("BVIT "):
            payload, bad = checked_payload(line)
            if payload is None or not out:
                raise HarnessError(bad or f"a result line before BVIT-READY: {line[:200]!r}")
            out[-1]["results"].append(result_of(line, payload))
    return out
