"""Test bed: build small C programs for the host, a Cortex-M0+ and an rv32imc
core, run them (the two MCUs under QEMU), and count the instructions a
function executes, exactly.

    prog = rv32imc.build(["native/kernels.c", "tests/c/main.c"],
                         include_dirs=["native"], defines={"N": 64},
                         generated={"vectors.h": c_header({"x": x, "w": w})})
    res = prog.run()                  # RunResult: stdout, returncode
    res.check()                       # raises unless exit status 0
    n = prog.count("ternary_dot")     # instructions of its first call

Targets (see docs/test-beds.md):

* ``host``           host gcc, run natively.
* ``cortex-m0plus``  arm-none-eabi-gcc -mcpu=cortex-m0plus -mthumb, newlib with
                     semihosting (rdimon); run on ``qemu-system-arm -M microbit``
                     (a real ARMv6-M core: Cortex-M0; 256 KiB flash, 16 KiB RAM).
* ``cortex-m0plus-big`` the same binary code on ``-M mps2-an385`` (a Cortex-M3
                     executes the ARMv6-M instructions unchanged; 4 MiB + 4 MiB)
                     for programs that need more memory.
* ``rv32imc``        riscv64-unknown-elf-gcc -march=rv32imc_zicsr -mabi=ilp32,
                     picolibc; run on ``qemu-system-riscv32 -M virt -bios none``,
                     stdout on the 16550 UART, exit through the SiFive test device.

Every program is compiled with ``-std=c99 -Wall -Wextra -Werror`` (plus
``-O2`` unless told otherwise) and exits with ``main``'s return value, which
becomes the process exit status on every target.

Instruction counts come from a TCG plugin of our own (qemu_plugin/fncount.c,
built with the host gcc on first use): it counts every instruction from the
function's entry to the moment control reaches its caller's return address,
callees included.  See fncount.c for the exact rule.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

try:  # optional: only the fixtures need pytest
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

__all__ = [
    # API
    "BedError",
    "BedTimeout",
    "Target",
    "Program",
    "RunResult",
    "Insn",
    "HOST",
    "CORTEX_M0PLUS",
    "CORTEX_M0PLUS_BIG",
    "RV32IMC",
    "TARGETS",
    "MCU_TARGETS",
    "get_target",
    "set_build_dir",
    "build_dir",
    "count_instructions",
    "c_array",
    "c_header",
    "fncount_plugin",
    # pytest fixtures
    "cross_build_dir",
    "cross_targets",
    "cross_target",
    "mcu_target",
    "host_c",
    "cortex_m0plus",
    "cortex_m0plus_big",
    "rv32imc",
]

HERE = Path(__file__).resolve().parent
SUPPORT = HERE / "support"
PLUGIN_DIR = HERE / "qemu_plugin"

WARNINGS = ("-Wall", "-Wextra", "-Werror")
Source = Union[str, os.PathLike]


class BedError(RuntimeError):
    """A build or emulator failure (not the program's own non-zero exit)."""


class BedTimeout(BedError):
    """The program did not finish within the timeout."""


# --------------------------------------------------------------------------
# build directory (one per pytest session, else one per process)

_build_dir: Path | None = None
_build_lock = threading.Lock()


def set_build_dir(path: Source) -> Path:
    """Where builds (and the plugin) are cached; the session fixture sets it."""
    global _build_dir
    _build_dir = Path(path)
    _build_dir.mkdir(parents=True, exist_ok=True)
    return _build_dir


def build_dir() -> Path:
    global _build_dir
    if _build_dir is None:
        _build_dir = Path(tempfile.mkdtemp(prefix="beds-cross-"))
    return _build_dir


# --------------------------------------------------------------------------
# results


@dataclasses.dataclass
class RunResult:
    """What one run printed and how it ended."""

    target: str
    stdout: str
    stderr: str
    returncode: int
    command: list[str]
    calls: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    """function name -> instruction count of each completed call (counting runs)"""
    total: int | None = None
    """instructions executed by the whole run (counting runs)"""

    def check(self, returncode: int = 0) -> "RunResult":
        if self.returncode != returncode:
            raise BedError(
                f"[{self.target}] exit status {self.returncode}, expected {returncode}\n"
                f"command: {' '.join(self.command)}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
            )
        return self


@dataclasses.dataclass(frozen=True)
class Insn:
    """One disassembled instruction (from objdump)."""

    addr: int
    size: int
    mnemonic: str
    operands: str

    def __str__(self) -> str:
        return f"{self.addr:#x}: {self.mnemonic} {self.operands}".rstrip()


@dataclasses.dataclass
class Program:
    """A built executable for one target."""

    target: "Target"
    path: Path
    sources: tuple[Path, ...]

    def run(self, **kw) -> RunResult:
        """Run it; see Target.run."""
        return self.target.run(self, **kw)

    def count(self, function: str, **kw) -> int:
        """Instructions executed by the first call of ``function``."""
        return self.target.count(self, function, **kw)

    def count_calls(self, functions: str | Sequence[str], **kw) -> RunResult:
        """Run with counting; RunResult.calls holds every call's count."""
        return self.target.count_calls(self, functions, **kw)

    def symbols(self) -> dict[str, tuple[int, int]]:
        """Defined symbols: name -> (address, size).  Thumb bit cleared."""
        return self.target.symbols(self.path)

    def symbol(self, name: str) -> tuple[int, int]:
        syms = self.symbols()
        if name not in syms:
            raise BedError(
                f"[{self.target.name}] no symbol {name!r} in {self.path.name} "
                "(inlined or discarded? mark it __attribute__((noinline)) and use it)"
            )
        return syms[name]

    def disassemble(self, function: str) -> list[Insn]:
        """The instructions of ``function`` in address order (literal-pool words excluded)."""
        return self.target.disassemble(self.path, function)

    def disassemble_range(self, start: int, stop: int) -> list[Insn]:
        """The instructions in [start, stop); the last one's size assumes it ends at stop."""
        return self.target.disassemble_range(self.path, start, stop)


# --------------------------------------------------------------------------
# generated headers (big inputs)

_CTYPES = {
    "int8": "int8_t",
    "uint8": "uint8_t",
    "int16": "int16_t",
    "uint16": "uint16_t",
    "int32": "int32_t",
    "uint32": "uint32_t",
    "int64": "int64_t",
    "uint64": "uint64_t",
}


def c_array(name: str, values, ctype: str | None = None, *, const: bool = True, per_line: int = 16) -> str:
    """C source for ``static const <ctype> name[N] = {...};`` and ``#define NAME_LEN N``.

    ``values`` is any iterable of ints or a numpy integer array (whose dtype
    then gives ``ctype``: int8 -> int8_t, ...).  ``const`` arrays go to flash
    (.rodata) on the MCUs, so they do not use their small RAM.
    """
    if ctype is None:
        dtype = getattr(values, "dtype", None)
        if dtype is None or str(dtype) not in _CTYPES:
            raise ValueError(f"c_array({name!r}): give ctype, or a numpy integer array")
        ctype = _CTYPES[str(dtype)]
    flat = [int(v) for v in (values.ravel() if hasattr(values, "ravel") else values)]
    if not flat:
        raise ValueError(f"c_array({name!r}): empty array")
    suffix = {"int64_t": "LL", "uint64_t": "ULL", "uint32_t": "u"}.get(ctype, "")

    def lit(v: int) -> str:
        # INT32_MIN / INT64_MIN are not valid literals: write them as expressions
        if ctype in ("int32_t", "int64_t") and v < 0 and -v >= (1 << (31 if ctype == "int32_t" else 63)):
            return f"({v + 1}{suffix} - 1)"
        return f"{v}{suffix}"

    lines = [
        "    " + ", ".join(lit(v) for v in flat[i : i + per_line]) + ","
        for i in range(0, len(flat), per_line)
    ]
    qual = "static const " if const else "static "
    return (
        f"#define {name.upper()}_LEN {len(flat)}\n"
        f"{qual}{ctype} {name}[{len(flat)}] = {{\n" + "\n".join(lines) + "\n};\n"
    )


def c_header(arrays: Mapping[str, object], guard: str = "BEDS_GENERATED_H") -> str:
    """A header holding several arrays: ``{name: numpy array | (ctype, values)}``."""
    parts = [f"#ifndef {guard}\n#define {guard}\n#include <stdint.h>\n"]
    for name, spec in arrays.items():
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
            parts.append(c_array(name, spec[1], spec[0]))
        else:
            parts.append(c_array(name, spec))
    parts.append(f"#endif /* {guard} */\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------
# targets


def _run_tool(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BedError(f"{what} failed ({proc.returncode}):\n{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _hash(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:16]


def _user_headers(cc: str, args: Sequence[str], sources: Sequence[Path]) -> list[Path]:
    """The non-system headers ``sources`` include (gcc -MM; -MG lets the
    generated headers, not written yet, be missing)."""
    out = _run_tool([cc, *args, "-MM", "-MG", *map(str, sources)], f"{cc} -MM")
    words = out.replace("\\\n", " ").split()
    deps = {Path(w) for w in words if not w.endswith(":")} - set(sources)
    return sorted(p for p in deps if p.is_absolute() and p.is_file())


class Target:
    """A compiler + a way to run its output.  Subclasses fill in the details."""

    name: str = "?"
    cc: str = "gcc"
    tool_prefix: str = ""
    emulated: bool = False
    asm_comment: str = "#"  # what starts a comment in objdump's output
    # flags every compile gets (besides -std, -O, warnings)
    arch_flags: tuple[str, ...] = ()

    # -- tools ------------------------------------------------------------
    def required_tools(self) -> list[str]:
        return [self.cc]

    def missing_tools(self) -> list[str]:
        return [t for t in self.required_tools() if shutil.which(t) is None]

    def available(self) -> bool:
        return not self.missing_tools()

    def _tool(self, name: str) -> str:
        return f"{self.tool_prefix}{name}"

    # -- build ------------------------------------------------------------
    def support_sources(self) -> list[Path]:
        return []

    def link_args(self, outdir: Path) -> list[str]:
        return []

    def build(
        self,
        sources: Sequence[Source] | Source,
        *,
        include_dirs: Sequence[Source] = (),
        defines: Mapping[str, object] | Sequence[str] | None = None,
        cflags: Sequence[str] = (),
        opt: str = "-O2",
        std: str = "c99",
        generated: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Program:
        """Compile and link ``sources`` (C files, one of them with ``main``).

        include_dirs: extra -I directories.  defines: {"N": 64, "FLAG": None}
        or ["N=64", "FLAG"].  generated: {"file.h": text} written into a
        build-private include directory first (see c_header).  Builds are
        cached by content: sources, the headers they include, flags.
        """
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        srcs = tuple(Path(s).resolve() for s in sources)
        if not srcs:
            raise BedError("build: no sources")
        for s in srcs:
            if not s.is_file():
                raise BedError(f"build: no such source {s}")
        if self.missing_tools():
            raise BedError(f"[{self.name}] missing tools: {', '.join(self.missing_tools())}")
        incs = [Path(d).resolve() for d in include_dirs]
        if defines is None:
            dflags: list[str] = []
        elif isinstance(defines, Mapping):
            dflags = [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in defines.items()]
        else:
            dflags = [f"-D{d}" for d in defines]
        generated = dict(generated or {})

        flags = [
            *self.arch_flags,
            f"-std={std}",
            opt,
            *WARNINGS,
            "-g",
            "-ffunction-sections",
            "-fdata-sections",
            *dflags,
            *cflags,
        ]
        support = self.support_sources()
        headers = _user_headers(self.cc, [*flags, *(f"-I{d}" for d in incs)], srcs)
        key = _hash(
            [self.name.encode(), "\0".join(flags).encode()]
            + [str(p).encode() + b"\0" + p.read_bytes() for p in (*srcs, *support, *headers)]
            + [k.encode() + b"\0" + v.encode() for k, v in sorted(generated.items())]
            + [str(d).encode() for d in incs]
        )
        stem = name or srcs[-1].stem
        outdir = build_dir() / self.name / f"{stem}-{key}"
        exe = outdir / (stem + (".elf" if self.emulated else ""))
        if exe.is_file():
            return Program(self, exe, srcs)

        with _build_lock:
            if exe.is_file():
                return Program(self, exe, srcs)
            tmp = Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=build_dir()))
            gen_dir = tmp / "generated"
            gen_dir.mkdir()
            for fname, text in generated.items():
                (gen_dir / fname).parent.mkdir(parents=True, exist_ok=True)
                (gen_dir / fname).write_text(text)
            cmd = [
                self.cc,
                *flags,
                f"-I{gen_dir}",
                *(f"-I{d}" for d in incs),
                *(str(s) for s in (*support, *srcs)),
                "-o",
                str(tmp / exe.name),
                *self.link_args(tmp),
            ]
            _run_tool(cmd, f"[{self.name}] build of {stem}")
            (tmp / "build.cmd").write_text(" ".join(cmd) + "\n")
            outdir.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(outdir)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not exe.is_file():  # unless another process built it meanwhile
                    raise
        return Program(self, exe, srcs)

    def _as_program(self, prog: Program | Sequence[Source] | Source, build_kw: dict) -> Program:
        if isinstance(prog, Program):
            if build_kw:
                raise TypeError(f"build options {sorted(build_kw)} given with a built Program")
            if prog.target is not self and prog.target.name != self.name:
                raise BedError(f"program built for {prog.target.name}, run on {self.name}")
            return prog
        return self.build(prog, **build_kw)

    # -- run ----------------------------------------------------------------
    def command(self, exe: Path) -> list[str]:
        return [str(exe)]

    def run(
        self,
        prog: Program | Sequence[Source] | Source,
        *,
        timeout: float = 60,
        cwd: Source | None = None,
        extra_args: Sequence[str] = (),
        **build_kw,
    ) -> RunResult:
        """Run a program (or build ``prog`` as sources first, with ``build_kw``).

        Returns stdout/stderr (text) and the exit status.  Raises BedTimeout if
        it runs longer than ``timeout`` seconds, BedError if the emulator
        itself fails.  ``cwd`` is where semihosting file names resolve (ARM).
        """
        program = self._as_program(prog, build_kw)
        cmd = self.command(program.path) + list(extra_args)
        return self._execute(cmd, timeout=timeout, cwd=cwd)

    def _execute(self, cmd: list[str], *, timeout: float, cwd: Source | None) -> RunResult:
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace")
            err = (e.stderr or b"").decode("utf-8", "replace")
            raise BedTimeout(
                f"[{self.name}] timed out after {timeout}s: {' '.join(cmd)}\n"
                f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
            ) from None
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace")
        if self.emulated and proc.returncode != 0 and re.search(r"^qemu-system-\w+: ", stderr, re.M):
            # QEMU's own errors (bad option, cannot load) also exit with 1
            if "terminating on signal" not in stderr:
                raise BedError(f"[{self.name}] QEMU failed ({proc.returncode}): {' '.join(cmd)}\n{stderr}")
        return RunResult(self.name, stdout, stderr, proc.returncode, cmd)

    # -- counting -------------------------------------------------------------
    def count_calls(
        self,
        prog: Program | Sequence[Source] | Source,
        functions: str | Sequence[str],
        *,
        timeout: float = 120,
        check: bool = True,
        **build_kw,
    ) -> RunResult:
        """Run with the counting plugin; ``result.calls[f]`` lists each call's
        count in order, ``result.total`` the whole run's.  With ``check`` the
        program must exit 0.  ``cwd``/``extra_args``/``timeout`` as for run.
        """
        raise BedError(f"[{self.name}] instruction counting needs an emulated target")

    def count(
        self,
        prog: Program | Sequence[Source] | Source,
        function: str,
        **kw,
    ) -> int:
        """Exact instructions executed by the first call of ``function``
        (from its first instruction through its return, callees included)."""
        res = self.count_calls(prog, [function], **kw)
        calls = res.calls[function]
        if not calls:
            raise BedError(f"[{self.name}] {function} was never called (or never returned)\n{res.stdout}")
        return calls[0]

    # -- inspection -------------------------------------------------------------
    def symbols(self, exe: Path) -> dict[str, tuple[int, int]]:
        out = _run_tool([self._tool("nm"), "-S", "--defined-only", str(exe)], "nm")
        syms: dict[str, tuple[int, int]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 4:
                addr, size, _kind, sym = parts
                syms.setdefault(sym, (int(addr, 16) & ~self.code_align_mask(), int(size, 16)))
            elif len(parts) == 3:
                addr, _kind, sym = parts
                syms.setdefault(sym, (int(addr, 16) & ~self.code_align_mask(), 0))
        return syms

    def code_align_mask(self) -> int:
        return 0

    def disassemble(self, exe: Path, function: str) -> list[Insn]:
        addr, size = Program(self, exe, ()).symbol(function)
        return self.disassemble_range(exe, addr, addr + size)

    def disassemble_range(self, exe: Path, start: int, stop: int) -> list[Insn]:
        out = _run_tool(
            [
                self._tool("objdump"),
                "-d",
                "--no-show-raw-insn",
                f"--start-address={start:#x}",
                f"--stop-address={stop:#x}",
                str(exe),
            ],
            "objdump",
        )
        rows: list[tuple[int, str, str]] = []
        for line in out.splitlines():
            m = re.match(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
            if m:
                rows.append((int(m.group(1), 16), m.group(2), m.group(3).split(self.asm_comment)[0].strip()))
        insns = []
        for i, (a, mn, ops) in enumerate(rows):
            end = rows[i + 1][0] if i + 1 < len(rows) else stop
            if mn.startswith("."):  # literal pool / data words
                continue
            insns.append(Insn(a, end - a, mn, ops))
        return insns

    def __repr__(self) -> str:
        return f"<Target {self.name}>"


class HostTarget(Target):
    name = "host"
    cc = "gcc"


class _QemuTarget(Target):
    emulated = True
    qemu: str = ""

    def required_tools(self) -> list[str]:
        return [self.cc, self.qemu, self._tool("nm"), self._tool("objdump")]

    def qemu_args(self) -> list[str]:
        raise NotImplementedError

    def command(self, exe: Path) -> list[str]:
        return [self.qemu, *self.qemu_args(), "-kernel", str(exe)]

    def count_calls(
        self,
        prog,
        functions,
        *,
        timeout: float = 120,
        check: bool = True,
        cwd: Source | None = None,
        extra_args: Sequence[str] = (),
        **build_kw,
    ) -> RunResult:
        if isinstance(functions, str):
            functions = [functions]
        program = self._as_program(prog, build_kw)
        addrs = {}
        for f in functions:
            addr, _size = program.symbol(f)
            addrs[addr] = f
        plugin = fncount_plugin()
        fd, out_name = tempfile.mkstemp(prefix="counts-", suffix=".txt", dir=build_dir())
        os.close(fd)
        out = Path(out_name)
        try:
            args = ",".join([str(plugin)] + [f"fn={a:#x}" for a in addrs] + [f"out={out}"])
            cmd = self.command(program.path) + ["-plugin", args, *extra_args]
            res = self._execute(cmd, timeout=timeout, cwd=cwd)
            text = out.read_text() if out.exists() else ""
        finally:
            out.unlink(missing_ok=True)
        res.calls = {f: [] for f in functions}
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["call"]:
                res.calls[addrs[int(parts[1], 16)]].append(int(parts[2]))
            elif parts[:1] == ["total"]:
                res.total = int(parts[1])
        if res.total is None:
            raise BedError(f"[{self.name}] the counting plugin reported nothing: {' '.join(cmd)}\n{res.stderr}")
        if check:
            res.check()
        return res


class ArmV6MTarget(_QemuTarget):
    """Cortex-M0+ code (ARMv6-M Thumb), newlib + semihosting, on a QEMU M-profile board."""

    cc = "arm-none-eabi-gcc"
    tool_prefix = "arm-none-eabi-"
    qemu = "qemu-system-arm"
    asm_comment = "@"
    arch_flags = ("-mcpu=cortex-m0plus", "-mthumb")

    def __init__(self, name: str, machine: str, flash: tuple[int, int], ram: tuple[int, int]):
        self.name = name
        self.machine = machine
        self.flash = flash
        self.ram = ram

    def support_sources(self) -> list[Path]:
        return [SUPPORT / "armv6m_startup.c"]

    def link_args(self, outdir: Path) -> list[str]:
        return [
            "--specs=rdimon.specs",
            "-nostartfiles",
            "-T",
            str(SUPPORT / "armv6m.ld"),
            "-Wl,--gc-sections",
            f"-Wl,--defsym=__flash={self.flash[0]:#x},--defsym=__flash_size={self.flash[1]:#x}",
            f"-Wl,--defsym=__ram={self.ram[0]:#x},--defsym=__ram_size={self.ram[1]:#x}",
            f"-Wl,-Map={outdir / 'link.map'}",
        ]

    def qemu_args(self) -> list[str]:
        return [
            "-M",
            self.machine,
            "-nographic",
            "-monitor",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
        ]

    def code_align_mask(self) -> int:
        return 1  # Thumb bit


@functools.lru_cache(maxsize=None)
def _libgcc_dir(cc: str, multilib: str) -> Path:
    march, mabi = multilib.split("/")
    out = _run_tool([cc, f"-march={march}", f"-mabi={mabi}", "-print-libgcc-file-name"], f"{cc} -print-libgcc-file-name")
    return Path(out.strip()).parent


class Rv32VirtTarget(_QemuTarget):
    """rv32imc code, picolibc, on QEMU's RISC-V virt board (UART out, test-device exit)."""

    cc = "riscv64-unknown-elf-gcc"
    tool_prefix = "riscv64-unknown-elf-"
    qemu = "qemu-system-riscv32"
    name = "rv32imc"
    picolibc = Path("/usr/lib/picolibc/riscv64-unknown-elf")
    # the picolibc and libgcc multilibs closest to rv32imc: rv32im code, same ABI
    multilib = "rv32im/ilp32"
    arch_flags = ("-march=rv32imc_zicsr", "-mabi=ilp32", "-ftls-model=local-exec")
    flash = (0x80000000, 0x400000)  # code + rodata
    ram = (0x80400000, 0x400000)  # data, bss, heap, stack
    stack_size = 0x10000

    def required_tools(self) -> list[str]:
        return super().required_tools() + [str(self.picolibc / "lib" / "picolibc.ld")]

    def missing_tools(self) -> list[str]:
        return [t for t in self.required_tools() if shutil.which(t) is None and not Path(t).is_file()]

    def support_sources(self) -> list[Path]:
        return [SUPPORT / "rv32_virt.c"]

    def build(self, sources, **kw) -> Program:
        cflags = list(kw.pop("cflags", ()))
        # picolibc's headers, without its specs file (whose multilib choice
        # for rv32imc would be the rv64 default)
        return super().build(sources, cflags=["-isystem", str(self.picolibc / "include"), *cflags], **kw)

    def link_args(self, outdir: Path) -> list[str]:
        libc = self.picolibc / "lib" / self.multilib
        libgcc = _libgcc_dir(self.cc, self.multilib)
        return [
            "-nostdlib",
            str(libc / "crt0-hosted.o"),  # _start: sp/gp/tp, .data/.bss, ctors, exit(main())
            "-T",
            str(self.picolibc / "lib" / "picolibc.ld"),
            "-Wl,--gc-sections",
            f"-Wl,--defsym=__flash={self.flash[0]:#x},--defsym=__flash_size={self.flash[1]:#x}",
            f"-Wl,--defsym=__ram={self.ram[0]:#x},--defsym=__ram_size={self.ram[1]:#x}",
            f"-Wl,--defsym=__stack_size={self.stack_size:#x}",
            f"-Wl,-Map={outdir / 'link.map'}",
            f"-L{libc}",
            f"-L{libgcc}",
            "-Wl,--start-group",
            "-lc",
            "-lgcc",
            "-Wl,--end-group",
        ]

    def qemu_args(self) -> list[str]:
        return ["-M", "virt", "-bios", "none", "-nographic", "-monitor", "none"]


HOST = HostTarget()
CORTEX_M0PLUS = ArmV6MTarget("cortex-m0plus", "microbit", flash=(0x0, 256 * 1024), ram=(0x20000000, 16 * 1024))
CORTEX_M0PLUS_BIG = ArmV6MTarget(
    "cortex-m0plus-big", "mps2-an385", flash=(0x0, 4 * 1024 * 1024), ram=(0x20000000, 4 * 1024 * 1024)
)
RV32IMC = Rv32VirtTarget()
TARGETS = {t.name: t for t in (HOST, CORTEX_M0PLUS, CORTEX_M0PLUS_BIG, RV32IMC)}
MCU_TARGETS = ("cortex-m0plus", "rv32imc")


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise BedError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None


def count_instructions(target: str | Target, sources, function: str, **kw) -> int:
    """Instructions executed by the first call of ``function`` in the program
    built from ``sources`` (build options and ``timeout`` in ``kw``)."""
    t = get_target(target) if isinstance(target, str) else target
    return t.count(sources, function, **kw)


# --------------------------------------------------------------------------
# the counting plugin


def fncount_plugin() -> Path:
    """Build (once per build directory and source version) and return the plugin .so."""
    srcs = [PLUGIN_DIR / "fncount.c", PLUGIN_DIR / "qemu-plugin.h"]
    key = _hash(p.read_bytes() for p in srcs)
    so = build_dir() / "plugin" / f"libfncount-{key}.so"
    if so.is_file():
        return so
    if shutil.which("gcc") is None:
        raise BedError("building the QEMU plugin needs the host gcc")
    with _build_lock:
        so.parent.mkdir(parents=True, exist_ok=True)
        tmp = so.with_suffix(f".{os.getpid()}.tmp")
        _run_tool(
            ["gcc", "-shared", "-fPIC", "-O2", "-std=c99", *WARNINGS, f"-I{PLUGIN_DIR}", str(srcs[0]), "-o", str(tmp)],
            "building the fncount QEMU plugin",
        )
        tmp.replace(so)
    return so


# --------------------------------------------------------------------------
# pytest fixtures

if pytest is not None:

    @pytest.fixture(scope="session")
    def cross_build_dir(tmp_path_factory) -> Path:
        """Session-wide cache of cross builds (and the QEMU plugin)."""
        return set_build_dir(tmp_path_factory.mktemp("cross"))

    def _need(target: Target) -> Target:
        missing = target.missing_tools()
        if missing:
            # A missing tool is a set-up bug, not a reason to skip: scripts/setup.sh installs it.
            pytest.fail(f"{target.name}: missing {', '.join(missing)}; run scripts/setup.sh")
        return target

    @pytest.fixture(scope="session")
    def host_c(cross_build_dir) -> Target:
        return _need(HOST)

    @pytest.fixture(scope="session")
    def cortex_m0plus(cross_build_dir) -> Target:
        """Cortex-M0+ code on qemu-system-arm -M microbit (256 KiB flash, 16 KiB RAM)."""
        return _need(CORTEX_M0PLUS)

    @pytest.fixture(scope="session")
    def cortex_m0plus_big(cross_build_dir) -> Target:
        """Cortex-M0+ code on qemu-system-arm -M mps2-an385 (4 MiB + 4 MiB)."""
        return _need(CORTEX_M0PLUS_BIG)

    @pytest.fixture(scope="session")
    def rv32imc(cross_build_dir) -> Target:
        """rv32imc code on qemu-system-riscv32 -M virt."""
        return _need(RV32IMC)

    @pytest.fixture(scope="session")
    def cross_targets(cross_build_dir) -> dict[str, Target]:
        """host, cortex-m0plus and rv32imc, all present (else the test fails: run scripts/setup.sh)."""
        return {name: _need(TARGETS[name]) for name in ("host", *MCU_TARGETS)}

    @pytest.fixture(params=["host", *MCU_TARGETS])
    def cross_target(request, cross_build_dir) -> Target:
        """Each of host, cortex-m0plus, rv32imc in turn."""
        return _need(TARGETS[request.param])

    @pytest.fixture(params=list(MCU_TARGETS))
    def mcu_target(request, cross_build_dir) -> Target:
        """Each emulated MCU in turn (the ones that can count instructions)."""
        return _need(TARGETS[request.param])
