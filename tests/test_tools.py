import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "checkpoints.sh"


def _load_tool(name: str):
    """A script of tools/ imported as a module, so its functions are tested directly."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_checkpoints_round_trip_through_their_own_branch_without_touching_main(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    (repo / ".gitignore").write_text("runs/\n")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-q", "-m", "start")
    head = _git(repo, "rev-parse", "HEAD")
    run = repo / "runs" / "label"
    (run / "samples").mkdir(parents=True)
    (run / "checkpoint.safetensors").write_bytes(b"weights")
    (run / "metrics.csv").write_text("step\n1\n")
    (run / "samples" / "grid.png").write_bytes(b"png")

    subprocess.run([str(SCRIPT), "save", "runs/label"], cwd=repo, check=True, capture_output=True)
    assert _git(repo, "rev-parse", "HEAD") == head and not _git(repo, "status", "--porcelain")
    assert _git(repo, "ls-tree", "-r", "--name-only", "checkpoints").split() == ["runs/label/checkpoint.safetensors", "runs/label/metrics.csv"]

    (run / "metrics.csv").write_text("newer\n")  # a local file is never overwritten by a restore
    (run / "checkpoint.safetensors").unlink()
    subprocess.run([str(SCRIPT), "restore"], cwd=repo, check=True, capture_output=True)
    assert (run / "checkpoint.safetensors").read_bytes() == b"weights"
    assert (run / "metrics.csv").read_text() == "newer\n"

    subprocess.run([str(SCRIPT), "save", "runs/label"], cwd=repo, check=True, capture_output=True)
    assert _git(repo, "rev-list", "--count", "checkpoints").strip() == "1"  # replaced, not stacked


def test_checkpoints_save_refuses_a_folder_without_a_checkpoint(tmp_path):
    repo = tmp_path / "repo"
    (repo / "runs" / "empty").mkdir(parents=True)
    _git(repo, "init", "-q")
    result = subprocess.run([str(SCRIPT), "save", "runs/empty"], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 2 and "runs/empty: no checkpoint.safetensors" in result.stderr


def test_guide_gradients_draws_each_guides_push_for_every_target(fer_csv, tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from emodiff.encoders import NoisyEmotionClassifier

    guides = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        NoisyEmotionClassifier(widths=(8, 16), time_dim=16).save_pretrained(tmp_path / f"guide{seed}")
        guides.append(str(tmp_path / f"guide{seed}"))
    out = tmp_path / "gradients.png"
    tool = Path(__file__).resolve().parents[1] / "tools" / "guide_gradients.py"
    printed = subprocess.run([sys.executable, str(tool), "--data", str(fer_csv), "--out", str(out), *guides],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert len([line for line in printed.splitlines() if "mean gradient norm" in line]) == 7 * 2
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (7 * 48 * 3, (4 + 4 * 2) * 48 * 3)  # a row per target: 4 faces, then 4 gradients per guide
    gradients = sheet[:, 4 * 48 * 3 :].astype(int)
    assert gradients.std() > 5 and abs(np.median(gradients) - 128) <= 2  # pushes drawn around a grey zero
    first, second = gradients[:, : 4 * 48 * 3], gradients[:, 4 * 48 * 3 :]
    assert np.abs(first - second).mean() > 1  # two guides, two different pushes


def test_per_emotion_over_sweeps_chooses_each_emotions_settings_across_sweeps_run_apart(tmp_path):
    import json

    from emodiff.labels import EMOTIONS

    def row(guidance, negative, surprise):
        per = {name: {"f1": 0.5, "identity_kept": 0.95} for name in EMOTIONS}
        per["surprise"] = dict(zip(("f1", "identity_kept"), surprise))
        return {"model": "m", "mode": "invert", "strength": 0.2, "steps": 15, "keep_detail": True, "localise": 0.0,
                "guidance": guidance, "classifier_guidance": 15.0, "negative": negative, "per_emotion": per}  # fmt: skip

    null = [row(9.0, "null", (0.60, 0.93)), row(13.0, "null", (0.70, 0.85))]  # the stronger reads better but loses the person
    away = [row(5.0, "source", (0.75, 0.91))]  # away from the source: reads better and keeps the person
    for name, rows in (("null", null), ("away", away)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"rows": rows, "chosen": rows[0]}))
    out = tmp_path / "edit_defaults.json"
    tool = Path(__file__).resolve().parents[1] / "tools" / "per_emotion_over_sweeps.py"
    subprocess.run([sys.executable, str(tool), str(tmp_path / "null.json"), str(tmp_path / "away.json"), "--out", str(out)], check=True, capture_output=True)
    chosen = json.loads(out.read_text())
    assert chosen["guidance"]["surprise"] == 5.0 and chosen["negative"]["surprise"] == "source"
    assert chosen["guidance"]["angry"] == 9.0 and chosen["negative"]["angry"] == "null"  # a tie: the first sweep's first row


def test_average_models_writes_the_weighted_mean_of_two_denoisers_and_refuses_other_architectures(tmp_path):
    import json

    import torch

    from emodiff.denoiser import EmotionDenoiser

    from .conftest import tiny_pipeline

    tool = Path(__file__).resolve().parents[1] / "tools" / "average_models.py"
    a, b = tmp_path / "a", tmp_path / "b"
    tiny_pipeline("label", seed=0).save_pretrained(a)
    tiny_pipeline("label", seed=1).save_pretrained(b)
    (a / "edit_defaults.json").write_text('{"guidance": {"happy": 5.0}}')
    (a / "checkpoint.safetensors").write_bytes(b"a run's resumable state")
    (a / "metrics.csv").write_text("images,loss\n64,0.5\n")
    soup = tmp_path / "soup"
    subprocess.run([sys.executable, str(tool), str(a), str(b), "--out", str(soup), "--weight-of-b", "0.25"], check=True, capture_output=True)

    weights = {name: EmotionDenoiser.from_pretrained(path / "denoiser").state_dict() for name, path in (("a", a), ("b", b), ("soup", soup))}
    for key, value in weights["soup"].items():
        torch.testing.assert_close(value, 0.75 * weights["a"][key] + 0.25 * weights["b"][key])
    assert any(not torch.equal(weights["soup"][k], weights["a"][k]) and not torch.equal(weights["soup"][k], weights["b"][k]) for k in weights["a"])
    assert json.loads((soup / "edit_defaults.json").read_text()) == {"guidance": {"happy": 5.0}}  # A's other parts come along
    assert (soup / "metrics.csv").read_text() == (a / "metrics.csv").read_text()
    assert not (soup / "checkpoint.safetensors").exists()

    wider = tmp_path / "wider"
    EmotionDenoiser(cond="label", block_out_channels=(32, 32), layers_per_block=1, attention_levels=(False, False)).save_pretrained(wider / "denoiser")
    refused = subprocess.run([sys.executable, str(tool), str(a), str(wider), "--out", str(tmp_path / "no")], capture_output=True, text=True)
    assert refused.returncode == 2 and "different denoiser architectures" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_guidance_rescale_brings_the_guided_prediction_to_the_conditional_spread_by_phi():
    import torch

    from .conftest import tiny_pipeline

    tool = _load_tool("guidance_rescale")
    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    torch.nn.init.normal_(pipe.denoiser.label_embedding.weight, std=1.0)
    x, labels = torch.randn(2, 1, 48, 48), torch.tensor([3, 5])
    with torch.no_grad():
        conditional, guided = pipe._eps(x, 400, labels, None, 1.0), pipe._eps(x, 400, labels, None, 9.0)

        def rescaled_eps(phi: float, guidance: float):  # as the decode calls it
            return tool.rescaled(pipe._guided, phi)(*pipe._predictions(x, 400, labels, None, None, guidance != 1.0), guidance)

        full, half, none = (rescaled_eps(phi, 9.0) for phi in (1.0, 0.5, 0.0))
        unguided = rescaled_eps(1.0, 1.0)
    assert not torch.allclose(guided.std(dim=(1, 2, 3)), conditional.std(dim=(1, 2, 3)), rtol=0.05)  # guidance widened it
    torch.testing.assert_close(full.std(dim=(1, 2, 3)), conditional.std(dim=(1, 2, 3)))
    torch.testing.assert_close(half, 0.5 * full + 0.5 * guided)
    torch.testing.assert_close(none, guided)
    torch.testing.assert_close(unguided, conditional)


@pytest.mark.slow
def test_retune_chooses_scales_into_the_model_and_compares_both_halves_with_the_baseline(model_dir, fer_csv, tmp_path, tiny_judges):
    import json
    import shutil

    import numpy as np

    from emodiff.data import load_fer2013
    from emodiff.evaluation import EditRecords, face_keys, sample_inputs, split_part

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    baseline = tmp_path / "baseline"  # a do-nothing editor's records of the faces each half evaluates, as `emodiff evaluate` writes them
    public = load_fer2013(str(fer_csv)).split("PublicTest")
    for part, per_class, folder in ("tuning", 1, baseline / "tuning"), ("reporting", 20, baseline):
        faces = sample_inputs(split_part(public, part), per_class)
        kept = np.repeat(faces.labels[:, None], 7, axis=1)
        folder.mkdir(parents=True, exist_ok=True)
        EditRecords(face_keys(faces.images), faces.labels, kept, kept, np.zeros(kept.shape)).write_csv(folder / "edits.csv")
    out = tmp_path / "retune"
    script = Path(__file__).resolve().parents[1] / "tools" / "retune.sh"
    grids = ["--null-grid", "3:0,30", "--source-grid", "9:30"]
    command = [str(script), str(model), str(out), "--data", str(fer_csv), "--per-class", "1", "--baseline", str(baseline), *tiny_judges, *grids]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    null = json.loads((out / "sweep_null" / "sweep.json").read_text())["rows"]
    source = json.loads((out / "sweep_source" / "sweep.json").read_text())["rows"]
    scales = [(r["guidance"], r["classifier_guidance"], r["negative"]) for r in null + source]
    assert sorted(scales) == [(3, 0, "null"), (3, 30, "null"), (9, 30, "source")]
    chosen = json.loads((out / "edit_defaults.json").read_text())
    assert (model / "edit_defaults.json").read_text() == (out / "edit_defaults.json").read_text()  # the model now carries them
    assert set(chosen["negative"].values()) <= {"null", "source"}
    for half in ("tuning", "reporting"):
        assert "| macro F1 |" in (out / f"compare_{half}.md").read_text()

    # a second run measures nothing again: every output is there
    stamp = (out / "reporting" / "metrics.json").stat().st_mtime_ns
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert (out / "reporting" / "metrics.json").stat().st_mtime_ns == stamp

    # a folder that is not a model is refused by name before anything runs
    result = subprocess.run([str(script), str(tmp_path), str(out), "--data", str(fer_csv)], capture_output=True, text=True)
    assert result.returncode == 2 and f"'{tmp_path}' is not a model directory" in result.stderr
    result = subprocess.run([*command[:-1], "9"], capture_output=True, text=True)  # a grid without its classifier guidances
    assert result.returncode == 2 and "grid '9' is not GUIDANCES:CLASSIFIER_GUIDANCES" in result.stderr
    # the judges given reach the sweeps: a missing one stops the first sweep, by its name
    elsewhere = [tmp_path / "again" if part == str(out) else part for part in command]
    result = subprocess.run([*elsewhere, "--judge", str(tmp_path / "no_judge")], capture_output=True, text=True)
    assert result.returncode != 0 and f"{tmp_path / 'no_judge'}: not a model directory" in result.stderr


def test_per_face_push_re_edits_at_the_higher_scales_only_what_the_cnn_does_not_read_yet():
    import numpy as np
    import torch

    from emodiff.data import to_tensor
    from emodiff.settings import EditSettings

    from .conftest import tiny_pipeline

    tool = _load_tool("per_face_push")
    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    torch.nn.init.normal_(pipe.denoiser.label_embedding.weight, std=1.0)
    pipe = pipe.with_edit_defaults({"guidance": {"happy": 3.0, "sad": 5.0}})
    assert tool.scaled(pipe, 2.0).edit_defaults["guidance"] == {"happy": 6.0, "sad": 10.0}
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    targets, settings = [3, 4], EditSettings(push_threshold=0.0)  # the two edits the tool makes
    gentle, strong = pipe.edit_faces(faces, targets, settings), tool.scaled(pipe, 2.0).edit_faces(faces, targets, settings)
    assert not np.array_equal(gentle, strong)
    np.testing.assert_array_equal(tool.per_face_editor(pipe, 1.0, 2.0, 0.0)(faces, targets), gentle)  # every edit reads enough
    np.testing.assert_array_equal(tool.per_face_editor(pipe, 1.0, 2.0, 1.0)(faces, targets), strong)  # none does
    with torch.inference_mode():
        reads = pipe.classifier.predict_proba(to_tensor(gentle.reshape(-1, 48, 48))).numpy().reshape(3, 2, 7)[:, [0, 1], targets]
    threshold = float(np.median(reads))  # some edits above it, some below
    mixed = tool.per_face_editor(pipe, 1.0, 2.0, threshold)(faces, targets)
    weak = reads < threshold
    assert weak.any() and (~weak).any()
    np.testing.assert_array_equal(mixed[~weak], gentle[~weak])
    # re-edited in a smaller batch: the same up to fp32 kernels' rounding (pipeline.edit_faces)
    assert np.abs(mixed[weak].astype(int) - strong[weak]).max() <= 1


@pytest.mark.parametrize("name, own", [("guidance_rescale", ["--phi", "1.5"]), ("per_face_push", ["--high", "2", "--threshold", "1.5"])])
def test_experiment_tools_share_evaluates_options_and_refuse_a_bad_value_by_name(name, own, tmp_path, capsys):
    tool = _load_tool(name)
    with pytest.raises(SystemExit) as stopped:
        tool.main(["--data", "fer.csv", "--out", str(tmp_path / "out"), *own])
    assert stopped.value.code == 2 and "must be in 0..1, got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        tool.main(["--help"])
    shown = capsys.readouterr().out
    assert all(option in shown for option in ("--model", "--data", "--faces", "--per-class", "--out"))
