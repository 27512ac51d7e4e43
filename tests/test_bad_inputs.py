"""A hostile user's inputs, each made here: every one gets a clear one-line error naming the file and
the reason (or the documented behaviour), the rest of a batch is still written, and the exit code
says that some inputs failed. Nothing is left half-written."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from emodiff.cli import main
from emodiff.labels import EMOTIONS

from .conftest import synthetic_faces, write_csv


def _bomb_png(path, width=20000, height=20000):
    """A valid 1x1 PNG whose header claims width x height: Pillow refuses it when it opens the file."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


def _edit(model_dir, out, *args):
    return main(["edit", *map(str, args), "--out", str(out), "--model", str(model_dir), "--steps", "2", "--from", "sad", "--device", "cpu"])


def test_every_bad_image_is_named_with_its_reason_and_the_rest_is_written(model_dir, tmp_path, capsys, photo_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.jpg").write_text("just text")
    good_png = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)).save(good_png)
    (bad / "truncated.png").write_bytes(good_png.read_bytes()[:60])
    _bomb_png(bad / "bomb.png")
    frames = [Image.new("L", (48, 48), shade) for shade in (0, 128, 255)]
    frames[0].save(bad / "animated.gif", save_all=True, append_images=frames[1:])
    Image.new("L", (1, 1)).save(bad / "tiny.png")
    empty_folder = tmp_path / "nothing_here"
    empty_folder.mkdir()
    sixteen = tmp_path / "deep.png"  # a 16-bit photo: scaled to 8 bits, its face found and edited
    gray = np.asarray(Image.open(photo_path).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")

    out = tmp_path / "out"
    files = sorted(bad.iterdir())
    status = _edit(model_dir, out, *files, empty_folder, good_png, sixteen, "--to", "happy")
    assert status == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    expected = {
        "empty.png": "cannot read image",
        "notes.jpg": "cannot read image",
        "truncated.png": "",
        "bomb.png": "too many pixels",
        "animated.gif": "animated image with 3 frames",
        "tiny.png": "too small to hold a face",
        "nothing_here": "holds no images",
    }
    for name, reason in expected.items():
        said = [line for line in lines if name in line]
        assert len(said) == 1 and reason in said[0], (name, said)
    assert "Traceback" not in "\n".join(lines)
    assert sorted(p.name for p in out.iterdir()) == ["deep_happy.png", "good_happy.png"]
    deep = Image.open(out / "deep_happy.png")
    assert deep.mode == "L" and np.asarray(deep).mean() > 40  # not clipped to white, not "no face found"


def test_an_output_never_overwrites_another_or_an_input(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(1)
    inputs = []
    for folder, name in (("a", "face.png"), ("b", "face.png"), ("c", "face-2.png")):
        (tmp_path / folder).mkdir()
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / folder / name)
        inputs.append(tmp_path / folder / name)
    out = tmp_path / "out"
    assert _edit(model_dir, out, *inputs, "--to", "surprise") == 0
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 3 and len(set(written)) == 3
    assert "face-2_surprise.png" in written  # c's own name; b's edit took another
    assert "wrote 3 edited image(s)" in capsys.readouterr().out

    # an output that would land on an input: refused before any work, whatever --overwrite says
    target = tmp_path / "a" / "face_surprise.png"
    Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(target)
    before = target.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert _edit(model_dir, tmp_path / "a", inputs[0], target, "--to", "surprise", *extra) == 2
        assert "is an input" in capsys.readouterr().err and target.read_bytes() == before


def test_existing_outputs_are_replaced_only_with_overwrite(model_dir, tmp_path, capsys, face_files):
    out = tmp_path / "out"
    assert _edit(model_dir, out, face_files[0], "--to", "happy", "--mode", "sdedit", "--seed", "1") == 0
    first = (out / "small_happy.png").read_bytes()
    assert _edit(model_dir, out, face_files[0], "--to", "happy", "--mode", "sdedit", "--seed", "2") == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "small_happy.png").read_bytes() == first
    assert _edit(model_dir, out, face_files[0], "--to", "happy", "--mode", "sdedit", "--seed", "2", "--overwrite") == 0
    assert (out / "small_happy.png").read_bytes() != first


def test_an_unusable_out_is_refused_before_the_model_loads(tmp_path, capsys, face_files):
    missing_model = tmp_path / "no-model"  # loading it would fail: the --out error must come first
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["edit", str(face_files[0]), "--to", "happy", "--out", str(a_file), "--model", str(missing_model)]) == 2
    assert "is a file" in capsys.readouterr().err
    # a folder that cannot be made (its parent is a file): found before the model loads, too
    assert main(["edit", str(face_files[0]), "--to", "happy", "--out", str(a_file / "sub"), "--model", str(missing_model)]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "no-model" not in err


def test_photo_metadata_is_kept_and_png_is_bit_identical_outside_the_face(model_dir, tmp_path, photo_path):
    photo = Image.open(photo_path).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "emodiff test camera"  # Make
    icc = b"\x00" * 128  # Pillow stores ICC bytes as given
    jpeg, png = tmp_path / "portrait.jpg", tmp_path / "lossless.png"
    photo.save(jpeg, quality=80, exif=exif, icc_profile=icc, dpi=(300, 300))
    photo.save(png, exif=exif, icc_profile=icc, dpi=(300, 300))
    out = tmp_path / "out"
    assert _edit(model_dir, out, jpeg, png, "--to", "angry") == 0
    source_jpeg = Image.open(jpeg)
    for name in ("portrait_angry.jpg", "lossless_angry.png"):
        edited = Image.open(out / name)
        assert edited.info.get("icc_profile") == icc, name
        assert tuple(round(v) for v in edited.info["dpi"]) == (300, 300), name
        assert edited.getexif().get(0x010F) == "emodiff test camera", name
    assert Image.open(out / "portrait_angry.jpg").quantization == source_jpeg.quantization  # the input's own quality
    original, edited = np.asarray(photo), np.asarray(Image.open(out / "lossless_angry.png").convert("RGB"))
    changed = np.argwhere(np.any(original != edited, axis=-1))
    (top, left), (bottom, right) = changed.min(0), changed.max(0)
    assert changed.size and (bottom - top) < photo.height / 2 and (right - left) < photo.width / 2  # only around the face


@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated gzip", "truncated or corrupt"),
        ("corrupt gzip", "truncated or corrupt"),
        ("binary", "not a FER-2013 CSV"),
        ("empty", "expected the header"),
    ],
)
def test_bad_data_files_are_named_with_the_reason(tmp_path, capsys, kind, message):
    images, labels, usage = synthetic_faces(20)
    good = write_csv(tmp_path / "good.csv.gz", images, labels, usage).read_bytes()
    path = tmp_path / "data.csv.gz"
    path.write_bytes({
        "truncated gzip": good[: len(good) // 2],
        "corrupt gzip": good[:20] + bytes(64) + good[84:],
        "binary": bytes(range(256)) * 40,
        "empty": b"",
    }[kind])  # fmt: skip
    out = tmp_path / "run"
    assert main(["train-encoder", "cnn", "--data", str(path), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err, err
    assert not out.exists()  # nothing started


def test_a_csv_saved_by_excel_with_a_byte_order_mark_loads(tmp_path):
    from emodiff.data import load_fer2013

    images, labels, usage = synthetic_faces(14)
    plain = write_csv(tmp_path / "plain.csv", images, labels, usage)
    bom = tmp_path / "excel.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    faces = load_fer2013(bom, use_cache=False)
    np.testing.assert_array_equal(faces.images, images)


def test_a_corrupt_checkpoint_or_model_directory_is_a_clear_error(fer_csv, tmp_path, capsys, model_dir):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.safetensors").write_bytes(b"\x00" * 100)
    assert main(["train", "--cond", "label", "--data", str(fer_csv), "--out", str(run), "--resume", "--images", "64", "--channels", "16,32", "--layers-per-block", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.safetensors" in err and "cannot resume" in err and "Traceback" not in err

    broken = tmp_path / "broken-model"
    shutil.copytree(model_dir, broken)
    weights = broken / "denoiser" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    face = tmp_path / "f.png"
    Image.new("L", (48, 48), 128).save(face)
    assert main(["edit", str(face), "--to", "happy", "--out", str(tmp_path / "o"), "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "cannot load" in err and "Traceback" not in err


def test_a_model_directory_with_only_pickled_weights_is_refused(tmp_path, model_dir):
    import shutil

    import torch

    from emodiff.pipeline import EmotionEditPipeline

    pickled = tmp_path / "pickled"
    shutil.copytree(model_dir, pickled)
    weights = pickled / "denoiser" / "diffusion_pytorch_model.safetensors"
    real = EmotionEditPipeline.from_pretrained(model_dir, device="cpu").denoiser.state_dict()
    torch.save(real, pickled / "denoiser" / "diffusion_pytorch_model.bin")  # loadable, were pickles allowed
    weights.unlink()
    with pytest.raises(ValueError, match="cannot load"):
        EmotionEditPipeline.from_pretrained(pickled, device="cpu")


def test_every_emotion_name_is_offered_when_one_is_wrong(tmp_path, capsys, face_files):
    assert main(["edit", str(face_files[0]), "--to", "elated", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in EMOTIONS) and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_killed_run_leaves_no_temp_files_behind_when_resumed(fer_csv, tmp_path):
    tiny = ["--channels", "16,32", "--layers-per-block", "1", "--device", "cpu", "--images", "128", "--batch-size", "64"]
    run = tmp_path / "run"
    assert main(["train", "--cond", "label", "--data", str(fer_csv), "--out", str(run), "--stop-at-step", "1", *tiny]) == 0
    (run / ".checkpoint.safetensors.abc123.tmp").write_bytes(b"\x00" * 1000)  # what kill -9 mid-save leaves
    (run / "denoiser" / ".save-xyz").mkdir()
    assert main(["train", "--cond", "label", "--data", str(fer_csv), "--out", str(run), "--resume", *tiny]) == 0
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".save-*"))
