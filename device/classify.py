# Classify an image on the board with a ButterflyViT model file:
#
#     mpremote cp pico-fmnist.bvit :model.bvit      # once: the model (and the bvit package)
#     mpremote run classify.py                      # prints the top classes, ms and RAM
#
# Options: CONFIG below, or a classify.json on the board with any of its keys (so nothing
# here needs editing), or, on the unix port, arguments: micropython classify.py --model
# M.bvit --input IMG.gray --size 28x28 --top-k 3 --backend python --weight-buffer 2048
# --frames 1 --logits --pixel-format RGB565 --frame-size QQVGA --save last. docs/device.md
# has the details; examples/ has camera scripts for ESP32-CAM, ESP32-S3-EYE and OpenMV.

CONFIG = {
    "model": "model.bvit",    # a file; "/rom/NAME" (ROMFS, read in place); "module:NAME" (frozen bytes NAME.MODEL)
    "input": "image.gray",    # a raw frame file NAME.gray / NAME.rgb565; a camera: "esp32", "openmv"; a folder of frame files
    "size": None,             # the frame file's "WIDTHxHEIGHT"; None: from a name like img_160x120.gray, else the model's
    "top_k": 3,               # classes to print
    "backend": "auto",        # kernels: "auto" (native, else viper, else python), "native", "viper", "python"
    "weight_buffer": 4096,    # bytes of RAM for weights read from flash (2048 on 100 KB boards)
    "verify": True,           # check the model file's CRC-32 when loading
    "frames": 1,              # camera: frames to classify, 0 = until Ctrl-C (the live loop)
    "logits": False,          # also print the integer logits (to compare with the host)
    "pixel_format": None,     # camera: "GRAYSCALE" or "RGB565"; None: the model's (RGB565 for a colour model)
    "frame_size": None,       # camera: the driver's frame size ("R96X96", "QQVGA", ...); None: the smallest covering the model's input
    "camera_args": None,      # ESP32 camera: more keyword arguments for camera.Camera(), e.g. the board's pins
    "save": None,             # camera: "last" saves the last frame as last_WxH.gray / .rgb565 when the loop ends
}

import sys

from bvit.app import main

status = main(CONFIG)
if status and sys.argv and sys.argv[0].endswith(".py"):   # run as a script (unix port); not over
    sys.exit(status)                                      # the REPL (mpremote run): it would end
