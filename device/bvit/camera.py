# Camera drivers as frame sources (bvit.frames: .width, .height, .format, .row(y)). An
# adapter has .capture() -> frame, .describe() -> what it delivers, and .close():
#
#     Esp32Camera(cam=None, pixel_format, frame_size, **camera_args)
#                         the ESP32 camera driver (`camera` module): Camera().capture()
#     OpenMVSensor(sensor=None, pixel_format, frame_size)
#                         OpenMV-style `sensor` module: reset, set_pixformat, set_framesize,
#                         skip_frames, then snapshot()
#
# bvit.live has the loop, frame files as a camera (FileCamera), and picks these for
# --input esp32 / openmv. Loaded only with a camera driver: its code takes no RAM otherwise.

from .frames import Frame

FORMATS = ("GRAYSCALE", "RGB565")
# Frame sizes by driver name, (width, height): the ones a model's input is picked from.
ESP32_SIZES = {"R96X96": (96, 96), "R128x128": (128, 128), "QQVGA": (160, 120),
               "QCIF": (176, 144), "HQVGA": (240, 176), "R240X240": (240, 240), "QVGA": (320, 240)}
OPENMV_SIZES = {"QQVGA": (160, 120), "QVGA": (320, 240), "VGA": (640, 480)}


def covering_size(sizes, side):
    """The name of the smallest frame size whose shorter side is at least `side` (the
    model's input; the classifier crops the centre square), else of the largest."""
    fits = [(w * h, name) for name, (w, h) in sizes.items() if min(w, h) >= side]
    if fits:
        return min(fits)[1]
    return max((w * h, name) for name, (w, h) in sizes.items())[1]


def _constant(holder, name, what):
    """holder.NAME (a driver constant) or a ValueError naming what was wanted."""
    v = getattr(holder, name, None)
    if v is None:
        raise ValueError("%s %r: the camera driver has no such constant" % (what, name))
    return v


class _ByteRows(Frame):
    """A frame whose buffer reads as signed bytes (the ESP32 driver hands over a
    memoryview of type 'b'): each row is copied into a bytearray when read, so pixels
    are 0..255. Only the rows the resize needs are copied."""

    def __init__(self, buf, width, height, fmt):
        Frame.__init__(self, buf, width, height, fmt)
        self._row = bytearray(self.stride)

    def row(self, y):
        a = y * self.stride
        self._row[:] = self.buf[a:a + self.stride]
        return self._row, 0


class Esp32Camera:
    """The ESP32 camera driver for MicroPython (`from camera import Camera`,
    github.com/cnadler86/micropython-camera-API). `cam`: a Camera object already set up,
    or None to make one: Camera(pixel_format=PixelFormat.<pixel_format>,
    frame_size=FrameSize.<frame_size>, **camera_args) (camera_args: the board's pins
    on a generic firmware; a board firmware knows them). pixel_format "GRAYSCALE" or
    "RGB565"; frame_size a FrameSize name ("R96X96", "QQVGA", ...). RGB565 comes
    big-endian, as the esp32-camera driver leaves it."""

    NAME = "ESP32 camera driver"

    def __init__(self, cam=None, pixel_format="GRAYSCALE", frame_size="R96X96", **camera_args):
        import camera
        self._mod = camera
        self.setup = None
        if cam is None:
            if pixel_format not in FORMATS:
                raise ValueError("pixel_format %r: use GRAYSCALE or RGB565" % (pixel_format,))
            pf = _constant(camera.PixelFormat, pixel_format, "pixel_format")
            fs = _constant(camera.FrameSize, frame_size, "frame_size")
            cam = camera.Camera(pixel_format=pf, frame_size=fs, **camera_args)
            self.setup = "%s at %s" % (pixel_format, frame_size)
        self.cam = cam

    def describe(self):
        return self.NAME + (": " + self.setup if self.setup else "")

    def _get(self, name):
        # the driver's read-only properties; older releases have get_NAME() methods
        v = getattr(self.cam, name, None)
        if v is None:
            v = getattr(self.cam, "get_" + name)
        return v() if callable(v) else v

    def capture(self):
        buf = self.cam.capture()
        if buf is None:
            raise OSError("camera: no frame (is it initialised?)")
        pf = self._get("pixel_format")
        P = self._mod.PixelFormat
        if pf == P.GRAYSCALE:
            fmt = "GRAYSCALE"
        elif pf == P.RGB565:
            fmt = "RGB565"
        else:
            raise ValueError("camera pixel format %r: use PixelFormat.GRAYSCALE or RGB565" % pf)
        return _ByteRows(buf, self._get("pixel_width"), self._get("pixel_height"), fmt)

    def close(self):
        free = getattr(self.cam, "free_buffer", None)
        if free is not None:
            free()


class OpenMVSensor:
    """OpenMV-style `sensor` module. With pixel_format (GRAYSCALE / RGB565) the sensor is
    set up: reset(), set_pixformat, set_framesize(frame_size, e.g. "QQVGA"),
    skip_frames(time=2000) while it settles; with pixel_format=None it is used as it is
    (a script that set it up itself). snapshot() gives an image with width(), height(),
    format() and bytearray(). OpenMV keeps RGB565 pixels as native 16-bit words
    (little-endian on its Arm chips), hence byteswap=True; byteswap=False for a port
    that stores them big-endian. `sensor`: the module, or None to import it."""

    NAME = "OpenMV sensor"

    def __init__(self, sensor=None, pixel_format=None, frame_size="QQVGA", byteswap=True,
                 settle_ms=2000):
        if sensor is None:
            import sensor
        self.sensor = sensor
        self.byteswap = byteswap
        self.setup = None
        if pixel_format is not None:
            if pixel_format not in FORMATS:
                raise ValueError("pixel_format %r: use GRAYSCALE or RGB565" % (pixel_format,))
            pf = _constant(sensor, pixel_format, "pixel_format")
            fs = _constant(sensor, frame_size, "frame_size")
            sensor.reset()
            sensor.set_pixformat(pf)
            sensor.set_framesize(fs)
            sensor.skip_frames(time=settle_ms)
            self.setup = "%s at %s" % (pixel_format, frame_size)

    def describe(self):
        return self.NAME + (": " + self.setup if self.setup else "")

    def capture(self):
        s = self.sensor
        img = s.snapshot()
        f = img.format()
        if f == s.GRAYSCALE:
            fmt = "GRAYSCALE"
        elif f == s.RGB565:
            fmt = "RGB565"
        else:
            raise ValueError("sensor pixel format %r: use sensor.GRAYSCALE or sensor.RGB565" % f)
        return Frame(img.bytearray(), img.width(), img.height(), fmt,
                     byteswap=self.byteswap and fmt == "RGB565")

    def close(self):
        pass
