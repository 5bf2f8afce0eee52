"""The camera loop on the real MicroPython (unix port), with stand-ins for the camera drivers
(no camera here). The stand-ins follow the drivers' documented Python APIs as far as our code
uses them and print every set-up call they get, so these tests check OUR calls and frame
handling, not the drivers:

- ESP32 `camera` module (github.com/cnadler86/micropython-camera-API): Camera(pixel_format=,
  frame_size=, pins...), capture() -> memoryview of type 'b' (signed bytes, as the driver
  returns it), pixel_format / pixel_width / pixel_height properties (get_pixel_width() in
  older releases), free_buffer();
- OpenMV `sensor` module: reset(), set_pixformat(), set_framesize(), skip_frames(time=),
  snapshot() -> image with width(), height(), format(), bytearray(); RGB565 as little-endian
  16-bit words.

What must hold: the camera is set up for the model (RGB565 for a colour model, a frame size
covering its input, classify.json overrides), every frame gives the host's logits, each frame
prints top classes, ms, heap and fps, the saved last frame is classified on the host with the
same logits, and the examples run on the unix port with a folder of frame files as camera.
"""

import json
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from beds.micropython import REPO
from butterflyvit.cli import main as cli
from butterflyvit.intmodel import IntModel, rgb_to_rgb565
from test_device_model import mpy_package
from test_intmodel import tiny_bytes, tiny_model

EXAMPLES = REPO / "examples"
SHIPPED = REPO / "models" / "pico-fmnist.bvit"

# The ESP32 camera driver; frames come from camera_frames.json: {format: [[w, h, path]...]},
# the ones of the pixel format the camera was made with, in turn.
FAKE_CAMERA = r"""
import json
from array import array
FRAMES = json.load(open(__file__.rsplit("/", 1)[0] + "/camera_frames.json"))

class PixelFormat:
    RGB565 = 0
    YUV422 = 1
    GRAYSCALE = 3
    JPEG = 4

class FrameSize:
    R96X96 = 0
    QQVGA = 1
    R128x128 = 2
    QVGA = 6

_NAMES = {0: "RGB565", 3: "GRAYSCALE"}

class Camera:
    def __init__(self, pixel_format=PixelFormat.RGB565, frame_size=FrameSize.QVGA, **kw):
        print("FAKE Camera", json.dumps({"pixel_format": pixel_format, "frame_size": frame_size,
                                         "kw": kw}))
        self._fmt = pixel_format
        self._i = 0
        self.freed = 0

    def capture(self):
        frames = FRAMES[_NAMES[self._fmt]]
        w, h, path = frames[self._i % len(frames)]
        self._i += 1
        self._cur = (w, h)
        with open(path, "rb") as f:
            return memoryview(array("b", f.read()))     # signed bytes, as the driver's

    @property
    def pixel_format(self):
        return self._fmt

    def get_pixel_width(self):        # the older, method-style API
        return self._cur[0]

    @property
    def pixel_height(self):
        return self._cur[1]

    def free_buffer(self):
        self.freed += 1
        print("FAKE free_buffer")
"""

# OpenMV's sensor module: frames from sensor_frames.json as for the camera above, RGB565
# files stored little-endian (the board's native 16-bit words).
FAKE_SENSOR = r"""
import json
FRAMES = json.load(open(__file__.rsplit("/", 1)[0] + "/sensor_frames.json"))
GRAYSCALE = 2
RGB565 = 1
QQVGA = 5
QVGA = 6
_state = {"fmt": RGB565, "i": 0}

def reset():
    print("FAKE reset()")

def set_pixformat(f):
    print("FAKE set_pixformat(%d)" % f)
    _state["fmt"] = f

def set_framesize(s):
    print("FAKE set_framesize(%d)" % s)

def skip_frames(n=None, time=None):
    print("FAKE skip_frames(time=%r)" % time)

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
    fmt = _state["fmt"]
    frames = FRAMES["GRAYSCALE" if fmt == GRAYSCALE else "RGB565"]
    w, h, path = frames[_state["i"] % len(frames)]
    _state["i"] += 1
    with open(path, "rb") as f:
        return _Image(fmt, w, h, bytearray(f.read()))
"""

FRAME_LINE = re.compile(r"^frame (\d+): (.+) \| (\d+) ms \(camera (\d+) ms\) \| heap ([\d.]+) KB used, "
                        r"([\d.]+) KB free \| ([\d.]+) fps$")


def parse_frames(out: str) -> list:
    """One dict per `frame N: ...` line, with the logits line that follows it (--logits)."""
    lines = out.splitlines()
    frames = []
    for i, line in enumerate(lines):
        m = FRAME_LINE.match(line)
        if m:
            top = [(name, float(p)) for name, p in re.findall(r"(.+?) (\d\.\d\d)(?:, |$)", m.group(2))]
            logits = None
            if i + 1 < len(lines) and lines[i + 1].startswith("logits: "):
                logits = [int(v) for v in lines[i + 1][8:].split()]
            frames.append({"n": int(m.group(1)), "top": top, "ms": int(m.group(3)),
                           "camera_ms": int(m.group(4)), "used_kb": float(m.group(5)),
                           "free_kb": float(m.group(6)), "fps": float(m.group(7)), "logits": logits})
    return frames


def saved(out: str):
    """(path, logits) from the `saved the last frame as ...` line."""
    m = re.search(r"^saved the last frame as (\S+); its logits: (.*)$", out, re.M)
    assert m, out
    return m.group(1), [int(v) for v in m.group(2).split()]


def host_logits(model_path, frame_path, capsys):
    """`butterflyvit classify MODEL FRAME --json` on the host: the frame's size from its name."""
    capsys.readouterr()
    assert cli(["classify", str(model_path), str(frame_path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["logits"]


def write_frames(d, rng, n=2):
    """{format: [[w, h, path]...]} of n colour pictures as GRAYSCALE and RGB565 frames of
    sizes other than the model's (crop and resize), and {path: (w, h, fmt, big-endian bytes)}."""
    frames, data = {"GRAYSCALE": [], "RGB565": []}, {}
    for i, (w, h) in enumerate([(20, 15), (12, 12), (16, 10)][:n]):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        gray = ((77 * rgb[..., 0].astype(int) + 150 * rgb[..., 1] + 29 * rgb[..., 2] + 128) >> 8).astype(np.uint8)
        for fmt, buf in (("GRAYSCALE", gray.tobytes()), ("RGB565", rgb_to_rgb565(rgb))):
            p = d / f"pic{i}_{fmt}.raw"
            p.write_bytes(buf)
            frames[fmt].append([w, h, str(p)])
            data[str(p)] = (w, h, fmt, buf)
    return frames, data


def little_endian(frames, data, d):
    """The same frames with RGB565 stored as little-endian words (OpenMV)."""
    out = {"GRAYSCALE": frames["GRAYSCALE"], "RGB565": []}
    for w, h, path in frames["RGB565"]:
        p = d / (path.rsplit("/", 1)[-1] + ".le")
        p.write_bytes(np.frombuffer(data[path][3], ">u2").astype("<u2").tobytes())
        out["RGB565"].append([w, h, str(p)])
    return out


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The bvit package precompiled (x64), as a small board holds it."""
    d = tmp_path_factory.mktemp("pkg")
    mpy_package(d)
    return d


def drivers(d, frames, sensor_frames=None):
    (d / "camera_frames.json").write_text(json.dumps(frames))
    (d / "sensor_frames.json").write_text(json.dumps(sensor_frames or frames))
    (d / "camera.py").write_text(FAKE_CAMERA)
    (d / "sensor.py").write_text(FAKE_SENSOR)


def board_script(d):
    """classify.py copied beside the board's files: run from device/, it would import the
    package's sources next to it (compiled at import: more than a 96 KB heap)."""
    shutil.copy(REPO / "device" / "classify.py", d / "classify.py")
    return d / "classify.py"


def fake_calls(out: str) -> list:
    return [line[5:] for line in out.splitlines() if line.startswith("FAKE ")]


# ------------------------------------------------------------------ ESP32 camera


@pytest.mark.parametrize("variant,fmt,const", [("rgb", "RGB565", 0), ("plain", "GRAYSCALE", 3)])
def test_esp32_example_sets_the_camera_up_for_the_model(micropython, package, tmp_path, capsys,
                                                        variant, fmt, const):
    """A colour model gets RGB565 frames (the driver was always set to GRAYSCALE before), a
    grey model GRAYSCALE, at R96X96 (the smallest size covering 8x8), with the example's
    pins; every frame's logits are the host's for that frame; the last frame is saved
    big-endian and the host's `classify` of the saved file gives its logits."""
    frames, data = write_frames(tmp_path, np.random.default_rng(5))
    drivers(tmp_path, frames)
    (tmp_path / "model.bvit").write_bytes(tiny_bytes(variant))
    res = micropython.run(EXAMPLES / "esp32_cam.py", heapsize="96k", cwd=tmp_path,
                          args=["--frames", "3", "--logits"], extra_path=[tmp_path, package]).check()
    calls = fake_calls(res.stdout)
    made = json.loads(calls[0][len("Camera "):])
    assert made["pixel_format"] == const and made["frame_size"] == 0          # FrameSize.R96X96
    assert made["kw"]["data_pins"] == [5, 18, 19, 21, 36, 39, 34, 35] and made["kw"]["xclk_pin"] == 0
    assert calls[1:] == ["free_buffer"]                                       # once, at the end
    assert f"camera: ESP32 camera driver: {fmt} at R96X96; the model takes 8x8 {fmt}" in res.stdout
    m = tiny_model(variant)
    got = parse_frames(res.stdout)
    assert [f["n"] for f in got] == [1, 2, 3]
    for i, f in enumerate(got):
        w, h, path = frames[fmt][i % 2]
        ref = m.forward_frame(data[path][3], w, h, fmt)
        assert f["logits"] == [int(v) for v in ref.logits], i
        assert [name for name, _ in f["top"]] == [m.classes[c] for c, _ in ref.top(3)]
        assert f["ms"] >= f["camera_ms"] >= 0 and f["fps"] > 0 and 0 < f["used_kb"] < 96
    path, logits = saved(res.stdout)
    w, h, src = frames[fmt][0]                                # the third frame is the first again
    assert path == f"last_{w}x{h}{'.rgb565' if fmt == 'RGB565' else '.gray'}"
    assert (tmp_path / path).read_bytes() == data[src][3]
    assert logits == got[-1]["logits"] == host_logits(tmp_path / "model.bvit", tmp_path / path, capsys)


def test_esp32_classify_json_chooses_format_and_size(micropython, package, tmp_path):
    """classify.json's pixel_format / frame_size win over the model's; a colour model on a
    GRAYSCALE camera is said to see grey frames."""
    frames, data = write_frames(tmp_path, np.random.default_rng(6))
    drivers(tmp_path, frames)
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("rgb"))
    (tmp_path / "classify.json").write_text(json.dumps(
        {"input": "esp32", "pixel_format": "grayscale", "frame_size": "QQVGA", "frames": 1,
         "logits": True, "camera_args": {"xclk_freq": 10000000}}))
    res = micropython.run(board_script(tmp_path), heapsize="96k", cwd=tmp_path,
                          extra_path=[tmp_path, package]).check()
    made = json.loads(fake_calls(res.stdout)[0][len("Camera "):])
    assert made == {"pixel_format": 3, "frame_size": 1, "kw": {"xclk_freq": 10000000}}
    assert "note: pixel_format GRAYSCALE: this colour model will see grey frames" in res.stdout
    w, h, path = frames["GRAYSCALE"][0]
    ref = tiny_model("rgb").forward_frame(data[path][3], w, h, "GRAYSCALE")
    assert parse_frames(res.stdout)[0]["logits"] == [int(v) for v in ref.logits]


@pytest.mark.parametrize("config,message", [
    ({"input": "esp32", "pixel_format": "YUV"},
     "error: option pixel_format (--pixel-format) must be one of GRAYSCALE, RGB565, got 'YUV'"),
    ({"input": "esp32", "frame_size": "HUGE"},
     "error: --input esp32: frame_size 'HUGE': the camera driver has no such constant"),
    ({"input": "esp32", "camera_args": [1, 2]},
     "error: option camera_args must be a dictionary of the camera driver's keyword arguments, got [1, 2]"),
    ({"input": "esp32", "camera_args": {"no_such_pin": 3}}, "error: --input esp32: "),
    ({"inputs": "esp32"}, "error: classify.json: unknown key 'inputs' (keys: backend, camera_args, "),
    ({"input": "openmv", "frame_size": "QQVGA", "backend": "fast"},
     "error: option backend (--backend) must be one of auto, native, viper, python, got 'fast'"),
])
def test_camera_option_errors(micropython, package, tmp_path, config, message):
    frames, _ = write_frames(tmp_path, np.random.default_rng(7), n=1)
    drivers(tmp_path, frames)
    if config.get("camera_args") == {"no_such_pin": 3}:       # a driver that checks its arguments
        (tmp_path / "camera.py").write_text(FAKE_CAMERA.replace("**kw):", "):").replace('"kw": kw', '"kw": {}'))
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("rgb"))
    (tmp_path / "classify.json").write_text(json.dumps(config))
    res = micropython.run(board_script(tmp_path), heapsize="96k", cwd=tmp_path,
                          extra_path=[tmp_path, package])
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stdout, res.stdout
    assert len([ln for ln in res.stdout.splitlines() if ln.startswith("error")]) == 1


def test_no_driver_and_empty_folder(micropython, package, tmp_path):
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("plain"))
    res = micropython.run(board_script(tmp_path), heapsize="96k", cwd=tmp_path,
                          args=["--input", "esp32"], extra_path=[package])
    assert res.returncode == 2
    assert ("error: --input esp32: this board has no 'camera' module (the ESP32 camera driver); use "
            "--input NAME.gray or NAME.rgb565, a raw frame file, or a folder of them") in res.stdout
    (tmp_path / "empty").mkdir()
    res = micropython.run(board_script(tmp_path), heapsize="96k", cwd=tmp_path,
                          args=["--input", "empty"], extra_path=[package])
    assert res.returncode == 1
    assert ("error while starting the camera: empty: no frame files (NAME_WxH.gray or "
            "NAME_WxH.rgb565) in this folder") in res.stdout


# ------------------------------------------------------------------ OpenMV sensor


def test_openmv_example_sets_the_sensor_up(micropython, package, tmp_path, capsys):
    """reset, the model's pixel format, QQVGA, 2 s to settle, in that order, before the
    first snapshot; little-endian RGB565 gives the host's logits; the saved frame is the
    big-endian file the host reads."""
    frames, data = write_frames(tmp_path, np.random.default_rng(8))
    drivers(tmp_path, frames, little_endian(frames, data, tmp_path))
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("rgb"))
    res = micropython.run(EXAMPLES / "openmv_cam.py", heapsize="96k", cwd=tmp_path,
                          args=["--frames", "2", "--logits"], extra_path=[tmp_path, package]).check()
    assert fake_calls(res.stdout) == ["reset()", "set_pixformat(1)", "set_framesize(5)",
                                      "skip_frames(time=2000)"]
    assert "camera: OpenMV sensor: RGB565 at QQVGA; the model takes 8x8 RGB565" in res.stdout
    m = tiny_model("rgb")
    got = parse_frames(res.stdout)
    for i, f in enumerate(got):
        w, h, path = frames["RGB565"][i]
        assert f["logits"] == [int(v) for v in m.forward_frame(data[path][3], w, h, "RGB565").logits]
    path, logits = saved(res.stdout)
    assert (tmp_path / path).read_bytes() == data[frames["RGB565"][1][2]][3]
    assert logits == host_logits(tmp_path / "model.bvit", tmp_path / path, capsys)


# ------------------------------------------------------------------ the loop itself

LIVE = r"""
import sys
from bvit.model import Classifier
from bvit import live

class Interrupted:
    # the classifier, with Ctrl-C arriving while frame 2 is classified
    def __init__(self, net):
        self.net = net
        self.calls = 0
    def classify_frame(self, frame):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.net.classify_frame(frame)
    def __getattr__(self, name):
        return getattr(self.net, name)

d = sys.argv[1]
net = Classifier(d + "/model.bvit")
cam = live.FileCamera([d + "/a_12x12.gray", d + "/b_16x9.rgb565"])
n = live.live(Interrupted(net), cam, top_k=2, frames=0, save=d + "/cut")
cam.close()
print("returned", n)
"""


def test_ctrl_c_while_classifying_saves_the_frame_it_had(micropython, tmp_path):
    rng = np.random.default_rng(11)
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("rgb"))
    a = rng.integers(0, 256, 144, dtype=np.uint8).tobytes()
    b = rng.integers(0, 256, 288, dtype=np.uint8).tobytes()
    (tmp_path / "a_12x12.gray").write_bytes(a)
    (tmp_path / "b_16x9.rgb565").write_bytes(b)
    (tmp_path / "live.py").write_text(LIVE)
    out = micropython.run(tmp_path / "live.py", args=[tmp_path], heapsize="1m").check().stdout
    lines = out.splitlines()
    assert FRAME_LINE.match(lines[0]) and lines[0].startswith("frame 1: ")
    assert lines[0].split(" | ")[0].count(",") == 1                  # top-2: "name p, name p"
    assert lines[1] == "stopped after 1 frames"
    path, logits = saved(out)
    assert path == f"{tmp_path}/cut_16x9.rgb565"
    assert (tmp_path / "cut_16x9.rgb565").read_bytes() == b
    assert logits == [int(v) for v in tiny_model("rgb").forward_frame(b, 16, 9, "RGB565").logits]
    assert lines[-1] == "returned 1"


# ------------------------------------------------------------------ the examples, no camera


@pytest.mark.parametrize("example", ["esp32_cam.py", "esp32_s3_eye.py", "openmv_cam.py"])
def test_examples_run_on_the_unix_port_with_a_folder_of_frames(micropython, package, tmp_path,
                                                               capsys, example):
    """Each example as its comment says (examples/frames as the camera, the shipped model),
    at 96 KB of heap with the package precompiled: every frame as the host classifies it;
    the last frame saved and classified on the host alike."""
    model = SHIPPED
    res = micropython.run(EXAMPLES / example, heapsize="96k", cwd=tmp_path,
                          args=["--model", model, "--input", EXAMPLES / "frames", "--frames", "5",
                                "--logits", "--weight-buffer", "2048"],
                          extra_path=[package]).check()
    files = sorted(p for p in (EXAMPLES / "frames").iterdir())
    got = parse_frames(res.stdout)
    assert len(got) == 5 and len(files) == 4
    ref = IntModel.load(model)
    for i, f in enumerate(got):
        path = files[i % 4]
        assert f["logits"] == host_logits(model, path, capsys), path
        label = path.name.rsplit("_", 1)[0].replace("_", " ").lower()
        assert f["top"][0][0].lower() == label and f["used_kb"] < 96
    path, logits = saved(res.stdout)
    assert path == "last_96x96.gray" and (tmp_path / path).read_bytes() == files[0].read_bytes()
    assert logits == got[-1]["logits"] == host_logits(model, tmp_path / path, capsys)
    assert ref.cfg.in_channels == 1


def test_ctrl_c_stops_the_live_loop_and_saves_the_last_frame(package, tmp_path, capsys):
    """The example running forever (frames 0) on the unix port; SIGINT (Ctrl-C) ends it,
    the last frame it took is saved with its logits, the host classifies it alike."""
    from beds.micropython import MicroPython

    mp = MicroPython(tmp_path, path=[package])
    cmd = [mp.executable, "-X", "heapsize=96k", str(EXAMPLES / "esp32_cam.py"), "--model", str(SHIPPED),
           "--input", str(EXAMPLES / "frames"), "--frames", "0", "--weight-buffer", "2048"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=mp.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        deadline = time.monotonic() + 120
        while len([s for s in seen if s.startswith("frame ")]) < 2 and time.monotonic() < deadline:
            seen.append(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + rest
    assert proc.returncode == 0, out + err
    m = re.search(r"^stopped after (\d+) frames$", out, re.M)
    assert m and int(m.group(1)) >= 2, out
    path, logits = saved(out)
    assert logits == host_logits(SHIPPED, tmp_path / path, capsys)
    assert (tmp_path / path).read_bytes() in [p.read_bytes() for p in (EXAMPLES / "frames").iterdir()]


def test_classify_json_that_is_not_an_object_of_options(micropython, package, tmp_path):
    (tmp_path / "model.bvit").write_bytes(tiny_bytes("plain"))
    for text, message in (("{top_k: 5", "error: classify.json: not valid JSON"),
                          ("[1, 2]", 'error: classify.json: expected an object of options, like {"top_k": 5}')):
        (tmp_path / "classify.json").write_text(text)
        res = micropython.run(board_script(tmp_path), heapsize="96k", cwd=tmp_path, extra_path=[package])
        assert res.returncode == 2 and res.stdout.strip() == message, res.stdout
