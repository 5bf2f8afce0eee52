# Frames for the classifier: from memory, from raw frame files, from camera drivers.
#
# Frames (bvit.frames: Frame for a buffer in RAM, FrameFile / frame_file for a raw file
# read row by row) have .width, .height, .format and .row(y). Camera adapters:
#
#     Esp32Camera(cam)                   the ESP32 camera driver: Camera().capture()
#     OpenMVSensor(sensor)               OpenMV-style sensor.snapshot()
#     FileCamera([paths], size)          frame files in turn, like a camera (tests, no camera)
#
# A camera adapter has .capture() -> frame; live(classifier, camera) is the
# grab -> classify -> print loop.

from .frames import Frame, frame_file

class FileCamera:
    """Frame files in turn (repeating), with the camera interface."""

    def __init__(self, paths, size):
        if isinstance(paths, str):
            paths = [paths]
        self.paths = list(paths)
        self.size = size
        self._i = 0
        self._open = None

    def capture(self):
        if self._open is not None:
            self._open.close()
        p = self.paths[self._i % len(self.paths)]
        self._i += 1
        self._open = frame_file(p, self.size)
        return self._open

    def close(self):
        if self._open is not None:
            self._open.close()
            self._open = None


class Esp32Camera:
    """The ESP32 camera driver for MicroPython (`from camera import Camera`,
    github.com/cnadler86/micropython-camera-API): GRAYSCALE or RGB565 frames, big-endian
    RGB565 as the esp32-camera driver leaves them. `cam`: a Camera object, or None to make
    one with Camera(pixel_format=..., frame_size=...) (defaults: GRAYSCALE, 96x96)."""

    def __init__(self, cam=None, pixel_format="GRAYSCALE", frame_size=None):
        import camera
        self._mod = camera
        if cam is None:
            kw = {"pixel_format": getattr(camera.PixelFormat, pixel_format)}
            kw["frame_size"] = frame_size if frame_size is not None else camera.FrameSize.R96X96
            cam = camera.Camera(**kw)
        self.cam = cam

    def _get(self, name):
        v = getattr(self.cam, name, None)
        if v is None:
            v = getattr(self.cam, "get_" + name)
        return v() if callable(v) else v

    def capture(self):
        cam = self.cam
        buf = cam.capture()
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
        return Frame(buf, self._get("pixel_width"), self._get("pixel_height"), fmt)

    def close(self):
        free = getattr(self.cam, "free_buffer", None)
        if free is not None:
            free()


class OpenMVSensor:
    """OpenMV-style `sensor` module: sensor.snapshot() gives an image with width(),
    height(), format() and bytearray(). OpenMV keeps RGB565 pixels as native 16-bit words
    (little-endian on its Arm chips), hence byteswap=True by default; pass byteswap=False
    for a port that stores them big-endian. `sensor`: the module, or None to import it."""

    def __init__(self, sensor=None, byteswap=True):
        if sensor is None:
            import sensor
        self.sensor = sensor
        self.byteswap = byteswap

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


def live(net, cam, top_k=3, frames=0, out=print):
    """grab -> classify -> print the top-k classes and the frame rate; frames=0: forever."""
    from .timing import ticks_ms, ticks_diff
    n = 0
    t0 = ticks_ms()
    while frames <= 0 or n < frames:
        frame = cam.capture()
        logits = net.classify_frame(frame)
        n += 1
        dt = ticks_diff(ticks_ms(), t0)
        top = net.top(logits, top_k)
        probs = net.probabilities(logits)
        out("%d: %s  (%.2f fps)" % (n, ", ".join("%s %.2f" % (net.classes[i], probs[i]) for i, _ in top),
                                    n * 1000 / dt if dt > 0 else 0.0))
    return n
