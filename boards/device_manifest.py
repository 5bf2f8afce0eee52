# The butterflyvit part of every board's freeze manifest (boards/<name>/manifest.py includes
# it after its port's own): the device code frozen into the firmware, so its bytecode runs
# from flash and importing it costs no heap for code. Base paths are relative to this file.
package("bvit", base_path="../device")        # device/bvit/: loader, kernels, classifier
module("classify.py", base_path="../device")   # device/classify.py: the command-line entry

# Optionally a model, frozen as a bytes object that the board reads in place from flash:
#   butterflyvit boards --freeze MODEL.bvit --out build/bvitmodel.py
#   BVIT_MODEL_PY=$PWD/build/bvitmodel.py make ... FROZEN_MANIFEST=...
# then on the board classify.py finds it by itself (or: import bvitmodel;
# Classifier(bvitmodel.MODEL)). scripts/build_firmware.py --model does all this. Not
# `bvit_model`: the freezer names each module's C symbols by its path with "/" -> "_", so
# bvit_model.py would clash with bvit/model.py.
import os

_model = os.environ.get("BVIT_MODEL_PY")
if _model:
    module(os.path.basename(_model), base_path=os.path.dirname(os.path.abspath(_model)))
