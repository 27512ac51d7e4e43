"""emodiff reproduce-table1 end to end on a tiny budget with tiny models."""

import json

import pytest

from emodiff.cli import main
from emodiff.table1 import GAN_PROTOCOL, GAN_ROW, PAPER_TABLE1
from emodiff.training import GanTrainConfig, train_gan

TINY = ["--images", "2000", "--channels", "16,32", "--layers-per-block", "1", "--batch-size", "64",
        "--per-class", "1", "--paper-steps", "3", "--steps", "3", "--device", "cpu"]  # fmt: skip


def _untimed(summary: dict) -> list[dict]:
    return [{k: v for k, v in row["metrics"].items() if k != "seconds_per_input"} for row in summary["rows"]]


@pytest.mark.slow
def test_reproduce_table1_trains_evaluates_resumes_and_reevaluates_the_same(fer_csv, tmp_path, capsys, tiny_judges):
    out = tmp_path / "table1"
    tiny = [*TINY, *tiny_judges]
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(out), *tiny]) == 0

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
    assert all(sum(map(sum, r["metrics"]["second_judge"]["emotion"]["confusion"])) == 49 for r in summary["rows"])
    assert "| macro F1 | macro F1, second judge |" in table
    assert {v: r["images_seen"] for v, r in summary["runs"].items()} == {v: 2000 // 64 * 64 for v in PAPER_TABLE1}
    assert all("CPU" in r["hardware"] for r in summary["runs"].values())

    capsys.readouterr()
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(out), *tiny]) != 0
    assert "add --resume" in capsys.readouterr().err
    checkpoints = {v: (out / "runs" / v / "checkpoint.safetensors").stat().st_mtime_ns for v in PAPER_TABLE1}
    capsys.readouterr()
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(out), "--resume", *tiny]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already trained") == 3 and printed.count("measured before with the same model, settings and faces, kept") == 6 and "evaluating" not in printed
    assert checkpoints == {v: (out / "runs" / v / "checkpoint.safetensors").stat().st_mtime_ns for v in PAPER_TABLE1}
    assert json.loads((out / "table1.json").read_text())["rows"] == summary["rows"]  # timings too: nothing ran again

    # The evaluation part alone, on the trained models, gives the same table (same seed), and a
    # GAN given with --gan gets its row from the same evaluation code on the same faces.
    gan = tmp_path / "gan"
    train_gan(GanTrainConfig(data=str(fer_csv), out=str(gan), images=32, batch_size=16, device="cpu", generator_channels=(8, 16), residual_blocks=1))
    models = [f"{v}={out / 'runs' / v}" for v in PAPER_TABLE1]
    again = tmp_path / "again"
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(again), "--models", *models, "--gan", str(gan), *tiny]) == 0
    assert not (again / "runs").exists()
    rerun = json.loads((again / "table1.json").read_text())
    assert _untimed(rerun)[:6] == _untimed(summary)
    assert {k: v for k, v in rerun["runs"].items() if k != GAN_ROW} == summary["runs"]
    assert rerun["rows"][6]["variant"] == GAN_ROW and rerun["rows"][6]["metrics"]["edits"] == 49
    assert rerun["runs"][GAN_ROW]["images_seen"] == 32
    assert f"| ours, {GAN_PROTOCOL}: {GAN_ROW} |" in (again / "table1.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "label=nowhere"], "label=nowhere: not a model directory"),
        (["--models", "gan=x"], "unknown variant"),
        (["--gan", "nowhere"], "--gan nowhere: not a GAN model directory"),
    ],
)
def test_a_bad_models_entry_is_refused_before_any_work(fer_csv, tmp_path, capsys, args, message):
    out = tmp_path / "t"
    assert main(["reproduce-table1", "--data", str(fer_csv), "--out", str(out), *args, *TINY]) != 0
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_model_is_fingerprinted_by_what_an_editor_loads_not_by_its_training_run(model_dir, tmp_path):
    import shutil

    from emodiff.table1 import model_fingerprint

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    before = model_fingerprint(model)
    (model / "checkpoint.safetensors").write_bytes(b"a later checkpoint")  # the run goes on: the model is the same
    (model / "metrics.csv").write_text("step,loss\n")
    assert model_fingerprint(model) == before
    (model / "edit_defaults.json").write_text('{"guidance": {"happy": 3}}')  # retuned: another model
    retuned = model_fingerprint(model)
    assert retuned != before
    weights = next((model / "denoiser").glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # retrained
    assert model_fingerprint(model) not in (before, retuned)
