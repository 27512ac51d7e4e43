"""The StarGAN-style peer: training, resuming, editing through the same paths as the diffusion model."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from emodiff.cli import main
from emodiff.gan import ExpressionGenerator, GanEditor
from emodiff.labels import EMOTIONS
from emodiff.pipeline import load_editor
from emodiff.runs import CHECKPOINT, METRICS
from emodiff.training import GanTrainConfig, train_gan

from .conftest import random_faces, synthetic_faces, write_csv

TINY_GAN = dict(generator_channels=(8, 16), residual_blocks=1, discriminator_channels=(8, 16, 16, 16))


def _config(data, out, **overrides):
    settings = dict(data=str(data), out=str(out), images=16 * 6, batch_size=16, device="cpu", log_every=2, **TINY_GAN)
    return GanTrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def gan_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan")
    data = write_csv(root / "fer.csv", *synthetic_faces(64))
    train_gan(_config(data, root / "run", images=16 * 2))
    return root / "run"


def test_a_resumed_run_ends_in_the_state_of_an_uninterrupted_one(fer_csv, tmp_path):
    whole = train_gan(_config(fer_csv, tmp_path / "whole"))
    parted = tmp_path / "parted"
    assert train_gan(_config(fer_csv, parted, stop_at_step=2))["step"] == 2
    with pytest.raises(FileExistsError, match="--resume"):
        train_gan(_config(fer_csv, parted))
    resumed = train_gan(_config(fer_csv, parted, resume=True))
    assert resumed["step"] == whole["step"] == 6 and resumed["images_seen"] == 96
    a, b = load_file(tmp_path / "whole" / CHECKPOINT), load_file(parted / CHECKPOINT)
    assert a.keys() == b.keys() and any(k.startswith("discriminator.") for k in a) and any(k.startswith("optimizer.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert (tmp_path / "whole" / METRICS).read_text().splitlines()[1:] != []
    for out in (tmp_path / "whole", parted):
        assert list((out / "samples").glob("*.png")) and (out / "generator" / "config.json").is_file()


def test_training_moves_both_networks(fer_csv, tmp_path):
    run = tmp_path / "run"
    train_gan(_config(fer_csv, run, stop_at_step=1))
    before = load_file(run / CHECKPOINT)
    train_gan(_config(fer_csv, run, resume=True, stop_at_step=3))
    after = load_file(run / CHECKPOINT)
    for network in ("generator.", "discriminator.", "ema."):
        moved = [k for k in after if k.startswith(network) and after[k].is_floating_point() and not torch.equal(before[k], after[k])]
        assert moved, network


def test_a_face_is_edited_to_seven_distinct_outputs(gan_dir):
    editor = load_editor(gan_dir, device="cpu")
    assert isinstance(editor, GanEditor)
    faces = random_faces(2)
    edits = editor.edit_faces(faces, list(range(len(EMOTIONS))))
    assert edits.shape == (2, 7, 48, 48) and edits.dtype == np.uint8
    for face_edits in edits:
        assert len({e.tobytes() for e in face_edits}) == 7
    np.testing.assert_array_equal(editor.edit_faces(faces[1:], [3, 0])[0], edits[1, [3, 0]])  # no batch or noise dependence


def test_a_generator_that_changes_nothing_returns_the_input_exactly():
    generator = ExpressionGenerator(channels=(8, 16), residual_blocks=1)
    torch.nn.init.zeros_(generator.net[-1].weight)
    torch.nn.init.zeros_(generator.net[-1].bias)
    faces = np.stack([np.arange(48 * 48, dtype=np.int64).reshape(48, 48) % 256, random_faces(1)[0]]).astype(np.uint8)
    edits = GanEditor(generator).to("cpu", bf16=False).edit_faces(faces, [0, 6])
    np.testing.assert_array_equal(edits, np.repeat(faces[:, None], 2, axis=1))  # 0 and 255 included


def test_edit_takes_a_gan_model_for_crops_and_photos(gan_dir, tmp_path, photo_path, capsys):
    face, photo_png = tmp_path / "face.png", tmp_path / "photo.png"  # PNG: bit-identical outside the face
    Image.fromarray(random_faces(1)[0]).save(face)
    Image.open(photo_path).save(photo_png)
    out = tmp_path / "out"
    assert main(["edit", str(face), str(photo_png), "--to", "all", "--out", str(out), "--model", str(gan_dir), "--device", "cpu"]) == 0
    crops = [np.asarray(Image.open(out / f"face_{e}.png")) for e in EMOTIONS]
    assert len({c.tobytes() for c in crops}) == 7
    photo = Image.open(photo_png)
    edited = Image.open(out / "photo_happy.png")
    assert edited.size == photo.size
    changed = np.argwhere(np.any(np.asarray(photo.convert("RGB")) != np.asarray(edited.convert("RGB")), axis=-1))
    assert changed.size and np.ptp(changed[:, 0]) < photo.height / 2  # around the face only


def test_export_writes_an_fp16_gan_that_edits_alike(gan_dir, tmp_path):
    exported = tmp_path / "exported"
    assert main(["export", str(gan_dir), str(exported), "--fp16"]) == 0
    assert not (exported / CHECKPOINT).exists() and (exported / METRICS).is_file()
    weights = load_file(exported / "generator" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float16}
    faces = random_faces(2)
    full = load_editor(gan_dir, device="cpu").to("cpu", bf16=False).edit_faces(faces, [3])
    half = load_editor(exported, device="cpu").to("cpu", bf16=False).edit_faces(faces, [3])
    assert np.abs(full.astype(int) - half.astype(int)).max() <= 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{tmp}/missing.csv"], "missing.csv"),
        (["--images", "8"], "less than one batch"),
        (["--resume"], "cannot resume"),
    ],
)
def test_bad_inputs_to_train_gan_are_clear_errors(fer_csv, tmp_path, capsys, args, message):
    run = tmp_path / "run"
    if "--resume" in args:
        run.mkdir()
        (run / CHECKPOINT).write_bytes(b"\x00" * 100)
    args = [a.format(tmp=tmp_path) for a in args]
    data = [] if "--data" in args else ["--data", str(fer_csv)]
    assert main(["train-gan", *data, "--out", str(run), "--device", "cpu", "--batch-size", "16", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_sweep_gives_a_gan_one_row_beside_the_diffusion_grid(gan_dir, model_dir, fer_csv, tmp_path, tiny_judges):
    import json

    out = tmp_path / "sweep"
    args = ["--strengths", "0.4", "--guidances", "5", "--keep-detail", "on", "--steps", "2", "--per-class", "1"]
    assert main(["sweep", "--data", str(fer_csv), "--model", str(gan_dir), "--model", str(model_dir), "--out", str(out), "--device", "cpu", *args, *tiny_judges]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["gan", "invert"] and rows[0]["strength"] is None and rows[1]["strength"] == 0.4
    assert " | gan | – | – | – | – | " in (out / "sweep.md").read_text()


def test_the_web_app_serves_a_gan(gan_dir, photo_path):
    from emodiff.app import EditService

    service = EditService(str(gan_dir), device="cpu")
    try:
        edited, (before, after), strip, files = service.edit(str(photo_path), ["happy"], 0.4)
        assert Image.open(edited).size == Image.open(photo_path).size and len(strip) == 7
    finally:
        service.close()
