"""ButterflyViT's training kernels in C: applying the experts' butterflies, forward and backward.

Two operations of the ButterflyViT feed-forward (moe.ButterflyMoE) run here, where PyTorch's
eager ops would make a pass over memory for every stage or block product:
- `form_expert_matrices_t`: every expert's W_e^T = (B(theta_e) Q B(phi_e))^T, for the
  "grouped" path; one expert's matrix at a time, while it sits in cache.
- `block_rows`: y = B_e x for rows sorted by expert, B_e given by its diagonal blocks, for
  the "slots" path; the rows are read and written once, in their sorted order.
`csrc/train_kernels.c` (its header gives the arithmetic and why the floats are the same on
every CPU) is plain C99, compiled on first use with the machine's C compiler into the user
cache (`$XDG_CACHE_HOME/butterflyvit`, else ~/.cache/butterflyvit), keyed on the source, so
an edit or another machine rebuilds it. Without a compiler training still works:
`available()` is False, one warning says why, and PyTorch ops do the same arithmetic (the
same values to float rounding; tests compare the two). BUTTERFLYVIT_TRAIN_KERNELS=off uses
the PyTorch ops anyway.

The kernels take float32 CPU tensors only; anything else (a GPU, float64 in tests) uses the
PyTorch ops.
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

SOURCE = Path(__file__).parent / "csrc" / "train_kernels.c"
CFLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-pthread",
          # the same floats from every build: no fused multiply-adds (the C file's header)
          "-ffp-contract=off"]
SWITCH = "BUTTERFLYVIT_TRAIN_KERNELS"

_lib = None          # the loaded library, once built
_unavailable = None  # why it cannot be had (a sentence), once known


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "butterflyvit"


def _compiler() -> str | None:
    cc = os.environ.get("CC", "cc")
    return shutil.which(cc) or shutil.which("gcc") or shutil.which("clang")


def build(extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile the kernels into the cache (once per source, flags and machine); the path.
    Raises RuntimeError with the compiler's message when it cannot."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    flags = CFLAGS + list(extra_flags)
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags + [cc]).encode()
                         + platform.machine().encode()).hexdigest()[:16]
    target = cache_dir() / f"train_kernels-{key}.so"
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


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the kernels' C types on a loaded library."""
    i, p, n = ctypes.c_int, ctypes.c_void_p, ctypes.c_long
    for name, args, ret in [
            ("bvit_forming_scratch_floats", [i, i, i], n),
            ("bvit_forming_forward", [i, i, i, i] + [p] * 7 + [i], None),
            ("bvit_forming_backward", [i, i, i, i] + [p] * 11 + [i], None),
            ("bvit_rows_scratch_floats", [i, i], n),
            ("bvit_rows_forward", [i, i, i] + [p] * 5 + [i], None),
            ("bvit_rows_backward", [i, i, i] + [p] * 6 + [i], None)]:
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ret
    return lib


def _load():
    global _lib, _unavailable
    if _lib is not None or _unavailable is not None:
        return _lib
    if os.environ.get(SWITCH, "") == "off":
        _unavailable = f"{SWITCH}=off"
        return None
    try:
        lib = bind(ctypes.CDLL(str(build())))
    except (OSError, RuntimeError) as exc:
        _unavailable = str(exc)
        warnings.warn(f"butterflyvit: the C training kernels are unavailable ({exc}); "
                      "training uses PyTorch ops for the butterflies instead (slower)",
                      stacklevel=3)
        return None
    _lib = lib
    return lib


def available() -> bool:
    """True when the kernels are built and loaded (building them on the first call)."""
    return _load() is not None


def why_unavailable() -> str | None:
    _load()
    return _unavailable


def usable_for(*tensors: torch.Tensor) -> bool:
    """The kernels take these: float32 on the CPU (and they can be had)."""
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors) \
        and available()


def _pointers(tensors) -> ctypes.Array:
    """A C array of the tensors' data pointers (each contiguous float32)."""
    return (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


def _cos_sin(angles: torch.Tensor):
    return torch.cos(angles).contiguous(), torch.sin(angles).contiguous()


class _FormExperts(torch.autograd.Function):
    """(q, phi, theta) -> E separate matrices W_e^T. Separate, so that autograd hands back
    each expert's gradient as it comes from that expert's product: no (E, dpad, fpad) stack
    of them, forward or backward."""

    @staticmethod
    def forward(ctx, q, phi, theta):
        lib = _load()
        q = q.detach().contiguous()
        (cp, sp), (ct, st) = _cos_sin(phi), _cos_sin(theta)
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


class _BlockRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, blocks, starts):
        lib = _load()
        x, blocks = x.detach().contiguous(), blocks.detach().contiguous()
        e, nb, bs, _ = blocks.shape
        n = x.shape[1]
        threads = torch.get_num_threads()
        scratch = x.new_empty(threads * lib.bvit_rows_scratch_floats(n, bs))
        y = torch.empty_like(x)
        lib.bvit_rows_forward(e, n, bs, starts.data_ptr(), blocks.data_ptr(), x.data_ptr(),
                              y.data_ptr(), scratch.data_ptr(), threads)
        ctx.save_for_backward(x, blocks, starts)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        lib = _load()
        x, blocks, starts = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        e, nb, bs, _ = blocks.shape
        grad_x, grad_blocks = torch.empty_like(x), torch.empty_like(blocks)
        lib.bvit_rows_backward(e, x.shape[1], bs, starts.data_ptr(), blocks.data_ptr(),
                               x.data_ptr(), grad_y.data_ptr(), grad_x.data_ptr(),
                               grad_blocks.data_ptr(), torch.get_num_threads())
        return grad_x, grad_blocks, None


def segment_starts(counts) -> torch.Tensor:
    """Rows per expert -> the (E + 1,) int64 bounds block_rows takes."""
    starts = torch.zeros(len(counts) + 1, dtype=torch.int64)
    starts[1:] = torch.as_tensor(counts, dtype=torch.int64).cumsum(0)
    return starts


def block_rows(x: torch.Tensor, blocks: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """y[r] = diag(blocks[e]) x[r] for rows x (M, n) sorted by expert, rows starts[e] ..
    starts[e+1]-1 being expert e's, blocks (E, n/bs, bs, bs) each expert's block-diagonal
    matrix (butterfly.butterfly_blocks: B with n_l stages, bs = 2**n_l); differentiable in
    x and blocks. Callers check usable_for() first."""
    if x.dim() != 2 or blocks.dim() != 4 or starts.dim() != 1:
        raise ValueError("x must be 2-D, blocks 4-D (experts, blocks, bs, bs), starts 1-D")
    e, nb, bs, bs2 = blocks.shape
    if bs != bs2 or x.shape[1] != nb * bs or starts.shape[0] != e + 1 \
            or starts.dtype != torch.int64:
        raise ValueError(f"shapes do not fit: x {tuple(x.shape)}, blocks {tuple(blocks.shape)},"
                         f" starts {tuple(starts.shape)} {starts.dtype}")
    if int(starts[0]) != 0 or int(starts[-1]) != x.shape[0] or bool((starts.diff() < 0).any()):
        raise ValueError(f"starts must rise from 0 to the {x.shape[0]} rows")
    return _BlockRows.apply(x, blocks, starts.contiguous())


if __name__ == "__main__":   # `python -m butterflyvit.train_kernels`: build them, say where
    if available():
        print(f"C training kernels: {build()}")
    else:
        sys.exit(f"C training kernels unavailable: {why_unavailable()}")
