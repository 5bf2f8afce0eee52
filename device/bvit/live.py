# The live loop: grab -> classify -> one line a frame, and the last frame saved for the host.
#
#     open_camera(cfg, net)    the camera for --input (esp32, openmv, a folder of frame
#                              files), set up for the model
#     run(cfg, net, cam)       classify.py's camera job: what the camera gives, the loop
#     live(net, cam, ...)      the loop itself, for any camera (.capture(), .close())
#     FileCamera(paths, size)  frame files in turn, like a camera (tests; no camera)
#     save_frame(frame, stem)  a frame as the file STEM_WxH.gray / .rgb565 the host reads
#
# The drivers' adapters (bvit.camera) are imported only for a camera driver.

import gc

from .frames import frame_file

CAMERAS = {"esp32": ("camera", "the ESP32 camera driver"), "openmv": ("sensor", "OpenMV's camera driver")}
EXT = {"GRAYSCALE": ".gray", "RGB565": ".rgb565"}


def model_pixel_format(channels):
    """The frame format a model takes: RGB565 for colour (3 channels), else GRAYSCALE."""
    return "RGB565" if channels == 3 else "GRAYSCALE"


class FileCamera:
    """Frame files in turn (repeating), with the camera interface."""

    def __init__(self, paths, size=None):
        if isinstance(paths, str):
            paths = [paths]
        self.paths = list(paths)
        if not self.paths:
            raise ValueError("FileCamera: no frame files")
        self.size = size
        self._i = 0
        self._open = None

    def describe(self):
        return "%d frame file%s (%s...)" % (len(self.paths), "" if len(self.paths) == 1 else "s",
                                            self.paths[0])

    def capture(self):
        self.close()
        p = self.paths[self._i % len(self.paths)]
        self._i += 1
        self._open = frame_file(p, self.size)
        return self._open

    def close(self):
        if self._open is not None:
            self._open.close()
            self._open = None


def folder_camera(path):
    """A FileCamera over the frame files (*.gray, *.rgb565, named NAME_WxH.ext) of a
    folder, in name order."""
    import os
    from .frames import EXTENSIONS
    names = sorted(n for n in os.listdir(path) if n[n.rfind("."):].lower() in EXTENSIONS)
    if not names:
        raise ValueError("%s: no frame files (NAME_WxH.gray or NAME_WxH.rgb565) in this folder" % path)
    return FileCamera([path.rstrip("/") + "/" + n for n in names])


def open_camera(cfg, net):
    """The camera for --input esp32 / openmv / a folder of frame files, set up for the
    model: its pixel format (RGB565 for a colour model) unless pixel_format says, the
    smallest frame size that covers its input unless frame_size says. A board without
    the driver module gets an OptionError saying so, and what to give instead."""
    from .app import OptionError
    name = cfg["input"]
    if name not in CAMERAS:
        return folder_camera(name)
    module, what = CAMERAS[name]
    try:
        __import__(module)
    except ImportError:
        raise OptionError("--input %s: this board has no '%s' module (%s); use --input "
                          "NAME.gray or NAME.rgb565, a raw frame file, or a folder of them"
                          % (name, module, what))
    from . import camera
    c = net.cfg
    fmt = cfg["pixel_format"] or model_pixel_format(c["in_channels"])
    sizes = camera.ESP32_SIZES if name == "esp32" else camera.OPENMV_SIZES
    size = cfg["frame_size"] or camera.covering_size(sizes, c["image_size"])
    try:
        if name == "esp32":
            return camera.Esp32Camera(pixel_format=fmt, frame_size=size, **(cfg["camera_args"] or {}))
        return camera.OpenMVSensor(pixel_format=fmt, frame_size=size)
    except (ValueError, TypeError) as e:
        raise OptionError("--input %s: %s" % (name, e))


def run(cfg, net, cam):
    """classify.py's camera job: say what the camera delivers, the loop, close it."""
    c = net.cfg
    print("camera: %s; the model takes %dx%d %s; %s" % (
        cam.describe(), c["image_size"], c["image_size"], model_pixel_format(c["in_channels"]),
        "Ctrl-C stops" if cfg["frames"] == 0 else "%d frames" % cfg["frames"]))
    if c["in_channels"] == 3 and cfg["pixel_format"] == "GRAYSCALE":
        print("note: pixel_format GRAYSCALE: this colour model will see grey frames")
    try:
        live(net, cam, cfg["top_k"], cfg["frames"], save=cfg["save"], print_logits=cfg["logits"])
    finally:
        cam.close()


def save_frame(frame, stem):
    """Write a frame as the raw frame file STEM_WxH.gray / .rgb565 (RGB565 big-endian,
    whatever the camera's byte order), row by row; returns the file name."""
    path = "%s_%dx%d%s" % (stem, frame.width, frame.height, EXT[frame.format])
    n = frame.width * (1 if frame.format == "GRAYSCALE" else 2)
    with open(path, "wb") as f:
        for y in range(frame.height):
            row, r0 = frame.row(y)
            f.write(memoryview(row)[r0:r0 + n])
    return path


def _kb(n):
    return "%.1f KB" % (n / 1024)


def live(net, cam, top_k=3, frames=0, out=print, save=None, print_logits=False):
    """grab -> classify -> one line a frame: the top-k classes with their scores, the
    frame's ms (camera ms), the heap in use and free, the frames per second so far.
    frames=0: until Ctrl-C. save: a file name stem: when the loop ends (after `frames`,
    or at Ctrl-C) the last frame (Ctrl-C between two frames: one more) is written as
    STEM_WxH.ext, with its logits, to classify on the host and compare. Returns the frames
    classified."""
    from .timing import ticks_ms, ticks_diff
    n = 0
    frame = logits = None
    t_start = ticks_ms()
    try:
        while frames <= 0 or n < frames:
            frame = logits = None           # a capture may hand the last buffer back
            t0 = ticks_ms()
            frame = cam.capture()
            t1 = ticks_ms()
            logits = net.classify_frame(frame)
            t2 = ticks_ms()
            n += 1
            total = ticks_diff(t2, t_start)
            gc.collect()                    # the heap the loop needs, not garbage
            probs = net.probabilities(logits)
            top = ", ".join("%s %.2f" % (net.classes[i], probs[i]) for i, _ in net.top(logits, top_k))
            out("frame %d: %s | %d ms (camera %d ms) | heap %s used, %s free | %.2f fps"
                % (n, top, ticks_diff(t2, t0), ticks_diff(t1, t0), _kb(gc.mem_alloc()),
                   _kb(gc.mem_free()), n * 1000 / total if total > 0 else 0.0))
            if print_logits:
                out("logits: " + " ".join(str(v) for v in logits))
    except KeyboardInterrupt:
        out("stopped after %d frames" % n)
        if save and frame is None and n:    # Ctrl-C came between two frames: take one more
            frame = cam.capture()
    if save and frame is not None:
        if logits is None:                  # Ctrl-C came while it was being classified
            logits = net.classify_frame(frame)
        path = save_frame(frame, save)
        out("saved the last frame as %s; its logits: %s" % (path, " ".join(str(v) for v in logits)))
        out("compare on the host: mpremote cp :%s . && butterflyvit classify MODEL.bvit %s --json"
            % (path, path))
    return n
