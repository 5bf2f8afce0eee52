"""Forming the expert matrices W_e^T = (B(theta_e) Q B(phi_e))^T in a small C kernel.

Training's "grouped" path (moe.ButterflyMoE) forms all E expert matrices at every step. In
PyTorch's eager ops that is a handful of whole-tensor passes (block products and the copy
between them), each 4 MB at the pico shape and memory-bound; `csrc/forming.c` instead
rotates one expert's matrix at a time while it sits in cache, forward and backward
(the file's header gives the arithmetic).

The kernel is plain C99, compiled on first use with the machine's C compiler into the user
cache (`$XDG_CACHE_HOME/butterflyvit`, else ~/.cache/butterflyvit), keyed on the source, so
an edit or another machine rebuilds it. Without a compiler training still works: `available()`
is False, a warning says why once, and the eager ops form the matrices (same values to float
rounding; tests compare the two). Set BUTTERFLYVIT_FORMING=eager to use the eager ops anyway.

It takes float32 CPU tensors only; anything else (a GPU, float64 in tests) uses the eager ops.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "forming.c"
CFLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-pthread",
          # the same floats from every build: no fused multiply-adds (forming.c's header)
          "-ffp-contract=off"]

_lib = None          # the loaded library, once built
_unavailable = None  # why it cannot be had (a sentence), once known


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "butterflyvit"


def _compiler() -> str | None:
    cc = os.environ.get("CC", "cc")
    return shutil.which(cc) or shutil.which("gcc") or shutil.which("clang")


def build(extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile forming.c into the cache (once per source, flags and machine); its path.
    Raises RuntimeError with the compiler's message when it cannot."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    flags = CFLAGS + list(extra_flags)
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags + [cc]).encode()
                         + platform.machine().encode()).hexdigest()[:16]
    target = cache_dir() / f"forming-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target, then rename: several processes (torchrun) may race here
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        run = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp],
                             capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"{cc} failed to build {SOURCE.name}:\n{run.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _load():
    global _lib, _unavailable
    if _lib is not None or _unavailable is not None:
        return _lib
    if os.environ.get("BUTTERFLYVIT_FORMING", "") == "eager":
        _unavailable = "BUTTERFLYVIT_FORMING=eager"
        return None
    try:
        lib = bind(ctypes.CDLL(str(build())))
    except (OSError, RuntimeError) as exc:
        _unavailable = str(exc)
        warnings.warn(f"butterflyvit: the C forming kernel is unavailable ({exc}); training "
                      "forms expert matrices with PyTorch ops instead (slower)", stacklevel=3)
        return None
    _lib = lib
    return lib


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the kernel's three functions' C types on a loaded library."""
    i, p = ctypes.c_int, ctypes.c_void_p
    lib.bvit_forming_scratch_floats.argtypes = [i, i, i]
    lib.bvit_forming_scratch_floats.restype = ctypes.c_long
    lib.bvit_forming_forward.argtypes = [i, i, i, i] + [p] * 7 + [i]
    lib.bvit_forming_forward.restype = None
    lib.bvit_forming_backward.argtypes = [i, i, i, i] + [p] * 11 + [i]
    lib.bvit_forming_backward.restype = None
    return lib


def available() -> bool:
    """True when the kernel is built and loaded (building it on the first call)."""
    return _load() is not None


def why_unavailable() -> str | None:
    _load()
    return _unavailable


def usable_for(*tensors: torch.Tensor) -> bool:
    """The kernel takes these: float32 on the CPU (and it can be had)."""
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors) \
        and available()


def _pointers(tensors) -> ctypes.Array:
    """A C array of the tensors' data pointers (each contiguous float32)."""
    return (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


class _FormExperts(torch.autograd.Function):
    """(q, phi, theta) -> E separate matrices W_e^T. Separate, so that autograd hands back
    each expert's gradient as it comes from that expert's product: no (E, dpad, fpad) stack
    of them, forward or backward."""

    @staticmethod
    def forward(ctx, q, phi, theta):
        lib = _load()
        q = q.detach().contiguous()
        cp, sp = torch.cos(phi).contiguous(), torch.sin(phi).contiguous()
        ct, st = torch.cos(theta).contiguous(), torch.sin(theta).contiguous()
        e, n_l = phi.shape[0], phi.shape[1]
        fpad, dpad = q.shape
        threads = torch.get_num_threads()
        scratch = q.new_empty(threads * lib.bvit_forming_scratch_floats(fpad, dpad, n_l))
        wts = [q.new_empty(dpad, fpad) for _ in range(e)]
        lib.bvit_forming_forward(e, fpad, dpad, n_l, q.data_ptr(), cp.data_ptr(),
                                 sp.data_ptr(), ct.data_ptr(), st.data_ptr(), _pointers(wts),
                                 scratch.data_ptr(), threads)
        ctx.save_for_backward(cp, sp, ct, st, *wts)   # backward walks back from W_e^T
        return tuple(wts)

    @staticmethod
    def backward(ctx, *grad_wts):
        lib = _load()
        cp, sp, ct, st, *wts = ctx.saved_tensors
        dpad, fpad = wts[0].shape
        grad_wts = [g.contiguous() for g in grad_wts]   # unused outputs come as zeros
        e, n_l = cp.shape[0], cp.shape[1]
        threads = torch.get_num_threads()
        scratch = cp.new_empty(threads * lib.bvit_forming_scratch_floats(fpad, dpad, n_l))
        grad_q = cp.new_empty(fpad, dpad)
        parts = cp.new_empty(threads, fpad, dpad)
        grad_phi, grad_theta = torch.empty_like(cp), torch.empty_like(ct)
        lib.bvit_forming_backward(e, fpad, dpad, n_l, cp.data_ptr(), sp.data_ptr(),
                                  ct.data_ptr(), st.data_ptr(), _pointers(wts),
                                  _pointers(grad_wts), grad_q.data_ptr(), parts.data_ptr(),
                                  grad_phi.data_ptr(), grad_theta.data_ptr(),
                                  scratch.data_ptr(), threads)
        return grad_q, grad_phi, grad_theta


def form_expert_matrices_t(q: torch.Tensor, phi: torch.Tensor,
                           theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """W_e^T for every expert, E tensors of (dpad, fpad), differentiable in all three inputs.

    q (fpad, dpad): the substrate, zero-padded to the angles' sizes; phi (E, n_l, dpad/2)
    and theta (E, n_l, fpad/2): the angles, padded pairs already masked to zero. Callers
    check usable_for() first."""
    if phi.dim() != 3 or theta.dim() != 3 or q.dim() != 2:
        raise ValueError("q must be 2-D, phi and theta 3-D (experts, stages, pairs)")
    e, n_l, half_d = phi.shape
    if theta.shape[:2] != (e, n_l) or q.shape != (2 * theta.shape[2], 2 * half_d):
        raise ValueError(f"shapes do not fit: q {tuple(q.shape)}, phi {tuple(phi.shape)}, "
                         f"theta {tuple(theta.shape)}")
    return _FormExperts.apply(q, phi, theta)


if __name__ == "__main__":   # `python -m butterflyvit.forming`: build it and say where
    if available():
        print(f"C forming kernel: {build()}")
    else:
        sys.exit(f"C forming kernel unavailable: {why_unavailable()}")
