"""benchmarks/train_accuracy.py: a real grid of tiny runs on the `digits` data set, over two
seeds, with one run stopped part-way and resumed; the tables over seeds and by number of
experts are checked against the runs' own JSON files."""

import importlib.util
import json
import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("train_accuracy",
                                              ROOT / "benchmarks" / "train_accuracy.py")
ta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ta)


def table(text, heading):
    """{run or (run, E) key: cells} of the first table after `heading`."""
    part = text.split(heading, 1)[1]
    rows = [r for r in part.splitlines() if r.startswith("| ")]
    head = [c.strip() for c in rows[0].split("|")[1:-1]]
    body = []
    for r in rows[1:]:   # rows[0] is the header; the |---| line does not start with "| "
        cells = [c.strip() for c in r.split("|")[1:-1]]
        if len(cells) != len(head):
            break
        body.append(dict(zip(head, cells)))
    return body


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    common = ["--dataset", "digits", "--epochs", "0.5", "--batch-size", "64", "--threads", "1",
              "--results", str(tmp / "results"), "--log-dir", str(tmp), "--ckpt-dir",
              str(tmp / "ckpt")]
    # 1500 training images / 64 = 23 steps an epoch, 12 steps a run: stop one at step 5
    ta.main(common + ["--runs", "bfly-4", "--seeds", "0", "--", "--stop-after", "5"])
    assert not (tmp / "results" / "runs" / "digits-bfly-4+seed=0.json").exists()
    assert (tmp / "ckpt" / "digits-bfly-4+seed=0.pt").exists()
    ta.main(common + ["--runs", "bfly-4", "moe-4", "bfly-8", "--seeds", "0", "1", "--jobs", "2"])
    return tmp


def test_interrupted_run_resumes_from_its_checkpoint(grid):
    log = (grid / "digits-bfly-4+seed=0.log").read_text()
    assert "stopped after step 5/12" in log
    assert re.search(r"resumed \S+digits-bfly-4\+seed=0\.pt at step 5/12", log)
    m = json.loads((grid / "results" / "runs" / "digits-bfly-4+seed=0.json").read_text())
    assert m["steps"] == 12 and m["resumed"] is True
    # the command that defines the run: no checkpoint plumbing, its own seed
    assert "--seed 0" in m["command"] and "--resume" not in m["command"]


def test_tables_over_seeds_and_experts_match_the_runs(grid):
    runs = grid / "results" / "runs"
    acc = {p.stem[len("digits-"):]: 100 * json.loads(p.read_text())["test_acc"]
           for p in runs.glob("*.json")}
    assert sorted(acc) == sorted(f"{r}+seed={s}" for r in ("bfly-4", "moe-4", "bfly-8")
                                 for s in (0, 1))
    text = (grid / "results" / "train_accuracy.md").read_text()
    means = {}
    for row in table(text, "## Over seeds"):
        pair = [acc[f"{row['run']}+seed={s}"] for s in (0, 1)]
        means[row["run"]] = statistics.mean(pair)
        assert row["seeds"] == "2" and row["epochs"] == "0.5"
        assert row["top-1 %"] == f"{statistics.mean(pair):.2f}"
        assert row["sd"] == f"{statistics.stdev(pair):.2f}"
        assert row["min-max"] == f"{min(pair):.2f}-{max(pair):.2f}"
    assert sorted(means) == ["bfly-4", "bfly-8", "moe-4"]
    cmp_rows = table(text, "## ButterflyViT against the standard MoE")
    assert [r["E"] for r in cmp_rows] == ["4"]   # no standard MoE at 8 experts ran
    for r in cmp_rows:
        b, s = means[f"bfly-{r['E']}"], means[f"moe-{r['E']}"]
        assert r["gap"] == f"{b - s:+.2f}"
        # float experts cost far more bytes than rotations of one ternary matrix
        assert float(r["memory ratio"].rstrip("x")) > 5
    png = grid / "results" / "train_accuracy.png"   # ButterflyViT at 4 and 8 experts
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(plot: `train_accuracy.png`)" in text


def test_a_failed_run_is_reported_and_the_rest_go_on(tmp_path, capsys):
    argv = ["--dataset", "fashion-mnist", "--data", str(tmp_path / "missing"), "--runs",
            "bfly-4", "moe-4", "--epochs", "0.01", "--results", str(tmp_path / "r"),
            "--log-dir", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"2 run\(s\) failed: bfly-4 moe-4"):
        ta.main(argv)
    err = capsys.readouterr().err
    assert "[1/2] run bfly-4" in err and "[2/2] run moe-4" in err
    assert "bfly-4 failed (exit 2)" in err and "moe-4 failed (exit 2)" in err
    assert "missing" in (tmp_path / "fashion-mnist-bfly-4.log").read_text()


@pytest.mark.parametrize("argv,message", [
    (["--runs", "bfly-x"], "unknown run 'bfly-x'"),
    (["--epochs", "0"], "--epochs 0: must be more than 0"),
    (["--jobs", "0"], "--jobs 0: must be 1 or more"),
])
def test_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        ta.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_plan_and_seeds():
    a = ta.parse_args(["--plan", "comparison"])
    assert a.epochs == 15.0 and a.seeds == [0, 1, 2]
    assert {"dense", "moe-64", "bfly-64", "bfly-4", "moe-4", "bfly-64+sr"} <= set(a.runs)
    assert ta.expand_seeds(["bfly-64", "moe-8+seed=5"], [0, 1]) == [
        "bfly-64+seed=0", "bfly-64+seed=1", "moe-8+seed=0", "moe-8+seed=1"]
    assert ta.run_flags("bfly-64+reg=0.01+sr+seed=2", 0.1) == [
        "--ffn", "butterfly", "--experts", "64", "--smooth-weight", "0.01", "--seed", "2",
        "--smooth-routing"]
    b = ta.parse_args(["--plan", "comparison", "--epochs", "1", "--seeds", "7"])
    assert b.epochs == 1.0 and b.seeds == [7]
    # the plan: its headline runs seed after seed, then one seed of every other run at a time
    order = ta.expand_seeds(a.runs, a.seeds, a.run_major)
    assert order[:10] == ["dense+seed=0", "dense+seed=1", "dense+seed=2",
                          "moe-64+seed=0", "moe-64+seed=1", "moe-64+seed=2",
                          "bfly-64+seed=0", "bfly-64+seed=1", "bfly-64+seed=2", "moe-4+seed=0"]
    rest = order[9:]
    assert rest[:len(rest) // 3] == [f"{r}+seed=0" for r in a.runs[3:]]
    assert sorted(order) == sorted(ta.expand_seeds(a.runs, a.seeds))
    # runs named on the command line keep each run's seeds together
    assert ta.parse_args(["--plan", "comparison", "--runs", "bfly-4", "moe-4"]).run_major is None


def test_a_partial_plan_says_what_is_missing(tmp_path):
    """The plan's table states how many of its runs it holds and names the missing ones;
    a run at another budget does not count."""
    runs = tmp_path / "runs"
    runs.mkdir()
    metrics = json.loads(next((ROOT / "benchmarks/results/runs").glob("fashion-mnist-bfly-64.json"))
                         .read_text())
    for name, epochs in (("bfly-64+seed=0", 15.0), ("moe-64+seed=0", 15.0), ("dense+seed=0", 2.0)):
        m = dict(metrics, train=dict(metrics["train"], epochs=epochs))
        (runs / f"fashion-mnist-{name}.json").write_text(json.dumps(m))
    ta.main(["--plan", "comparison", "--table-only", "--results", str(tmp_path)])
    text = (tmp_path / "train_accuracy.md").read_text()
    plan = ta.PLANS["comparison"]
    want = ta.expand_seeds(plan["runs"], [0, 1, 2], plan["run_major"])
    assert f"2 of its {len(want)} runs (15 epochs, seeds 0 1 2) are here." in text
    missing = text.split("Missing: ", 1)[1].split(".\n", 1)[0].split(", ")
    assert missing == [r for r in want if r not in ("bfly-64+seed=0", "moe-64+seed=0")]
    # one number of experts: the comparison table, but no plot, and no mention of one
    assert "## ButterflyViT against the standard MoE" in text and "(plot:" not in text
    assert not (tmp_path / "train_accuracy.png").exists()
    # without --plan, no progress section
    ta.main(["--table-only", "--results", str(tmp_path)])
    assert "Progress of the plan" not in (tmp_path / "train_accuracy.md").read_text()


def test_regulariser_and_smoothed_routing_section(tmp_path):
    """Each setting's top-1 and agreement under plain and smoothed routing come from the
    right side of its JSON (a run trained on smoothed routing has plain routing as its
    alt_routing), and the changes are against the plain run at the same seeds (all its
    seeds when it lacks one)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    template = json.loads(next((ROOT / "benchmarks/results/runs")
                               .glob("fashion-mnist-bfly-64.json")).read_text())

    def write(name, acc, agr, alt_acc, alt_agr, weight=0.0, smooth=False):
        seed = int(name.rsplit("=", 1)[1])
        m = dict(template, test_acc=acc, agreement=agr,
                 alt_routing={"smooth_routing": not smooth, "test_acc": alt_acc,
                              "agreement": alt_agr},
                 config=dict(template["config"], smooth_routing=smooth),
                 train=dict(template["train"], epochs=15.0, smooth_weight=weight, seed=seed))
        (runs / f"fashion-mnist-{name}.json").write_text(json.dumps(m))

    write("bfly-64+seed=0", 0.90, 0.30, 0.85, 0.40)
    write("bfly-64+seed=1", 0.80, 0.40, 0.75, 0.50)
    write("bfly-64+reg=0.01+seed=0", 0.86, 0.45, 0.84, 0.55, weight=0.01)
    write("bfly-64+reg=0.1+seed=5", 0.84, 0.50, 0.83, 0.52, weight=0.1)   # no plain seed 5
    write("bfly-64+sr+seed=0", 0.87, 0.60, 0.70, 0.33, smooth=True)
    write("moe-64+seed=0", 0.91, 0.35, 0.80, 0.45)        # no variant: no moe rows
    ta.main(["--table-only", "--results", str(tmp_path)])
    text = (tmp_path / "train_accuracy.md").read_text()
    rows = {r["run"]: r for r in table(text, "## Smoothness regulariser and smoothed routing")}
    assert sorted(rows) == ["bfly-64", "bfly-64+reg=0.01", "bfly-64+reg=0.1", "bfly-64+sr"]
    base = rows["bfly-64"]
    assert (base["seeds"], base["routing"], base["top-1 % plain"], base["top-1 % smoothed"],
            base["agreement plain"], base["agreement smoothed"], base["change"]) == (
        "2", "plain", "85.00", "80.00", "0.350", "0.450", "+0.00")
    reg = rows["bfly-64+reg=0.01"]
    assert (reg["reg. λ"], reg["top-1 % as trained"], reg["change"],
            reg["agreement change"]) == ("0.01", "86.00", "-4.00", "+0.150")   # vs seed 0
    unpaired = rows["bfly-64+reg=0.1"]
    assert (unpaired["change"], unpaired["agreement change"]) == ("-1.00", "+0.150")
    sr = rows["bfly-64+sr"]
    assert (sr["routing"], sr["top-1 % plain"], sr["top-1 % smoothed"],
            sr["agreement plain"], sr["agreement smoothed"]) == (
        "smoothed", "70.00", "87.00", "0.330", "0.600")
    assert (sr["change"], sr["agreement change"]) == ("-3.00", "+0.300")
    # the per-run table says which routing each run trained with
    per_run = {r["run"]: r for r in table(text, "every stored byte of the model.")}
    assert per_run["bfly-64+sr+seed=0"]["routing"] == "smoothed"
    assert per_run["bfly-64+sr+seed=0"]["other routing %"] == "70.00"
