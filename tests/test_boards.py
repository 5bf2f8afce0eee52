"""Board profiles (boards/<name>/), the fit table of `butterflyvit boards`, the freeze
manifests, and the RAM formula against the board's own on a real MicroPython."""

import json
import os
import sys
from pathlib import Path

import pytest

from butterflyvit import boards as B
from butterflyvit.cli import main
from butterflyvit.modelfile import write_model
from butterflyvit.presets import preset_config
from butterflyvit.quantize import build_integer_model, site_names

REPO = Path(__file__).resolve().parents[1]
NAMES = ["rp2040-pico", "esp32-cam", "esp32s3-eye", "esp32c3", "unix"]


def make_model(path, preset="pico", seed=1234, **overrides):
    """A packed integer model of a preset's shape with random weights (numpy only)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_intmodel import tiny_params

    cfg = preset_config(preset, **overrides)
    ranges = {s: 4.0 for s in site_names(cfg)}
    arrays, meta = build_integer_model(cfg, tiny_params(cfg, seed), ranges, [0.286] * cfg.in_channels,
                                       [0.353] * cfg.in_channels,
                                       [str(i) for i in range(cfg.num_classes)])
    write_model(path, arrays, meta)
    return path


@pytest.fixture(scope="module")
def pico_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("boards") / "pico.bvit")


def test_every_profile_loads_with_sources():
    assert list(B.BOARDS) == NAMES
    for name, b in B.BOARDS.items():
        assert b.path == REPO / "boards" / name
        for f in ("profile.json", "manifest.py", "README.md"):
            assert (b.path / f).is_file(), f"boards/{name}/{f}"
        assert b.heap > 0
        if b.kind == "mcu":
            assert b.sram > b.heap and b.flash > b.fs > 0 and b.clock_hz
            for state in ("active", "idle", "sleep"):
                src = b.power_source(state)
                assert src["watts"] and src["watts"] > 0, (name, state)
                assert src["kind"] in ("datasheet", "measurement", "estimate")
                assert len(src["source"]) > 20
            assert b.active_w > b.idle_w > b.power("sleep")
        else:
            assert b.active_w is None and b.idle_w is None
    # the profiles' figures (docs/boards.md)
    assert B.get_board("pico").heap == 190 * 1024 and B.get_board("esp32-s3-eye").psram == 8 << 20
    cam = B.get_board("esp32-cam").profile["camera"]
    assert cam["sensor"] == "OV2640" and cam["wiring"]["XCLK"] == 0 and cam["wiring"]["PCLK"] == 22


def test_get_board_aliases_and_errors():
    assert B.get_board("PICO").name == "rp2040-pico"
    assert B.get_board("esp32-c3").name == "esp32c3"
    with pytest.raises(B.BoardError, match="unknown board 'nope'; known boards: rp2040-pico"):
        B.get_board("nope")


def test_broken_profiles_are_refused(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "profile.json").write_text("{not json")
    with pytest.raises(B.BoardError, match="not valid JSON"):
        B.load_boards(tmp_path)
    prof = json.loads((REPO / "boards/esp32c3/profile.json").read_text())
    prof["name"] = "x"
    del prof["power"]["active"]["source"]
    (d / "profile.json").write_text(json.dumps(prof))
    with pytest.raises(B.BoardError, match="power.active needs current_a, a source and a kind"):
        B.load_boards(tmp_path)
    prof["power"]["active"]["source"] = "a datasheet, table 1, page 2"
    prof["name"] = "y"
    (d / "profile.json").write_text(json.dumps(prof))
    with pytest.raises(B.BoardError, match="differs from its folder"):
        B.load_boards(tmp_path)


def test_flash_table_for_pack_is_the_microcontrollers():
    t = B.flash_table(500_000)
    assert [r["board"] for r in t] == NAMES[:4] and all(r["fits"] for r in t)
    assert not B.flash_table(3 << 20)[0]["fits"]


def run_manifest(path: Path) -> list:
    """Run a manifest as MicroPython's makemanifest does, with recording stand-ins: an
    include of our own runs that file, whose base paths are relative to its own folder;
    the calls come back with base paths resolved."""
    calls = []

    def run(p: Path):
        here = p.parent
        ns = {"include": lambda q, **kw: (calls.append(("include", q)) if q.startswith("$(")
                                          else run((here / q).resolve())),
              "package": lambda q, base_path=".", **kw: calls.append(("package", q, (here / base_path).resolve())),
              "module": lambda q, base_path=".", **kw: calls.append(("module", q, (here / base_path).resolve()))}
        exec(compile(p.read_text(), str(p), "exec"), ns)

    run(path)
    return calls


def test_manifests_freeze_the_device_package(tmp_path, monkeypatch):
    device = (REPO / "device").resolve()
    for name in NAMES + ["qemu"]:
        manifest = REPO / "boards" / name / "manifest.py"
        monkeypatch.delenv("BVIT_MODEL_PY", raising=False)
        calls = run_manifest(manifest)
        if name != "qemu":                    # the qemu port's own manifest freezes only tests
            assert calls[0][0] == "include" and calls[0][1].startswith("$(PORT_DIR)/")
        assert [c for c in calls if c[0] == "package"] == [("package", "bvit", device)]
        assert ("module", "classify.py", device) in calls
        assert (device / "bvit" / "__init__.py").is_file()
        frozen = tmp_path / "bvitmodel.py"
        monkeypatch.setenv("BVIT_MODEL_PY", str(frozen))
        assert ("module", "bvitmodel.py", tmp_path.resolve()) in run_manifest(manifest)


def test_buffers_match_the_board_formula_on_micropython(micropython, pico_model, tmp_path):
    """The host's figure is the board's ram_needed, and a real Classifier allocates it."""
    code = f"""
from bvit import loader
from bvit.schema import ram_needed
from bvit.model import Classifier
r = loader.load({str(pico_model)!r}, False)
print(ram_needed(r.cfg), ram_needed(r.cfg, 1024))
print(Classifier({str(pico_model)!r}).ram)
"""
    out = micropython.run(code=code, heapsize="512k").check().stdout.split()
    cfg = preset_config("pico")
    assert [int(v) for v in out] == [B.buffers_bytes(cfg), B.buffers_bytes(cfg, 1024), B.buffers_bytes(cfg)]
    assert B.model_needs(pico_model)["buffers"] == int(out[0])


def test_estimated_file_size_is_close(pico_model):
    est = B.estimated_file_size(preset_config("pico"), metadata_bytes=0)
    real = os.path.getsize(pico_model)
    assert est < real < est + 8192          # the metadata is the only estimate


def test_fit_reasons():
    pico, c3 = B.get_board("pico"), B.get_board("esp32c3")
    paper = B.model_needs(("paper", preset_config("paper")))
    f = B.fit(pico, paper)
    assert not f["fits"] and not f["fits_flash"]
    assert "model file" in f["reasons"][0] and "> file system 1,408 KB" in f["reasons"][0]
    s3 = B.fit(B.get_board("esp32s3-eye"), paper)
    assert s3["fits_flash"] and not s3["fits_ram"] and s3["fits_with_psram"]
    assert "fits with the PSRAM firmware" in s3["reasons"][0]
    small = B.model_needs(("pico", preset_config("pico")))
    assert B.fit(c3, small)["fits"] and B.fit(pico, small)["reasons"] == []
    # a model whose buffers fit but whose code from .py does not
    need = dict(small, buffers=c3.heap - 1000, peak_ram=c3.heap - 1000 + B.CODE_HEAP)
    assert "fits with the device code frozen" in B.fit(c3, need)["reasons"][0]
    assert B.model_needs(("pico", preset_config("pico")), frozen=True)["code_heap"] == 0
    # the CIFAR-10 preset is sized for the ESP32-S3-EYE: flash and heap, no PSRAM needed
    cifar = B.model_needs(("cifar", preset_config("cifar")))
    assert B.fit(B.get_board("esp32s3-eye"), cifar)["fits"]
    assert not B.fit(pico, cifar)["fits_flash"]


def test_boards_command(pico_model, capsys):
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert "pico (preset)" in out and "paper (preset)" in out and "Why not:" in out
    assert "paper (preset) on rp2040-pico: model file" in out
    assert main(["boards", "--model", str(pico_model), "--board", "pico", "esp32c3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in r["boards"]] == ["rp2040-pico", "esp32c3"]
    assert r["models"][0]["file_size"] == os.path.getsize(pico_model)
    assert all(f["fits"] for f in r["fit"][0])
    assert r["boards"][0]["power"]["active"]["kind"] == "estimate"
    assert main(["boards", "--board", "nope"]) == 2
    assert "unknown board 'nope'" in capsys.readouterr().err
    assert main(["boards", "--model", str(pico_model) + ".missing"]) == 2
    assert ".missing: no such file" in capsys.readouterr().err


def test_boards_energy_output(pico_model, capsys):
    assert main(["boards", "--model", str(pico_model), "--board", "pico", "--energy"]) == 0
    out = capsys.readouterr().out
    assert "ButterflyViT saves" in out and "Horowitz" in out and "int32_mult 3.1" in out
    assert "rp2040-pico" in out


def test_freeze_model_runs_on_micropython(micropython, pico_model, tmp_path, capsys):
    out_py = tmp_path / "bvitmodel.py"
    assert main(["boards", "--freeze", str(pico_model), "--out", str(out_py)]) == 0
    assert "BVIT_MODEL_PY=" in capsys.readouterr().out
    ns = {}
    exec(out_py.read_text(), ns)
    assert ns["MODEL"] == pico_model.read_bytes()
    # the board agent loads it as the harness's --remote-model module:bvitmodel does
    from butterflyvit.harness.protocol import job, read_jobs, write_jobs
    from butterflyvit.intmodel import IntModel

    pixels = bytes(range(256)) * 3 + bytes(16)
    (tmp_path / "f_28x28.gray").write_bytes(pixels)
    jobs = write_jobs(tmp_path / "jobs.json", [job("module:bvitmodel", [str(tmp_path / "f_28x28.gray")])])
    res = micropython.run(REPO / "device" / "bvit" / "agent.py", args=[jobs], heapsize="2m",
                          extra_path=[tmp_path]).check()
    want = IntModel.load(pico_model).forward_frame(pixels, 28, 28, "GRAYSCALE")
    assert [r["logits"] for r in read_jobs(res.stdout)[0]["results"]] == [[int(v) for v in want.logits]]
    assert main(["boards", "--freeze", str(pico_model)]) == 2
    # bvit_model.py would freeze to the same C name as bvit/model.py: refused before a build
    assert main(["boards", "--freeze", str(pico_model), "--out", str(tmp_path / "bvit_model.py")]) == 2
    assert "clashes with the frozen device code's bvit/model.py" in capsys.readouterr().err
    assert not (tmp_path / "bvit_model.py").exists()
    bad = tmp_path / "bad.bvit"
    bad.write_bytes(b"BVIT" + bytes(60))
    assert main(["boards", "--freeze", str(bad), "--out", str(tmp_path / "x.py")]) == 2
