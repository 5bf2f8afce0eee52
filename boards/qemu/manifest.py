# MicroPython freeze manifest for the qemu port (BOARD=MPS2_AN385, an emulated Cortex-M3):
# the butterflyvit device code frozen into the firmware, as on a real board.  The port's own
# default manifest only freezes its test modules, so nothing of the port's is included.
# Build: scripts/build_firmware.py --port qemu (see docs/firmware.md).
# Relative base paths are relative to this file (boards/qemu/).

package("bvit", base_path="../../device")        # device/bvit/: loader, kernels, classifier
module("classify.py", base_path="../../device")   # device/classify.py: the command-line entry

# Optionally a model (BVIT_MODEL_PY, as in the other boards' manifests): bvitmodel.py from
#   butterflyvit boards --freeze MODEL.bvit --out build/bvitmodel.py
import os

_model = os.environ.get("BVIT_MODEL_PY")
if _model:
    module(os.path.basename(_model), base_path=os.path.dirname(os.path.abspath(_model)))
