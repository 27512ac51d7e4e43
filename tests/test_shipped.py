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


def test_a_built_wheel_carries_every_weight_and_asset(tmp_path):
    """pip users get the default model, the encoders and the demo files: package data, not repo files."""
    import zipfile
    from pathlib import Path

    import emodiff

    package = Path(emodiff.__file__).parent
    root = package.parent.parent
    if not (root / "pyproject.toml").is_file():
        pytest.skip("emodiff is installed from a wheel here, not from the source tree")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("emodiff-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    data = [p for folder in ("weights", "assets") for p in (package / folder).rglob("*") if p.is_file()]
    expected = {p.relative_to(package.parent).as_posix() for p in data}
    assert "emodiff/weights/default/denoiser/diffusion_pytorch_model.safetensors" in expected
    assert expected <= inside, sorted(expected - inside)


def test_the_default_model_is_shipped_small_and_edits_a_face_out_of_the_box(tmp_path):
    from emodiff.pipeline import DEFAULT_MODEL
    from emodiff.predict import sample_faces

    default_bytes = sum(f.stat().st_size for f in DEFAULT_MODEL.rglob("*") if f.is_file())
    all_bytes = sum(f.stat().st_size for f in SHIPPED_WEIGHTS.rglob("*") if f.is_file())
    assert default_bytes <= 10 * 2**20 and all_bytes <= 25 * 2**20, (default_bytes, all_bytes)

    face = sample_faces()[0]
    result = subprocess.run(
        [sys.executable, "-m", "emodiff.cli", "edit", str(face), "--to", "all", "--out", str(tmp_path), "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == sorted(f"{face.stem}_{name}.png" for name in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))


def test_the_shipped_model_with_default_settings_edits_emotions_the_judge_reads_and_keeps_the_input():
    """A regression guard on the shipped model and defaults (README: evaluation of the shipped model)."""
    import numpy as np
    from PIL import Image

    from emodiff.data import EMOTIONS
    from emodiff.evaluation import judge_labels
    from emodiff.pipeline import EmotionEditPipeline
    from emodiff.predict import sample_faces

    paths = sample_faces()  # one bundled PublicTest face per emotion, named publictest_<emotion>
    faces = np.stack([np.asarray(Image.open(p).convert("L")) for p in paths])
    sources = [EMOTIONS.index(p.stem.removeprefix("publictest_")) for p in paths]
    happy, surprise = EMOTIONS.index("happy"), EMOTIONS.index("surprise")
    pipe = EmotionEditPipeline.from_pretrained(device="cpu")
    edits = pipe.edit_faces(faces, [happy, surprise], source_labels=sources)
    judge = load_encoder("judge")
    assert (judge_labels(judge, edits[:, 0]) == happy).sum() >= 6
    assert (judge_labels(judge, edits[:, 1]) == surprise).sum() >= 6
    own = pipe.edit_faces(faces[:2], [sources[0]], source_labels=sources[:2])[:, 0]
    np.testing.assert_allclose(own[0], faces[0], atol=1)  # editing a face to its own emotion keeps it
    assert np.abs(own[1].astype(int) - faces[1]).mean() > 3  # ... and only that one
