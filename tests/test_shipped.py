"""The weights that ship inside the package."""

import subprocess
import sys

import pytest

from emodiff.encoders import SHIPPED_WEIGHTS, EmotionCNN, EmotionJudge, FaceVAE, load_encoder

KINDS = {"cnn": EmotionCNN, "vae": FaceVAE, "judge": EmotionJudge}


@pytest.mark.parametrize("kind", list(KINDS))
def test_shipped_encoders_load_as_float32_from_fp16_files(kind):
    files = list((SHIPPED_WEIGHTS / kind).glob("*.safetensors"))
    assert len(files) == 1
    model = load_encoder(kind)
    assert type(model) is KINDS[kind] and next(model.parameters()).dtype.is_floating_point
    assert str(next(model.parameters()).dtype) == "torch.float32"


def test_shipped_encoders_fit_the_size_budget():
    total = sum(f.stat().st_size for kind in KINDS for f in (SHIPPED_WEIGHTS / kind).iterdir())
    assert total <= 15 * 1024 * 1024, total


def test_predict_runs_on_the_bundled_faces():
    result = subprocess.run([sys.executable, "-m", "emodiff.cli", "predict"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 7 and all("%" in line for line in lines)


@pytest.mark.parametrize("kind, floor", [("cnn", 0.56), ("judge", 0.60)])
def test_shipped_classifiers_recognise_real_publictest_faces(real_publictest_csv, kind, floor):
    """A regression guard on 300 held-out faces (the README has the full-split numbers)."""
    from emodiff.data import load_fer2013
    from emodiff.training import evaluate_encoder, make_accelerator

    faces = load_fer2013(real_publictest_csv)
    accuracy = evaluate_encoder(load_encoder(kind), faces, make_accelerator("cpu"))["accuracy"]
    assert accuracy >= floor, accuracy
