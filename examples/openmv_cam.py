# ButterflyViT live on an OpenMV Cam (H7, H7 Plus, RT1062) or another board whose
# MicroPython has OpenMV's `sensor` module.
#
# Package: butterflyvit mpy --arch armv7emdp (H7, RT1062: Cortex-M7). Installing, running,
# stopping, saving a frame: examples/README.md (or copy the files onto the camera's USB
# drive and run this script from the OpenMV IDE).
#
# The sensor is set up for the model: reset, its pixel format (RGB565 for a colour model),
# QQVGA (160x120; the classifier crops the centre square and resizes), 2 s to settle;
# "pixel_format" / "frame_size" below, or in a classify.json, choose others. Each frame
# prints the top classes, its ms, the heap and the frame rate. On the unix port, a folder
# of frame files stands in for the camera:
#
#     MICROPYPATH=device micropython examples/openmv_cam.py --model models/pico-fmnist.bvit \
#         --input examples/frames --frames 3

CONFIG = {
    "input": "openmv",
    "frames": 0,              # until Ctrl-C
    "save": "last",           # then save the last frame as last_WxH.gray / .rgb565
}

import sys

from bvit.app import main

status = main(CONFIG)
if status and sys.argv and sys.argv[0].endswith(".py"):   # the unix port: the exit status
    sys.exit(status)
