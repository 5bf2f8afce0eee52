"""Training: data loaders, a few steps that learn, checkpoint + resume, DDP under torchrun."""

import gzip
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from butterflyvit import cli
from butterflyvit.checkpoint import load_checkpoint, load_model
from butterflyvit.data import (augment, channel_stats, load_cifar10, load_fashion_mnist,
                               normalize, read_idx)
from butterflyvit.presets import preset_config
from butterflyvit.train import TrainConfig, evaluate, train

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def tiny_run(tmp_path, **kw):
    d = dict(dataset="digits", steps=12, batch_size=64, lr=5e-3, augment=True, progress=False,
             eval_every=0, seed=3)
    d.update(kw)
    return TrainConfig(**d)


# ----------------------------------------------------------------------------------- data

def write_idx(path, arr):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[arr.dtype.type], arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        Path(path).write_bytes(data)


def test_fashion_mnist_idx_loader(tmp_path):
    rng = np.random.RandomState(0)
    for prefix, n in (("train", 20), ("t10k", 7)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.randint(0, 256, (n, 28, 28)).astype(np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.randint(0, 10, n).astype(np.uint8))
    ds = load_fashion_mnist(tmp_path)
    assert ds.train.images.shape == (20, 1, 28, 28) and ds.train.images.dtype == torch.uint8
    assert ds.test.labels.shape == (7,) and ds.test.labels.dtype == torch.int64
    assert len(ds.classes) == 10 and len(ds.mean) == 1
    raw = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert np.array_equal(ds.train.images[:, 0].numpy(), raw)


def test_real_fashion_mnist_header_if_installed():
    p = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    if not p.exists():
        pytest.skip("Debian dataset-fashion-mnist not installed")
    y = read_idx(p)
    assert y.shape == (10000,) and set(np.unique(y)) == set(range(10))


def _png(arr):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_cifar_image_tree_tar_and_cache(tmp_path):
    rng = np.random.RandomState(1)
    tar_path = tmp_path / "tree.tar.gz"
    pixels = {}
    with tarfile.open(tar_path, "w:gz") as tf:
        for split, n in (("train", 3), ("test", 2)):
            for cls in ("cat", "airplane"):
                for i in range(n):
                    arr = rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)
                    data = _png(arr)
                    name = f"root/{split}/{cls}/{i:04d}.png"
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                    pixels[name] = arr
    ds = load_cifar10(tar_path, cache_dir=tmp_path / "cache")
    assert ds.classes == ["airplane", "cat"]
    assert ds.train.images.shape == (6, 3, 32, 32) and ds.test.images.shape == (4, 3, 32, 32)
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(ds.train.images[3].numpy().transpose(1, 2, 0), pixels["root/train/cat/0000.png"])
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = load_cifar10(tar_path, cache_dir=tmp_path / "cache")
    assert torch.equal(again.train.images, ds.train.images)


def test_cifar_pickles(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.RandomState(2)
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
                         b"labels": list(rng.randint(0, 10, n))}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in "abcdefghij"]}, f)
    ds = load_cifar10(tmp_path, cache_dir=tmp_path / "cache")
    assert ds.train.images.shape == (10, 3, 32, 32) and len(ds.test) == 3
    assert ds.classes == list("abcdefghij")


def test_normalize_and_augment():
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    y = normalize(x, mean, std)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y[1, 2, 3, 4], torch.tensor((x[1, 2, 3, 4].item() / 255 - mean[2]) / std[2]))
    assert torch.equal(augment(x, 0, False), x)
    torch.manual_seed(0)
    a = augment(x, 2, True)
    torch.manual_seed(0)
    assert torch.equal(a, augment(x, 2, True)) and a.shape == x.shape and a.dtype == x.dtype


# ------------------------------------------------------------------------------- training

@pytest.mark.parametrize("ffn", ["butterfly", "moe", "dense"])
def test_few_steps_reduce_loss_on_digits(tmp_path, ffn):
    out = tmp_path / "m.pt"
    cfg = preset_config("tiny", ffn=ffn)
    res = train(cfg, tiny_run(tmp_path, steps=40, augment=False, out=str(out)))
    assert res["test_loss"] < 1.9  # chance is ln 10 = 2.30
    assert res["test_acc"] > 0.3
    model, ck = load_model(out)
    assert not model.training
    for key in ("config", "model", "normalize", "classes", "dataset", "optimizer", "scheduler",
                "step", "epoch", "metrics"):
        assert key in ck
    assert ck["step"] == 40 and ck["dataset"] == "digits" and len(ck["classes"]) == 10
    from butterflyvit.data import load_digits
    again = evaluate(model, load_digits().test, ck["normalize"]["mean"], ck["normalize"]["std"])
    assert again["test_acc"] == pytest.approx(res["test_acc"])
    if ffn != "dense":
        assert 0 <= res["agreement"] <= 1 and "alt_routing" in res
        assert len(res["utilisation"]["effective_experts_frac"]) == cfg.depth


def test_checkpoint_resume_continues_identically(tmp_path):
    cfg = preset_config("tiny", num_experts=4, smooth_routing=True)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    kw = dict(steps=14, smooth_weight=0.1, batch_size=100)  # 15 steps/epoch: resume mid-epoch
    train(cfg, tiny_run(tmp_path, out=str(a), **kw))
    stopped = train(cfg, tiny_run(tmp_path, out=str(b), stop_after=6, **kw))
    assert stopped["stopped_at"] == 6 and load_checkpoint(b)["step"] == 6
    # resume: the run's definition comes from the checkpoint
    train(preset_config("tiny"), TrainConfig(dataset="digits", resume=str(b), out=str(b),
                                             progress=False))
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sb["step"] == 14
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert sa["metrics"]["test_acc"] == sb["metrics"]["test_acc"]


def test_cli_train_and_export(tmp_path, capsys):
    out, exp = tmp_path / "c.pt", tmp_path / "e.pt"
    rc = cli.main(["train", "--dataset", "digits", "--preset", "tiny", "--ffn", "butterfly",
                   "--experts", "3", "--steps", "3", "--batch-size", "32", "--threads", "1",
                   "--no-progress", "--out", str(out), "--export", str(exp),
                   "--metrics-out", str(tmp_path / "m.json")])
    assert rc == 0
    printed = capsys.readouterr()
    line = printed.out.strip().splitlines()[-1]
    assert "test_acc" in json.loads(line)
    # the log says what runs the butterflies (docs/training.md, "The C training kernels")
    assert "butterflies: the C training kernels" in printed.out + printed.err
    ck = load_checkpoint(exp)
    assert "optimizer" not in ck and ck["config"]["num_experts"] == 3
    assert json.loads((tmp_path / "m.json").read_text())["steps"] == 3


def test_no_progress_prints_one_line_an_epoch(tmp_path, capsys):
    """--no-progress (a log file): no bar, one plain line at each epoch's end with the step,
    the running loss and accuracy and the time per step; the time left while there is any."""
    rc = cli.main(["train", "--dataset", "digits", "--preset", "tiny", "--epochs", "2",
                   "--batch-size", "250", "--threads", "1", "--eval-every", "0",
                   "--no-progress", "--out", str(tmp_path / "p.pt")])
    assert rc == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, err    # 1500 images / 250 = 6 steps an epoch
    assert re.fullmatch(r"epoch 1/2: step 6/12, train loss \d\.\d{3}, acc [01]\.\d{3}, "
                        r"\d+\.\d\d s/step, (\d+ s|about \d+ min) left", lines[0]), lines[0]
    assert re.fullmatch(r"epoch 2/2: step 12/12, .*s/step", lines[1]), lines[1]
    assert "\r" not in err and "it/s" not in err    # no tqdm bar


def test_torchrun_two_processes(tmp_path):
    """DDP with gloo on CPU: 2 processes train a tiny config for a few steps."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "butterflyvit.cli", "train", "--dataset", "digits", "--preset", "tiny",
           "--steps", "4", "--batch-size", "32", "--threads", "1", "--no-progress",
           "--eval-every", "0", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "2 x cpu" in r.stderr
    ck = load_checkpoint(out)
    assert ck["step"] == 4 and 0 <= ck["metrics"]["test_acc"] <= 1
    # the evaluation covered the whole test split across both ranks
    assert ck["metrics"]["test_images"] == 297


def test_butterfly_angles_get_their_own_learning_rate_and_no_decay():
    from butterflyvit.checkpoint import build_model
    from butterflyvit.config import ModelConfig
    from butterflyvit.train import param_groups

    model = build_model(ModelConfig(image_size=8, patch_size=4, dim=16, heads=2, ffn_dim=32,
                                    depth=1, num_experts=4, butterfly_stages=2))
    angles = {id(p) for n, p in model.named_parameters() if n.endswith((".phi", ".theta"))}
    assert len(angles) == 2
    groups = param_groups(model, weight_decay=0.05, lr=2e-3, angle_lr_scale=10)
    assert len(groups) == 3
    assert {id(p) for p in groups[2]["params"]} == angles
    assert groups[2]["lr"] == pytest.approx(2e-2) and groups[2]["weight_decay"] == 0.0
    assert not angles & {id(p) for g in groups[:2] for p in g["params"]}
    # scale 1: the earlier optimiser exactly (angles with the other undecayed parameters)
    old = param_groups(model, weight_decay=0.05, lr=2e-3, angle_lr_scale=1)
    assert len(old) == 2 and angles <= {id(p) for p in old[1]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
