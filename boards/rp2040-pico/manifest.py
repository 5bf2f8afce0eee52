# MicroPython freeze manifest for rp2040-pico: the port's usual frozen modules, then the butterflyvit
# device code (and optionally a model, BVIT_MODEL_PY) from boards/device_manifest.py.
# Build: scripts/build_firmware.py (docs/firmware.md), or FROZEN_MANIFEST=<this file>.
include("$(PORT_DIR)/boards/manifest.py")
include("../device_manifest.py")
