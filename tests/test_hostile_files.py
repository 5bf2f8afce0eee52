"""No code execution from any file: crafted checkpoints and CIFAR-10 pickles, whose
unpickling would create a marker file, run through every command that reads them as real
CLI processes. Each is refused with exit status 2 and one line naming the file; the marker
never appears. Genuine files (the official CIFAR-10 batch layout, the shipped checkpoint)
still load."""

import builtins
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from test_intmodel import tiny_bytes

torch = pytest.importorskip("torch")

from butterflyvit.checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint  # noqa: E402
from butterflyvit.data import CIFAR10_CLASSES, DataError, load_cifar10  # noqa: E402
from butterflyvit.presets import preset_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux and macOS
SHIPPED_PT = REPO / "models" / "pico-fmnist.pt"
SHIPPED_BVIT = REPO / "models" / "pico-fmnist.bvit"


# ------------------------------------------------------------------ hostile payloads

class RunsShell:
    """Unpickling this runs `touch marker` through os.system."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class RunsExec:
    """Unpickling this runs Python source through exec, which writes the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').close()",)


def test_payloads_are_live(tmp_path):
    """The payloads do what the tests below say is prevented (so those tests can fail)."""
    for cls in (RunsShell, RunsExec):
        marker = tmp_path / cls.__name__
        pickle.loads(pickle.dumps(cls(marker)))
        assert marker.exists()
    marker = tmp_path / "torch-load"
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": RunsShell(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def cli(*args, cwd):
    env = {**os.environ, "XDG_CACHE_HOME": str(Path(cwd) / "cache")}
    return subprocess.run([sys.executable, "-m", "butterflyvit.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def assert_refused(proc, marker, name, why="refused to unpickle"):
    err = proc.stderr.strip()
    assert not marker.exists(), "the crafted file ran code"
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert str(name) in err and why in err, err


# -------------------------------------------------------------------------- checkpoints

@pytest.fixture(params=["torch.save + os.system", "plain pickle + exec"])
def evil_checkpoint(request, tmp_path):
    """(path, marker, the refused global): a zip-format torch.save file and a bare pickle."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    cfg = preset_config("tiny").to_dict()
    if request.param.startswith("torch.save"):
        torch.save({"config": cfg, "model": RunsShell(marker)}, path)
        return path, marker, "system"
    with open(path, "wb") as f:
        pickle.dump({"config": cfg, "model": RunsExec(marker)}, f, protocol=2)
    return path, marker, "exec"


@pytest.mark.parametrize("command", ["pack", "eval --checkpoint", "memory --checkpoint",
                                     "train --resume"])
def test_crafted_checkpoint_is_refused(command, evil_checkpoint, tmp_path):
    path, marker, glob = evil_checkpoint
    model = tmp_path / "tiny.bvit"
    model.write_bytes(tiny_bytes())
    args = {"pack": ["pack", path, "-o", tmp_path / "out.bvit", "--dataset", "digits"],
            "eval --checkpoint": ["eval", model, "--checkpoint", path, "--dataset", "digits"],
            "memory --checkpoint": ["memory", "--checkpoint", path],
            "train --resume": ["train", "--resume", path, "--dataset", "digits", "--steps", "1",
                               "--out", tmp_path / "out.pt", "--no-progress"]}[command]
    proc = cli(*args, cwd=tmp_path)
    assert_refused(proc, marker, path)
    assert f"{glob})" in proc.stderr and "weights_only=True" in proc.stderr
    assert not (tmp_path / "out.bvit").exists() and not (tmp_path / "out.pt").exists()


def test_loader_errors_in_process(tmp_path):
    """load_checkpoint: a missing file is FileNotFoundError, anything else one CheckpointError
    line naming the file, never a run payload."""
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")
    cases = {"junk.pt": b"not a checkpoint at all", "empty.pt": b"",
             "cut.pt": SHIPPED_PT.read_bytes()[:50_000] if SHIPPED_PT.exists() else b"PK\x03\x04"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=f"{name}: cannot read the checkpoint") as e:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(e.value)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: not a butterflyvit checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_save_refuses_what_weights_only_cannot_read(tmp_path):
    """save_checkpoint writes only plain values, so every checkpoint it writes loads."""
    cfg = preset_config("tiny")
    base = {"config": cfg.to_dict(), "model": build_model(cfg).state_dict()}
    for bad, where in (({"metrics": {"acc": np.float64(0.5)}}, "['metrics']['acc']"),
                       ({"torch_version": torch.__version__}, "['torch_version']"),
                       ({"train": {"data": tmp_path}}, "['train']['data']")):
        with pytest.raises(TypeError, match=r"checkpoint\[.*is a .*plain Python values") as e:
            save_checkpoint(tmp_path / "bad.pt", {**base, **bad})
        assert where in str(e.value)
        assert not list(tmp_path.iterdir())
    save_checkpoint(tmp_path / "ok.pt", {**base, "metrics": {"acc": 0.5, "history": [(1, 2.0)]}})
    ck = torch.load(tmp_path / "ok.pt", weights_only=True)
    assert type(ck["torch_version"]) is str and ck["torch_version"] == str(torch.__version__)


def test_training_checkpoint_is_plain(tmp_path):
    """A full training checkpoint (optimiser, scheduler, train config, metrics) loads with
    weights_only=True, and --resume continues from it."""
    pytest.importorskip("sklearn")
    out = tmp_path / "run.pt"
    common = ["--preset", "tiny", "--dataset", "digits", "--steps", "4", "--batch-size", "100",
              "--threads", "1", "--no-progress", "--eval-every", "0"]
    proc = cli("train", *common, "--stop-after", "2", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ck = torch.load(out, weights_only=True)
    assert ck["step"] == 2 and {"optimizer", "scheduler", "train", "metrics"} <= set(ck)
    proc = cli("train", "--resume", out, "--out", out, "--threads", "1", "--no-progress",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert torch.load(out, weights_only=True)["step"] == 4


# -------------------------------------------------------------- the shipped checkpoint

def walk(obj, where="checkpoint"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(k, f"{where} key")
            yield from walk(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from walk(v, f"{where}[{i}]")
    else:
        yield where, obj


@pytest.mark.skipif(not SHIPPED_PT.exists(), reason="the shipped checkpoint is not in this checkout")
def test_shipped_checkpoint_is_plain_and_packs(tmp_path):
    ck = torch.load(SHIPPED_PT, map_location="cpu", weights_only=True)
    odd = [(w, type(v)) for w, v in walk(ck)
           if not isinstance(v, torch.Tensor) and type(v) not in (str, int, float, bool, type(None))]
    assert not odd, odd
    assert ck["config"]["ffn"] == "butterfly" and ck["step"] == 16380   # 35 epochs of 468 steps
    proc = cli("memory", "--checkpoint", SHIPPED_PT, "--json", cwd=tmp_path)
    assert proc.returncode == 0 and "checkpoint" in proc.stdout, proc.stderr
    try:
        from butterflyvit.data import load_fashion_mnist
        load_fashion_mnist()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST (the calibration set) is not installed")
    proc = cli("pack", SHIPPED_PT, "-o", tmp_path / "re.bvit", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # the model file in models/ was packed from the checkpoint as it was before its re-save
    assert (tmp_path / "re.bvit").read_bytes() == SHIPPED_BVIT.read_bytes()


# -------------------------------------------------------------------------- CIFAR-10

class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle (protocol 2) wrote for the official batches: every
    string as a byte string (BINSTRING), numpy under its 1.x name numpy.core."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        b = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batches(n=2, seed=0):
    """{member name: python object} in the official layout (labels a list of ints)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        out[name] = {"batch_label": f"{name} of 6", "labels": [int(v) for v in rng.integers(0, 10, n)],
                     "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     "filenames": [f"img_{i}.png" for i in range(n)]}
    out["batches.meta"] = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": n,
                           "num_vis": 3072}
    return out


def write_cifar(root, objs, dump):
    root.mkdir(parents=True, exist_ok=True)
    for name, obj in objs.items():
        (root / name).write_bytes(dump(obj))
    return root


def bytes_keys(obj):
    """The Python 3 view of a Python 2 pickle read with encoding="bytes"."""
    if isinstance(obj, dict):
        return {k.encode(): bytes_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [v.encode() if isinstance(v, str) else v for v in obj]
    return obj.encode() if isinstance(obj, str) else obj


@pytest.mark.parametrize("layout", ["python 2 (official)", "protocol 4", "protocol 5"])
def test_genuine_cifar_batches_load(layout, tmp_path):
    objs = cifar_batches()
    if layout.startswith("python 2"):
        dump = py2_pickle
        assert b"cnumpy.core.multiarray\n_reconstruct" in dump(objs["test_batch"])
    else:
        proto = int(layout[-1])
        objs = {k: bytes_keys(v) for k, v in objs.items()}
        dump = lambda o: pickle.dumps(o, protocol=proto)  # noqa: E731
    root = write_cifar(tmp_path / "cifar-10-batches-py", objs, dump)
    ds = load_cifar10(tmp_path, cache_dir=tmp_path / "cache")
    key = (lambda s: s) if layout.startswith("python 2") else (lambda s: s.encode())
    want = np.concatenate([objs[f"data_batch_{i}"][key("data")] for i in range(1, 6)])
    assert np.array_equal(ds.train.images.numpy(), want.reshape(-1, 3, 32, 32))
    assert ds.test.labels.tolist() == objs["test_batch"][key("labels")]
    assert ds.classes == CIFAR10_CLASSES and len(ds.train) == 10
    # the same set as the official archive, cifar-10-python.tar.gz
    tar = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(root, arcname="cifar-10-batches-py")
    assert np.array_equal(load_cifar10(tar, cache_dir=tmp_path / "cache2").train.images,
                          ds.train.images)


@pytest.mark.parametrize("member", ["data_batch_3", "test_batch", "batches.meta"])
def test_crafted_cifar_member_is_refused_in_process(member, tmp_path):
    """Every member goes through the restricted reader, batches.meta included (whose
    absence alone falls back to the official class names), in a folder and in an archive."""
    marker = tmp_path / "PWNED"
    objs = {k: bytes_keys(v) for k, v in cifar_batches().items()}
    objs[member] = {**objs[member], b"data": RunsShell(marker)}
    root = write_cifar(tmp_path / "cifar-10-batches-py", objs, pickle.dumps)
    with pytest.raises(DataError, match=f"{member}: not a plain CIFAR-10 batch "
                                            rf"\(refused to unpickle {SYSTEM}\)"):
        load_cifar10(root, cache_dir=tmp_path / "cache")
    tar = tmp_path / "c.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(root, arcname="cifar-10-batches-py")
    with pytest.raises(DataError, match=f"c.tar.gz:cifar-10-batches-py/{member}: not a plain"):
        load_cifar10(tar, cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_malformed_cifar_members(tmp_path):
    objs = {k: bytes_keys(v) for k, v in cifar_batches().items()}
    cases = {"data_batch_2": (b"\x80\x02garbage", "not a CIFAR-10 pickle"),
             "data_batch_4": (pickle.dumps({b"labels": [1]}), "not a CIFAR-10 batch"),
             "test_batch": (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}),
                            "2 images but 1 labels")}
    for member, (data, why) in cases.items():
        root = write_cifar(tmp_path / member, objs, pickle.dumps)
        (root / member).write_bytes(data)
        with pytest.raises(DataError, match=why) as e:
            load_cifar10(root, cache_dir=tmp_path / "cache")
        assert f"{member}:" in str(e.value) and "\n" not in str(e.value)
    root = write_cifar(tmp_path / "missing", objs, pickle.dumps)
    (root / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5: missing"):
        load_cifar10(root, cache_dir=tmp_path / "cache")


@pytest.fixture
def evil_cifar(tmp_path):
    """A CIFAR-10 folder in the official layout whose data_batch_2 runs a shell command."""
    marker = tmp_path / "PWNED"
    objs = {k: bytes_keys(v) for k, v in cifar_batches().items()}
    objs["data_batch_2"] = RunsShell(marker)
    root = write_cifar(tmp_path / "cifar-10-batches-py", objs, pickle.dumps)
    return root, marker


@pytest.mark.parametrize("command", ["eval", "train", "pack"])
def test_crafted_cifar_folder_is_refused(command, evil_cifar, tmp_path):
    root, marker = evil_cifar
    model = tmp_path / "tiny.bvit"
    model.write_bytes(tiny_bytes())
    if command == "pack":  # a sound checkpoint, calibrated on the crafted folder
        cfg = preset_config("tiny", image_size=32, in_channels=3)
        save_checkpoint(tmp_path / "ok.pt", {"config": cfg.to_dict(),
                                             "model": build_model(cfg).state_dict()})
    args = {"eval": ["eval", model, "--dataset", "cifar10", "--data", root],
            "train": ["train", "--preset", "tiny", "--dataset", "cifar10", "--data", root,
                      "--steps", "1", "--out", tmp_path / "out.pt", "--no-progress"],
            "pack": ["pack", tmp_path / "ok.pt", "--dataset", "cifar10", "--data", root,
                     "-o", tmp_path / "out.bvit"]}[command]
    proc = cli(*args, cwd=tmp_path)
    assert_refused(proc, marker, root / "data_batch_2")
    assert f"refused to unpickle {SYSTEM})" in proc.stderr
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "out.bvit").exists()
