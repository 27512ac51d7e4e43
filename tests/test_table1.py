"""emodiff reproduce-table1 end to end on a tiny budget with tiny models."""

import json

import pytest

from emodiff.cli import main
from emodiff.table1 import PAPER_TABLE1

TINY = ["--images", "2000", "--channels", "16,32", "--layers-per-block", "1", "--batch-size", "64",
        "--per-class", "1", "--paper-steps", "3", "--steps", "3", "--device", "cpu"]  # fmt: skip


def _untimed(summary: dict) -> list[dict]:
    return [{k: v for k, v in row["metrics"].items() if k != "seconds_per_input"} for row in summary["rows"]]


@pytest.mark.slow
def test_reproduce_table1_trains_evaluates_resumes_and_reevaluates_the_same(fer_csv, tmp_path, capsys):
    out = tmp_path / "table1"
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(out), *TINY]) == 0

    table = (out / "table1.md").read_text()
    for variant, f1 in PAPER_TABLE1.items():
        assert f"| paper: {variant} | " + " | ".join(f"{v:.2f}" for v in f1) in table
        for protocol in ("paper protocol", "emodiff defaults"):
            assert f"| ours, {protocol}: {variant} |" in table
            assert (out / "evaluations" / f"{protocol.replace(' ', '-')}-{variant}" / "grid.png").is_file()
    assert "| judge on the real inputs |" in table
    assert (out / "training_curves.png").stat().st_size > 0
    summary = json.loads((out / "table1.json").read_text())
    assert len(summary["rows"]) == 6
    assert all(r["metrics"]["edits"] == 49 for r in summary["rows"])
    assert {v: r["images_seen"] for v, r in summary["runs"].items()} == {v: 2000 // 64 * 64 for v in PAPER_TABLE1}
    assert all("CPU" in r["hardware"] for r in summary["runs"].values())

    capsys.readouterr()
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(out), *TINY]) != 0
    assert "add --resume" in capsys.readouterr().err
    checkpoints = {v: (out / "runs" / v / "checkpoint.safetensors").stat().st_mtime_ns for v in PAPER_TABLE1}
    capsys.readouterr()
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(out), "--resume", *TINY]) == 0
    assert "already trained" in capsys.readouterr().out
    assert checkpoints == {v: (out / "runs" / v / "checkpoint.safetensors").stat().st_mtime_ns for v in PAPER_TABLE1}

    # The evaluation part alone, on the trained models, gives the same table (same seed).
    models = [f"{v}={out / 'runs' / v}" for v in PAPER_TABLE1]
    again = tmp_path / "again"
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(again), "--models", *models, *TINY]) == 0
    assert not (again / "runs").exists()
    rerun = json.loads((again / "table1.json").read_text())
    assert _untimed(rerun) == _untimed(summary)
    assert rerun["runs"] == summary["runs"]


@pytest.mark.parametrize("models, message", [("label=nowhere", "label=nowhere: not a model directory"), ("gan=x", "unknown variant")])
def test_a_bad_models_entry_is_refused_before_any_work(fer_csv, tmp_path, capsys, models, message):
    out = tmp_path / "t"
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(out), "--models", models, *TINY]) != 0
    assert message in capsys.readouterr().err
    assert not out.exists()
