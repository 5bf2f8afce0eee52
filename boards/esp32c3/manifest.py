# MicroPython freeze manifest for esp32c3: the butterflyvit device code frozen into the firmware
# (bytecode runs from flash, so importing it costs no heap for code).
# Build: see README.md beside this file (FROZEN_MANIFEST=<this file>).
# Relative base paths are relative to this file (boards/esp32c3/).
include("$(PORT_DIR)/boards/manifest.py")  # the port's usual frozen modules

package("bvit", base_path="../../device")        # device/bvit/: loader, kernels, classifier
module("classify.py", base_path="../../device")   # device/classify.py: the command-line entry

# Optionally a model, frozen as a bytes object that the board reads in place from flash:
#   butterflyvit boards --freeze MODEL.bvit --out build/bvitmodel.py
#   BVIT_MODEL_PY=$PWD/build/bvitmodel.py make ... FROZEN_MANIFEST=...
# then on the board: import bvitmodel; Classifier(bvitmodel.MODEL)
# (scripts/build_firmware.py does all this.)  Not `bvit_model`: the freezer names each module's
# C symbols by its path with "/" -> "_", so bvit_model.py would clash with bvit/model.py.
import os

_model = os.environ.get("BVIT_MODEL_PY")
if _model:
    module(os.path.basename(_model), base_path=os.path.dirname(os.path.abspath(_model)))
