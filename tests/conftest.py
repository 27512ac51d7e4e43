"""Shared fixtures and helpers: small FER-2013 files and tiny models made at test time (real data is
never committed). Tests marked ``slow`` run end-to-end jobs; ``pytest -m "not slow"`` is the quick loop."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emodiff.labels import SPLITS

if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: each keeps to one thread, and so do the commands it starts
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REAL_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013_train_public.csv.gz"
SHARED_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"
TINY_UNET = dict(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(False, False))


def write_csv(path: Path, images: np.ndarray, labels, usage, extra_lines: list[str] = ()) -> Path:
    lines = ["emotion,pixels,Usage"]
    lines += [f"{l},{' '.join(map(str, img.ravel()))},{SPLITS[u]}" for img, l, u in zip(images, labels, usage)]
    lines += list(extra_lines)
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def synthetic_faces(n: int, seed: int = 0):
    """Images whose brightness pattern depends on the label, so a classifier can learn something."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    yy, xx = np.mgrid[0:48, 0:48]
    base = np.stack([(128 + 100 * np.sin((xx + 7 * l) / 6.0) * np.cos(yy / (3.0 + l))) for l in labels])
    images = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    usage = np.where(np.arange(n) < int(n * 0.75), 0, 1)
    return images, labels, usage


def tiny_pipeline(cond: str = "label", seed: int = 0):
    """An untrained pipeline small enough to sample in milliseconds, with its own untrained CNN."""
    from emodiff.denoiser import EmotionDenoiser
    from emodiff.encoders import EmotionCNN, FaceVAE
    from emodiff.pipeline import EmotionEditPipeline, sampling_scheduler

    torch.manual_seed(seed)
    encoder = {"label": None, "cnn": EmotionCNN(), "vae": FaceVAE()}[cond]
    code_dim = 0 if encoder is None else encoder.encode(torch.zeros(1, 1, 48, 48)).shape[1]
    denoiser = EmotionDenoiser(cond=cond, code_dim=code_dim, **TINY_UNET)
    return EmotionEditPipeline(denoiser, sampling_scheduler("ddim"), encoder, classifier=EmotionCNN().eval())


def random_faces(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EMODIFF_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one process-wide state; each test may ask for its own precision."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny untrained vae-variant model directory, as 'emodiff train' writes one."""
    path = tmp_path_factory.mktemp("model")
    tiny_pipeline("vae").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_judges(tmp_path_factory) -> list[str]:
    """``--judge`` and ``--second-judge`` arguments naming tiny untrained judges of the shipped two
    classes: for end-to-end commands whose tests check the plumbing, not the verdicts. The shipped
    judges (18 views of a full-resolution ResNet-18, and a transformer) were a quarter of the
    Table 1 test's time on an AMX CPU."""
    from emodiff.encoders import EmotionJudge, TransformerJudge

    torch.manual_seed(0)
    judge, second = tmp_path_factory.mktemp("judge"), tmp_path_factory.mktemp("judge2")
    EmotionJudge(widths=(8, 16), blocks=(1, 1), tta_shift=0, tta_rotate_deg=0.0, tta_zoom=0.0).eval().save_pretrained(judge)
    TransformerJudge(stem_widths=(8, 16, 32), dim=32, depth=1, heads=2).eval().save_pretrained(second)
    return ["--judge", str(judge), "--second-judge", str(second)]


@pytest.fixture
def face_files(tmp_path):
    rng = np.random.default_rng(0)
    small = tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(small)
    odd = tmp_path / "odd.png"  # still a face crop (<= 64 px), but not 48x48 and in colour
    Image.fromarray(rng.integers(0, 256, (60, 52, 3), dtype=np.uint8)).save(odd)
    return small, odd


@pytest.fixture(scope="session")
def photo_path() -> Path:
    from emodiff.assets import sample_photos

    return sample_photos()[0]


@pytest.fixture(scope="session")
def finder():
    from emodiff.photos import FaceFinder

    return FaceFinder()


@pytest.fixture
def fer_csv(tmp_path) -> Path:
    images, labels, usage = synthetic_faces(96)
    return write_csv(tmp_path / "fer.csv", images, labels, usage)


@pytest.fixture
def real_sample_csv(tmp_path) -> Path:
    """A few hundred rows of the real data set when it is beside the checkout."""
    if not REAL_CSV.exists():
        pytest.skip("real FER-2013 CSV not present")
    with gzip.open(REAL_CSV, "rt") as handle:
        lines = [next(handle) for _ in range(301)]
    path = tmp_path / "real.csv"
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="session")
def real_publictest_csv(tmp_path_factory) -> Path:
    """300 PublicTest rows of the real data set (never trained on), when it is beside the checkout."""
    if not REAL_CSV.exists():
        pytest.skip("real FER-2013 CSV not present")
    with gzip.open(REAL_CSV, "rt") as handle:
        header = next(handle)
        rows = [line for line in handle if line.rstrip().endswith(",PublicTest")]
    picked = [rows[i] for i in np.random.default_rng(0).choice(len(rows), 300, replace=False)]
    path = tmp_path_factory.mktemp("real") / "publictest300.csv"
    path.write_text(header + "".join(picked))
    return path
