# ButterflyViT live on an ESP32-S3-EYE (Espressif: ESP32-S3 with 8 MB PSRAM, OV2640).
#
# Firmware: MicroPython with the `camera` module (github.com/cnadler86/micropython-camera-API;
# its releases have ready-made firmware). Package: butterflyvit mpy --arch xtensawin.
# Installing, running, stopping, saving a frame: examples/README.md.
#
# The camera delivers the model's pixel format (RGB565 for a colour model) at the smallest
# frame size covering its input (R96X96 up to 96x96 models); "pixel_format" / "frame_size"
# below, or in a classify.json on the board, choose others. Each frame prints the top
# classes, its ms, the heap and the frame rate. On the unix port, a folder of frame files
# stands in for the camera:
#
#     MICROPYPATH=device micropython examples/esp32_s3_eye.py --model models/pico-fmnist.bvit \
#         --input examples/frames --frames 3

CONFIG = {
    "input": "esp32",
    "frames": 0,              # until Ctrl-C
    "save": "last",           # then save the last frame as last_WxH.gray / .rgb565
    # camera.Camera() keyword arguments: the ESP32-S3-EYE pins (a firmware built for the
    # board knows them; a generic ESP32-S3 firmware needs them)
    "camera_args": {
        "data_pins": [11, 9, 8, 10, 12, 18, 17, 16],    # D0..D7
        "vsync_pin": 6, "href_pin": 7, "pclk_pin": 13, "xclk_pin": 15,
        "sda_pin": 4, "scl_pin": 5, "powerdown_pin": -1, "reset_pin": -1,
        "xclk_freq": 20000000,
    },
}

import sys

from bvit.app import main

status = main(CONFIG)
if status and sys.argv and sys.argv[0].endswith(".py"):   # the unix port: the exit status
    sys.exit(status)
