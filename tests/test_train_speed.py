"""benchmarks/train_speed.py without the author's code: its options, its errors and the table
it writes (a real run of every layer on a tiny shape)."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("train_speed", ROOT / "benchmarks" / "train_speed.py")
train_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_speed)


def test_defaults():
    a = train_speed.parse_args(["--no-write"])
    assert a.threads == 2 and a.experts == 64 and a.top_k == 2 and a.stages == 4
    assert [(s.dim, s.ffn, s.tokens) for s in a.shapes] == [(64, 256, 4096), (256, 1024, 1024)]
    assert a.author is None and a.author_layer is None and a.model_batch == 128
    assert a.out == ROOT / "benchmarks" / "results" / "train_speed.md"


@pytest.mark.parametrize("argv,message", [
    (["--shape", "64,256"], "'64,256' is not DIM,FFN,TOKENS"),
    (["--shape", "64,0,10"], "every number must be 1 or more"),
    (["--threads", "0"], "'0' is not a positive integer"),
    (["--top-k", "3", "--experts", "2"], "--top-k 3 is more than --experts 2"),
    (["--author", "/no/such/checkout"], "--author /no/such/checkout: no models/experts.py"),
    (["--out", "/no/such/folder/t.md"], "--out /no/such/folder/t.md: no such folder"),
    (["--model-batch", "-1"], "--model-batch -1 must be 0 or more"),
])
def test_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train_speed.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_run_writes_table(tmp_path):
    out = tmp_path / "speed.md"
    argv = ["--shape", "16,32,128", "--experts", "4", "--stages", "2", "--threads", "1",
            "--repeats", "2", "--warmup", "0", "--model-batch", "3", "--out", str(out)]
    text = train_speed.run(argv)
    assert out.read_text() == text
    assert "python benchmarks/train_speed.py " + " ".join(argv) in text
    assert "## d 16 / d_ff 32 / 128 tokens" in text
    layers, models = text.split("## Whole pico model, one training step of 3 images")

    def table_rows(part):
        return {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
                for r in part.splitlines() if r.startswith("| ")
                and not r.startswith(("| layer", "| model"))}

    # whole models: median, spread, ratio to the standard MoE-ViT
    model_rows = table_rows(models)
    assert list(model_rows) == ["dense ViT", "standard MoE-ViT", "ButterflyViT"]
    assert model_rows["standard MoE-ViT"][2] == "1.00"
    for median, spread, ratio in model_rows.values():
        lo, hi = (float(v) for v in spread.split("-"))
        assert 0 < lo <= float(median) <= hi and float(ratio) > 0
    rows = table_rows(layers)
    chosen = [k for k in rows if k.startswith("butterfly, chosen (")]
    assert len(chosen) == 1 and re.fullmatch(r"butterfly, chosen \((grouped|slots|factored)"
                                             r"(, (grouped|slots|factored))*\)", chosen[0])
    for impl in ("grouped", "slots", "factored"):
        assert f"butterfly, {impl} forced" in rows
    # median, spread, ratio to the standard MoE, ratio to the author's layer
    assert rows["author's ButterflyMoE"] == ["not given"] * 4
    assert rows["standard MoE"][2:] == ["1.00", "not given"]
    for name, (median, spread, ratio, author) in rows.items():
        if name == "author's ButterflyMoE":
            continue
        lo, hi = (float(v) for v in spread.split("-"))
        assert 0 < lo <= float(median) <= hi
        assert float(ratio) > 0 and author == "not given"
    assert "The author's layer: not given (`--author PATH`)." in text

    # hand-written notes below the marker survive a rewrite
    out.write_text(text + "\n" + train_speed.NOTES + "\nmeasured while the machine was busy\n")
    again = train_speed.run(argv)
    assert again.endswith(train_speed.NOTES + "\nmeasured while the machine was busy\n")
    assert out.read_text() == again and again.count("## d 16 / d_ff 32 / 128 tokens") == 1
    # --model-batch 0: the layers only
    assert "Whole pico model" not in train_speed.run([*argv[:-4], "--model-batch", "0",
                                                       "--no-write"])


def test_rounds_rotate_which_row_goes_first():
    """Every row gets its timed rounds, and each round starts one row further on, so no row
    always runs straight after the same one (order effects of caches and the allocator)."""
    calls = []
    steps = {k: (lambda k=k: calls.append(k) or 1.0) for k in "abc"}
    a = train_speed.parse_args(["--no-write", "--repeats", "4", "--warmup", "2"])
    times = train_speed.interleaved(a, steps)
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc"), list("bca"),
                      list("cab")]
