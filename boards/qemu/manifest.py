# MicroPython freeze manifest for the qemu port (BOARD=MPS2_AN385, an emulated Cortex-M3):
# the butterflyvit device code (and optionally a model, BVIT_MODEL_PY) from
# boards/device_manifest.py, as on a real board. The port's own default manifest only
# freezes its test modules, so nothing of the port's is included.
# Build: scripts/build_firmware.py --port qemu (see docs/firmware.md).
include("../device_manifest.py")
