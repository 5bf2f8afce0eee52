"""The boards the product designs for (PRODUCT.md's table), as data for reports.

`flash` is the chip's flash; `fs` is about what a stock MicroPython build leaves for the
file system (where a packed model is copied with mpremote), taken from the ports' default
partition layouts (rp2 PICO: 1408 KB; ESP32 4 MB: the 0x200000 "vfs" partition; ESP32-S3
8 MB and ESP32-C3 4 MB likewise). They are figures to design for, not measurements: a
custom partition table or frozen (ROMFS) model changes them. `heap` is what MicroPython has
free for activations (weights stay in flash, docs/model-format.md); RAM use is the
device's business and is measured there.
"""

from dataclasses import dataclass

KB = 1024
MB = 1024 * 1024


@dataclass(frozen=True)
class Board:
    name: str        # short id used on the command line
    title: str
    cpu: str
    sram: int        # bytes
    heap: int        # bytes free to MicroPython, about
    flash: int       # bytes
    fs: int          # bytes of file system on a stock MicroPython build, about
    psram: int = 0   # bytes (0: none)
    camera: str = "-"

    def fits_flash(self, nbytes: int) -> bool:
        """Does a model file of `nbytes` fit the file system of a stock build?"""
        return nbytes <= self.fs


BOARDS = {
    "pico": Board("pico", "Raspberry Pi Pico (RP2040)", "2x Cortex-M0+ 133 MHz, no FPU",
                  264 * KB, 190 * KB, 2 * MB, 1408 * KB, 0, "OV7670 / ArduCAM, PIO driver"),
    "esp32-cam": Board("esp32-cam", "ESP32-CAM (ESP32)", "2x Xtensa LX6 240 MHz",
                       520 * KB, 100 * KB, 4 * MB, 2 * MB, 4 * MB, "OV2640"),
    "esp32-s3-eye": Board("esp32-s3-eye", "ESP32-S3-EYE", "2x Xtensa LX7 240 MHz",
                          512 * KB, 150 * KB, 8 * MB, 6 * MB, 8 * MB, "OV2640"),
    "esp32-c3": Board("esp32-c3", "ESP32-C3", "RISC-V rv32imc 160 MHz",
                      400 * KB, 120 * KB, 4 * MB, 2 * MB, 0, "-"),
}


def flash_table(nbytes: int) -> list[dict]:
    """Per board: does a file of `nbytes` fit its file system, and the share it takes."""
    return [{"board": b.name, "title": b.title, "flash": b.flash, "fs": b.fs,
             "fits": b.fits_flash(nbytes), "share_of_fs": nbytes / b.fs}
            for b in BOARDS.values()]
