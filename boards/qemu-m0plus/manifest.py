# MicroPython freeze manifest for the qemu port built as qemu-m0plus (BOARD=MPS2_AN385, the
# code compiled for ARMv6-M: what a Cortex-M0+ runs): the same as boards/qemu.
# Build: scripts/build_firmware.py --board qemu-m0plus (see docs/firmware.md).
include("../device_manifest.py")
