"""The weights that ship inside the package."""

import subprocess
import sys
from pathlib import Path

import pytest

from emodiff.encoders import SHIPPED_WEIGHTS, EmotionCNN, EmotionJudge, FaceVAE, NoisyEmotionClassifier, TransformerJudge, load_encoder

KINDS = {"cnn": EmotionCNN, "vae": FaceVAE, "judge": EmotionJudge, "judge2": TransformerJudge, "guide": NoisyEmotionClassifier}


@pytest.mark.parametrize("kind", list(KINDS))
def test_shipped_encoders_load_as_float32_from_fp16_files(kind):
    files = list((SHIPPED_WEIGHTS / kind).glob("*.safetensors"))
    assert len(files) == 1
    model = load_encoder(kind)
    assert type(model) is KINDS[kind] and next(model.parameters()).dtype.is_floating_point
    assert str(next(model.parameters()).dtype) == "torch.float32"


def test_shipped_encoders_fit_the_size_budget():
    total = sum(f.stat().st_size for kind in KINDS for f in (SHIPPED_WEIGHTS / kind).iterdir())
    assert total <= 17 * 1024 * 1024, total


def test_the_package_fits_25_mb():
    package = SHIPPED_WEIGHTS.parent
    total = sum(f.stat().st_size for f in package.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    assert total <= 25 * 1024 * 1024, total


def test_predict_runs_on_the_bundled_faces():
    result = subprocess.run([sys.executable, "-m", "emodiff.cli", "predict"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 7 and all("%" in line for line in lines)


@pytest.mark.parametrize(
    "kind, floor", [("cnn", 0.56), pytest.param("judge", 0.60, marks=pytest.mark.slow), pytest.param("judge2", 0.56, marks=pytest.mark.slow)]
)
def test_shipped_classifiers_recognise_real_publictest_faces(real_publictest_csv, kind, floor):
    """A regression guard on 300 held-out faces (the README has the full-split numbers)."""
    import torch

    from emodiff.data import load_fer2013
    from emodiff.devices import autocast, bf16_supported
    from emodiff.training import evaluate_encoder

    cpu = torch.device("cpu")
    faces = load_fer2013(real_publictest_csv)
    accuracy = evaluate_encoder(load_encoder(kind), faces, cpu, lambda: autocast(cpu, bf16_supported(cpu)))["accuracy"]
    assert accuracy >= floor, accuracy


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_default_model_is_shipped_small_and_edits_a_face_out_of_the_box(tmp_path):
    from emodiff.pipeline import DEFAULT_MODEL
    from emodiff.assets import sample_faces

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

    from emodiff.labels import EMOTIONS
    from emodiff.evaluation import judge_labels
    from emodiff.pipeline import EmotionEditPipeline
    from emodiff.assets import sample_faces

    paths = sample_faces()  # one bundled PublicTest face per emotion, named publictest_<emotion>
    faces = np.stack([np.asarray(Image.open(p).convert("L")) for p in paths])
    sources = [EMOTIONS.index(p.stem.removeprefix("publictest_")) for p in paths]
    happy, surprise = EMOTIONS.index("happy"), EMOTIONS.index("surprise")
    pipe = EmotionEditPipeline.from_pretrained(device="cpu")
    edits = pipe.edit_faces(faces, [happy, surprise], source_labels=sources)
    judge = load_encoder("judge")
    # the defaults (strength 0.2, issue #20) read 7 of 7 happy and 4 of 7 surprise edits (6 before the
    # push of 2026-12-06: an edit the CNN reads as surprise after a step is not pushed, and the judge
    # does not read every such edit; over the 140 reporting faces surprise's recall is no lower, 0.79
    # against 0.74); 5 and 3 leave margin, since the defaults are chosen to keep the person at some cost in how
    # strongly surprise reads (reporting faces: surprise F1 0.87 at strength 0.4 with guidance 7, 0.83 now)
    assert (judge_labels(judge, edits[:, 0]) == happy).sum() >= 5
    assert (judge_labels(judge, edits[:, 1]) == surprise).sum() >= 3
    own = pipe.edit_faces(faces[:2], [sources[0]], source_labels=sources[:2])[:, 0]
    np.testing.assert_allclose(own[0], faces[0], atol=1)  # editing a face to its own emotion keeps it
    assert np.abs(own[1].astype(int) - faces[1]).mean() > 3  # ... and only that one


# The uint8 edits (7 bundled faces x 7 emotions, seed 0) the shipped model made before the design
# refactor of issue #16, at the settings of that time: the code that makes them may change, these
# edits may not. Stored as edits rather than hashes because CPUs of one instruction set round
# differently: oneDNN picks kernels by cache sizes as well as by ISA, and the hashes once pinned per
# kernel family (AVX512, AVX2) failed on a third machine, an AVX512 Xeon with AMX. On the machine
# that made them (``machine`` in the file) they must match to the byte; elsewhere to within what the
# kernels alone move: in fp32 one grey level in a few pixels, under bf16 autocast the spread that the
# batch size alone gives on one machine (up to 22 levels, 1.4 on average, in 58% of the pixels), so
# across machines bf16 catches only gross changes; the fp32 edits are the sharp pins (guidance 7.5
# for 7 moves half their pixels, by up to 64 levels). A new shipped model changes them all: `python
# tests/test_shipped.py` pins its edits anew (checked on 2026-12-07: re-pinned on a model-167 Xeon,
# the stored pins, made on a model-207 one, came out byte-identical).
SHIPPED_EDITS = Path(__file__).parent / "data" / "shipped_edits.npz"
PINNED = [("ddim", "invert", False), ("ddim", "sdedit", False), ("dpm", "invert", False), ("ddim", "invert", True)]


def _machine() -> str:
    """The CPU model and the torch build: what decides, together with the code, every bit of an edit."""
    import platform

    import torch

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().split("\n\n")[0].splitlines() if cpuinfo.is_file() else []  # the first core's
    info = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}
    model = ", ".join(f"{key} {info.get(key, '?')}" for key in ("model name", "cpu family", "model", "stepping"))
    return f"{platform.machine()} {model}; {torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}"


def _pin_key(scheduler: str, mode: str, bf16: bool) -> str:
    return f"{scheduler}-{mode}-{'bf16' if bf16 else 'fp32'}"


def _pinned_edits(scheduler: str, mode: str, bf16: bool):
    """The 7 bundled faces edited to all 7 emotions by the shipped model, seed 0, at fixed settings."""
    import numpy as np
    from PIL import Image

    from emodiff.assets import sample_faces
    from emodiff.pipeline import EmotionEditPipeline
    from emodiff.settings import EditSettings

    faces = np.stack([np.asarray(Image.open(p).convert("L")) for p in sample_faces()])
    pipe = EmotionEditPipeline.from_pretrained(scheduler=scheduler, device="cpu").to("cpu", bf16=bf16)
    # the defaults these edits were first made with (the strength, steps, per-emotion scales, negatives,
    # normalising and push of issue #20 change the edits, not the code)
    old = {"steps": 10, "classifier_guidance": 0.0, "negative": "null", "push_threshold": 0.0}
    settings = EditSettings(strength=0.4, guidance=7.0, normalise=False, **old) if mode == "invert" else EditSettings(mode=mode, strength=0.6, guidance=5.0, **old)
    return pipe.edit_faces(faces, list(range(7)), settings, seed=0)


@pytest.mark.parametrize(
    "scheduler, mode, bf16",
    [key if key == ("ddim", "invert", True) else pytest.param(*key, marks=pytest.mark.slow) for key in PINNED],
)
def test_shipped_model_edits_match_the_stored_edits(scheduler, mode, bf16):
    import numpy as np
    import torch

    from emodiff.devices import bf16_supported

    if bf16 and not bf16_supported(torch.device("cpu")):
        pytest.skip("bf16 edits are pinned for CPUs with bf16 units (AMX / AVX512-BF16)")
    stored = np.load(SHIPPED_EDITS)
    expected = stored[_pin_key(scheduler, mode, bf16)]
    edits = _pinned_edits(scheduler, mode, bf16)
    if _machine() == str(stored["machine"]):
        np.testing.assert_array_equal(edits, expected)
        return
    difference = np.abs(edits.astype(int) - expected)
    if bf16:
        assert difference.mean() < 3.0, f"mean difference {difference.mean():.2f} grey levels on {_machine()}"
    else:
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (
            f"{(difference > 0).mean():.2%} of pixels differ, by up to {difference.max()} grey levels, on {_machine()}"
        )


def test_the_shipped_defaults_push_some_emotions_with_the_shipped_guide_loaded_from_inside_an_edit():
    import numpy as np
    import torch
    from PIL import Image

    from emodiff.assets import sample_faces
    from emodiff.labels import EMOTIONS
    from emodiff.pipeline import EmotionEditPipeline
    from emodiff.settings import EditSettings

    pipe = EmotionEditPipeline.from_pretrained(device="cpu")
    pushed = pipe.edit_defaults["classifier_guidance"]
    assert pushed["fear"] > pushed["disgust"] > 0  # chosen per emotion (README: "Today's defaults")
    faces = np.stack([np.asarray(Image.open(p).convert("L")) for p in sample_faces()[:2]])
    fear = EMOTIONS.index("fear")
    own = pipe.edit_faces(faces, [fear], source_labels=[6, 6])  # the guide is first loaded here, under inference mode
    assert isinstance(pipe.guide, NoisyEmotionClassifier)
    off = pipe.edit_faces(faces, [fear], EditSettings(classifier_guidance=0.0), source_labels=[6, 6])
    assert np.abs(own.astype(int) - off).mean() > 0.5
    with torch.inference_mode():  # a caller's own inference mode around loading and editing
        again = EmotionEditPipeline.from_pretrained(device="cpu").edit_faces(faces, [fear], source_labels=[6, 6])
    np.testing.assert_array_equal(again, own)


if __name__ == "__main__":
    # A new shipped model changes every pinned edit: `python tests/test_shipped.py` pins its edits anew,
    # made on this machine.
    import numpy as np
    import torch

    from emodiff.devices import bf16_supported
    from emodiff.files import atomic_write

    if not bf16_supported(torch.device("cpu")):
        sys.exit("pin on a CPU with bf16 units (AMX / AVX512-BF16): the bf16 edits are pinned too")
    pins = {_pin_key(*key): _pinned_edits(*key) for key in PINNED}

    def write(temp: Path) -> None:
        with temp.open("wb") as file:  # a file, not a name: numpy would add ".npz" to the temporary's
            np.savez_compressed(file, machine=_machine(), **pins)

    atomic_write(SHIPPED_EDITS, write)
    print(f"pinned {', '.join(pins)} on {_machine()} in {SHIPPED_EDITS}")
