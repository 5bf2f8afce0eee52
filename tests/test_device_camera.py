"""Camera adapters (device/bvit/camera.py) on the real MicroPython, with stand-ins for the
camera drivers (no camera here): the ESP32 `camera` module API (Camera().capture(),
cnadler86/micropython-camera-API) and OpenMV's `sensor.snapshot()`. The frames they hand
over must give the host's logits; the live loop prints top-k and fps.
"""

import json

import numpy as np

from butterflyvit.harness.protocol import read_jobs
from butterflyvit.intmodel import rgb_to_rgb565
from test_intmodel import tiny_bytes, tiny_model

# The ESP32 camera driver's Python API, as far as the adapter uses it; frames come from
# files named in FRAMES (format, width, height, path), in turn.
FAKE_CAMERA = r"""
import json
FRAMES = json.load(open(__file__.rsplit("/", 1)[0] + "/camera_frames.json"))

class PixelFormat:
    RGB565 = 0
    YUV422 = 1
    GRAYSCALE = 3
    JPEG = 4

class FrameSize:
    R96X96 = 0
    QQVGA = 1

class Camera:
    def __init__(self, pixel_format=PixelFormat.RGB565, frame_size=FrameSize.QQVGA, **kw):
        self._i = 0
        self.freed = 0

    def capture(self):
        fmt, w, h, path = FRAMES[self._i % len(FRAMES)]
        self._i += 1
        self._cur = (fmt, w, h)
        with open(path, "rb") as f:
            return memoryview(f.read())

    @property
    def pixel_format(self):
        return PixelFormat.GRAYSCALE if self._cur[0] == "GRAYSCALE" else PixelFormat.RGB565

    def get_pixel_width(self):        # the older, method-style API
        return self._cur[1]

    @property
    def pixel_height(self):
        return self._cur[2]

    def free_buffer(self):
        self.freed += 1
"""

# OpenMV's sensor module: snapshot() -> image with width(), height(), format(), bytearray();
# RGB565 pixels as little-endian 16-bit words.
FAKE_SENSOR = r"""
import json
FRAMES = json.load(open(__file__.rsplit("/", 1)[0] + "/sensor_frames.json"))
GRAYSCALE = 2
RGB565 = 1
_i = [0]

class _Image:
    def __init__(self, fmt, w, h, data):
        self._f, self._w, self._h, self._d = fmt, w, h, data
    def width(self):
        return self._w
    def height(self):
        return self._h
    def format(self):
        return self._f
    def bytearray(self):
        return self._d

def snapshot():
    fmt, w, h, path = FRAMES[_i[0] % len(FRAMES)]
    _i[0] += 1
    with open(path, "rb") as f:
        return _Image(GRAYSCALE if fmt == "GRAYSCALE" else RGB565, w, h, bytearray(f.read()))
"""

# The board agent (device/bvit/agent.py) classifies the adapters' frames: one checked
# result line each, numbered 0-2 (ESP32) and 3-4 (OpenMV).
SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from bvit.agent import Agent
from bvit import camera
a = Agent(sys.argv[1] + "/model.bvit")
a.ready()
cam = camera.Esp32Camera()
for i in range(3):
    a.classify(i, cam.capture())
cam.close()
print("freed", cam.cam.freed)
cam = camera.OpenMVSensor()
for i in range(3, 5):
    a.classify(i, cam.capture())
lines = []
n = camera.live(a.net, camera.FileCamera([sys.argv[1] + "/a_12x12.gray", sys.argv[1] + "/b_16x9.rgb565"], None),
                top_k=2, frames=3, out=lines.append)
print("live", n)
for line in lines:
    print(line)
"""


def test_camera_adapters_give_the_host_logits(micropython, tmp_path):
    rng = np.random.default_rng(11)
    m = tiny_model("rgb")
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("rgb"))
    gray = rng.integers(0, 256, (15, 20), dtype=np.uint8)
    rgb = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    be = rgb_to_rgb565(rgb)                                  # big-endian, as the spec says
    le = np.frombuffer(be, ">u2").astype("<u2").tobytes()    # OpenMV: little-endian words
    files = {"g.gray": gray.tobytes(), "c.rgb565": be, "le.rgb565": le}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    esp = [("GRAYSCALE", 20, 15, str(tmp_path / "g.gray")), ("RGB565", 12, 12, str(tmp_path / "c.rgb565"))]
    omv = [("RGB565", 12, 12, str(tmp_path / "le.rgb565")), ("GRAYSCALE", 20, 15, str(tmp_path / "g.gray"))]
    (tmp_path / "camera_frames.json").write_text(json.dumps(esp))
    (tmp_path / "sensor_frames.json").write_text(json.dumps(omv))
    (tmp_path / "camera.py").write_text(FAKE_CAMERA)
    (tmp_path / "sensor.py").write_text(FAKE_SENSOR)
    (tmp_path / "a_12x12.gray").write_bytes(rng.integers(0, 256, 144, dtype=np.uint8).tobytes())
    (tmp_path / "b_16x9.rgb565").write_bytes(rng.integers(0, 256, 288, dtype=np.uint8).tobytes())
    script = tmp_path / "cams.py"
    script.write_text(SCRIPT)
    stdout = micropython.run(script, args=[tmp_path], heapsize="1m").check().stdout

    def ref(fmt, w, h, buf):
        return [int(v) for v in m.forward_frame(buf, w, h, fmt).logits]

    g, c = ref("GRAYSCALE", 20, 15, gray.tobytes()), ref("RGB565", 12, 12, be)
    (got,) = read_jobs(stdout)
    assert [r["index"] for r in got["results"]] == [0, 1, 2, 3, 4]
    assert [r["logits"] for r in got["results"]] == [g, c, g, c, g]     # ESP32 x3, OpenMV x2
    out = [line for line in stdout.splitlines() if not line.startswith("BVIT")]
    assert out[0] == "freed 1"
    assert out[1] == "live 3"
    for i, line in enumerate(out[2:5]):
        assert line.startswith(f"{i + 1}: ") and line.endswith(" fps)"), line
        assert line.count(",") == 1                          # two classes: "name p, name p"
