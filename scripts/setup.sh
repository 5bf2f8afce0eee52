#!/usr/bin/env bash
# One set-up path for a fresh Debian/Ubuntu machine: system packages, then a virtual
# environment in .venv with the project installed. Safe and quick to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests and the main job use (each is a real part, see README).
APT_PACKAGES=(
    socat                       # the unix MicroPython as a serial device (pty)
    dataset-fashion-mnist       # training / evaluation data (IDX files)
    gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm   # Cortex-M0+ builds, micro:bit
    gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc  # rv32imc builds
    firmware-microbit-micropython   # a real MicroPython firmware under qemu -M microbit
    gcc make python3-venv           # host C builds (kernels under sanitizers), the venv
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Node.js runs the WebAssembly MicroPython (no viper) that the device tests also use. Any
# Node.js with npm will do (some images ship NodeSource's, which conflicts with Debian's npm).
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "setup: installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: these system packages are missing; install them with:" >&2
        echo "    sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

# Python environment. The stamp records what was installed, so re-runs skip pip.
PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
stamp=.venv/.butterflyvit-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]] || ! .venv/bin/python -c "import butterflyvit" 2>/dev/null; then
    echo "setup: installing the butterflyvit package and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test]"
    echo "$want" > "$stamp"
fi
# The WebAssembly MicroPython from npm (package-lock.json pins it); a test tool only.
if [[ ! -f node_modules/.package-lock.json ]] || ! cmp -s package-lock.json node_modules/.butterflyvit-lock; then
    echo "setup: installing the WebAssembly MicroPython (npm ci)"
    npm ci --silent --no-audit --no-fund
    cp package-lock.json node_modules/.butterflyvit-lock
fi
# The C training kernels, built now rather than at the first training step; training runs
# without them (slower), so a failure here is reported, not fatal (docs/training.md).
.venv/bin/python -m butterflyvit.train_kernels \
    || echo "setup: training will use PyTorch ops for the butterflies (see above)" >&2
echo "setup: ready (.venv/bin/butterflyvit, .venv/bin/micropython, .venv/bin/pytest)"
