import csv

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emodiff import training
from emodiff.encoders import load_encoder
from emodiff.runs import CHECKPOINT
from emodiff.training import EncoderTrainConfig, train_encoder

from .conftest import synthetic_faces, write_csv


def _config(data, out, **overrides):
    settings = dict(kind="cnn", data=str(data), out=str(out), epochs=2, batch_size=16, device="cpu", seed=1)
    settings.update(overrides)
    return EncoderTrainConfig(**settings)


def _rows(out):
    with open(out / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("kind", ["cnn", "vae", "judge"])
def test_train_writes_model_metrics_and_checkpoint(fer_csv, tmp_path, kind):
    out = tmp_path / kind
    result = train_encoder(_config(fer_csv, out, kind=kind, epochs=1))
    assert result["step"] == result["total_steps"] == 72 // 16
    assert (out / "config.json").exists() and (out / CHECKPOINT).exists()
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == [1]
    metric = "val_psnr" if kind == "vae" else "val_accuracy"
    assert float(rows[0][metric]) > 0
    assert load_encoder(out).encode(torch.zeros(1, 1, 48, 48)).ndim == 2
    if kind == "vae":
        assert (out / "reconstructions.png").exists()


@pytest.mark.parametrize("kind", ["cnn", "vae"])
def test_resume_continues_from_the_saved_step_and_matches_uninterrupted(fer_csv, tmp_path, kind):
    full = tmp_path / "full"
    train_encoder(_config(fer_csv, full, kind=kind))

    parted = tmp_path / "parted"
    first = train_encoder(_config(fer_csv, parted, kind=kind, stop_at_step=3))
    assert first["step"] == 3
    with pytest.raises(FileExistsError, match="--resume"):
        train_encoder(_config(fer_csv, parted, kind=kind))
    second = train_encoder(_config(fer_csv, parted, kind=kind, resume=True))
    assert second["step"] == 8
    assert [int(r["step"]) for r in _rows(parted)] == [4, 8]

    a, b = load_file(str(full / CHECKPOINT)), load_file(str(parted / CHECKPOINT))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_init_fine_tunes_from_a_trained_model_of_the_same_kind(fer_csv, tmp_path):
    start = tmp_path / "start"
    train_encoder(_config(fer_csv, start, epochs=1))
    trained = dict(load_encoder(start).named_parameters())

    def weights_after_one_step(out, **overrides):  # lr ~0: one step leaves the starting weights
        train_encoder(_config(fer_csv, out, lr=1e-12, stop_at_step=1, **overrides))
        return {k.removeprefix("model."): v for k, v in load_file(str(out / CHECKPOINT)).items() if k.startswith("model.")}

    fine_tuned = weights_after_one_step(tmp_path / "fine", init=str(start))
    scratch = weights_after_one_step(tmp_path / "scratch")
    for name, value in trained.items():
        torch.testing.assert_close(fine_tuned[name], value.detach(), msg=name)
    assert not all(torch.allclose(scratch[name], value) for name, value in trained.items())

    with pytest.raises(ValueError, match="FaceVAE"):
        train_encoder(_config(fer_csv, tmp_path / "vae", kind="vae", init=str(start)))
    assert not (tmp_path / "vae").exists()


def test_the_guide_trains_adversarially_at_the_radius_given_and_a_fine_tune_keeps_it(fer_csv, tmp_path):
    robust = tmp_path / "robust"
    train_encoder(_config(fer_csv, robust, kind="guide", epochs=1, adversarial_radius=1.5))
    assert load_encoder(robust).config.adversarial_radius == 1.5
    fine = tmp_path / "fine"
    train_encoder(_config(fer_csv, fine, kind="guide", epochs=1, init=str(robust), stop_at_step=2))
    train_encoder(_config(fer_csv, fine, kind="guide", epochs=1, resume=True))  # --init's radius, kept by the resume
    assert load_encoder(fine).config.adversarial_radius == 1.5
    plain = tmp_path / "plain"
    train_encoder(_config(fer_csv, plain, kind="guide", epochs=1, init=str(robust), adversarial_radius=0.0))
    assert load_encoder(plain).config.adversarial_radius == 0.0
    with pytest.raises(ValueError, match="only the guide trains adversarially, not cnn"):
        train_encoder(_config(fer_csv, tmp_path / "cnn", adversarial_radius=1.0))
    with pytest.raises(ValueError, match="expected a radius >= 0"):
        train_encoder(_config(fer_csv, tmp_path / "negative", kind="guide", adversarial_radius=-1.0))
    assert not (tmp_path / "cnn").exists() and not (tmp_path / "negative").exists()


def test_a_class_balanced_encoder_run_sees_every_emotion_about_equally_often(tmp_path, monkeypatch):
    images, _, _ = synthetic_faces(140)
    labels = np.where(np.arange(140) < 110, 3, np.arange(140) % 7)  # mostly happy, as FER-2013 is
    data = write_csv(tmp_path / "skewed.csv", images, labels, np.where(np.arange(140) < 120, 0, 1))
    seen = []
    forward = training._Objective.forward
    monkeypatch.setattr(training._Objective, "forward", lambda self, x, y: seen.append(y.clone()) or forward(self, x, y))

    def share_of_happy(**options) -> float:
        seen.clear()
        train_encoder(_config(data, tmp_path / str(len(list(tmp_path.iterdir()))), kind="guide", epochs=4, **options))
        drawn = torch.cat(seen)
        return (drawn == 3).float().mean().item()

    assert share_of_happy() > 0.7
    assert abs(share_of_happy(balance_classes=True) - 1 / 7) < 0.08


def test_fingers_are_drawn_over_the_faces_a_run_trains_on_and_nowhere_else(fer_csv, tmp_path, monkeypatch):
    seen = []
    forward = training._Objective.forward
    monkeypatch.setattr(training._Objective, "forward", lambda self, x, y: seen.append(x.clone()) or forward(self, x, y))

    def first_batch(**options) -> torch.Tensor:
        seen.clear()
        train_encoder(_config(fer_csv, tmp_path / str(len(list(tmp_path.iterdir()))), kind="guide", epochs=1, stop_at_step=1, **options))
        return seen[0]

    plain, fingers = first_batch(), first_batch(fingers=1.0)
    assert torch.equal(plain[..., :16, :], fingers[..., :16, :])  # the same faces, flipped and warped the same way ...
    assert (plain[..., 16:, :] != fingers[..., 16:, :]).flatten(1).any(1).all()  # ... each with bars over its lower face


def test_unknown_kind_is_refused(fer_csv, tmp_path):
    with pytest.raises(ValueError, match="cnn, vae, judge"):
        train_encoder(_config(fer_csv, tmp_path / "x", kind="gan"))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_run_resumes(fer_csv, tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors import safe_open

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "emodiff.cli", "train-encoder", "cnn", "--data", str(fer_csv), "--out", str(out),
               "--epochs", "200", "--batch-size", "16", "--device", "cpu", "--checkpoint-minutes", "60", "--seed", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while not (out / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "--resume" in err
    with safe_open(str(out / CHECKPOINT), framework="pt") as handle:
        saved_step = json.loads(handle.metadata()["state"])["step"]
    assert 4 <= saved_step < 200 * 4
    resumed = train_encoder(_config(fer_csv, out, epochs=200, resume=True, stop_at_step=saved_step + 1))
    assert resumed["step"] == saved_step + 1
