# ButterflyViT live on an ESP32-CAM (AI-Thinker board: ESP32 with 4 MB PSRAM, OV2640).
#
# Firmware: MicroPython with the `camera` module (github.com/cnadler86/micropython-camera-API;
# its releases have ready-made firmware; the driver needs PSRAM). Package: butterflyvit mpy
# --arch xtensawin. Installing, running, stopping, saving a frame: examples/README.md.
#
# The camera delivers the model's pixel format (RGB565 for a colour model) at the smallest
# frame size covering its input (R96X96 up to 96x96 models); "pixel_format" / "frame_size"
# below, or in a classify.json on the board, choose others. Each frame prints the top
# classes, its ms, the heap and the frame rate. On the unix port, a folder of frame files
# stands in for the camera:
#
#     MICROPYPATH=device micropython examples/esp32_cam.py --model models/pico-fmnist.bvit \
#         --input examples/frames --frames 3

CONFIG = {
    "input": "esp32",
    "frames": 0,              # until Ctrl-C
    "save": "last",           # then save the last frame as last_WxH.gray / .rgb565
    # camera.Camera() keyword arguments: the AI-Thinker pins (a firmware built for the
    # board knows them; a generic ESP32 firmware needs them)
    "camera_args": {
        "data_pins": [5, 18, 19, 21, 36, 39, 34, 35],   # D0..D7
        "vsync_pin": 25, "href_pin": 23, "pclk_pin": 22, "xclk_pin": 0,
        "sda_pin": 26, "scl_pin": 27, "powerdown_pin": 32, "reset_pin": -1,
        "xclk_freq": 20000000,
    },
}

import sys

from bvit.app import main

status = main(CONFIG)
if status and sys.argv and sys.argv[0].endswith(".py"):   # the unix port: the exit status
    sys.exit(status)
