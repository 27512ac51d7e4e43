import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from emodiff.cli import main
from emodiff.encoders import FaceVAE
from emodiff.pipeline import EmotionEditPipeline
from emodiff.table1 import run_record
from emodiff.runs import CHECKPOINT
from emodiff.training import DiffusionTrainConfig, train_diffusion

TINY = dict(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(False, False))


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    FaceVAE().save_pretrained(path)
    return path


def _config(data, out, **overrides):
    settings = dict(cond="label", data=str(data), out=str(out), images=16 * 8, batch_size=16, device="cpu", log_every=2, **TINY)
    settings.update(overrides)
    return DiffusionTrainConfig(**settings)


@pytest.mark.slow
def test_training_writes_a_usable_model_dir(fer_csv, tmp_path, vae_dir):
    out = tmp_path / "vae-run"
    result = train_diffusion(_config(fer_csv, out, cond="vae", encoder=str(vae_dir), min_snr_gamma=5.0))
    assert result["step"] == 8 and result["images_seen"] == 128
    for path in ("denoiser/config.json", "encoder/config.json", "scheduler/scheduler_config.json", "metrics.csv",
                 "training_config.json", CHECKPOINT):
        assert (out / path).exists(), path
    assert list((out / "samples").glob("*.png"))
    pipe = EmotionEditPipeline.from_pretrained(out, device="cpu")
    assert pipe.denoiser.config.cond == "vae" and pipe.denoiser.config.code_dim == 128

    exported = tmp_path / "exported"
    assert main(["export", str(out), str(exported), "--fp16"]) == 0
    assert not (exported / CHECKPOINT).exists() and not (exported / "samples").exists()
    assert run_record(exported) == run_record(out) and run_record(out)["images_seen"] == 128
    weights = load_file(exported / "denoiser" / "diffusion_pytorch_model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float16}
    half = EmotionEditPipeline.from_pretrained(exported, device="cpu")
    x, t, labels = torch.rand(2, 1, 48, 48) * 2 - 1, torch.tensor([100, 700]), torch.tensor([3, 5])
    with torch.no_grad():
        eps = pipe.denoiser(x, t, labels, pipe.encoder.encode(x))
        eps_half = half.denoiser(x, t, labels, half.encoder.encode(x))
    assert (eps - eps_half).abs().max() < 1e-2 * eps.abs().max()  # fp16 storage, fp32 compute


def test_wrong_encoder_kind_is_refused(fer_csv, tmp_path, vae_dir):
    with pytest.raises(ValueError, match="EmotionCNN"):
        train_diffusion(_config(fer_csv, tmp_path / "x", cond="cnn", encoder=str(vae_dir)))


@pytest.mark.slow
@pytest.mark.parametrize("cond", ["label", "vae"])
def test_resume_equals_uninterrupted_training(fer_csv, tmp_path, vae_dir, cond):
    encoder = None if cond == "label" else str(vae_dir)
    train_diffusion(_config(fer_csv, tmp_path / "full", cond=cond, encoder=encoder))
    parted = tmp_path / "parted"
    assert train_diffusion(_config(fer_csv, parted, cond=cond, encoder=encoder, stop_at_step=3))["step"] == 3
    with pytest.raises(ValueError, match=r"started with lr=0.0003 \(this call: 0.001\)"):
        train_diffusion(_config(fer_csv, parted, cond=cond, encoder=encoder, resume=True, lr=1e-3))
    # options left out (architecture, budget, batch size, encoder) come from the run's record
    resumed_config = DiffusionTrainConfig(cond=cond, data=str(fer_csv), out=str(parted), device="cpu", resume=True)
    assert train_diffusion(resumed_config)["step"] == 8
    full, resumed = load_file(str(tmp_path / "full" / CHECKPOINT)), load_file(str(parted / CHECKPOINT))
    assert full.keys() == resumed.keys() and any(k.startswith("ema.") for k in full)
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate launcher not on PATH")
def test_distributed_training_with_two_cpu_processes(fer_csv, tmp_path):
    out = tmp_path / "ddp"
    command = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "emodiff.cli", "train", "--cond", "label",
        "--data", str(fer_csv), "--out", str(out), "--images", "128", "--batch-size", "16",
        "--channels", "16,32", "--layers-per-block", "1", "--device", "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (MULTI_CPU)" in result.stdout
    assert result.stdout.count("saved in") == 1  # only the main process reports
    assert (out / "denoiser" / "diffusion_pytorch_model.safetensors").exists()


@pytest.mark.slow
def test_init_continues_a_trained_model_and_cosine_decays_the_learning_rate_to_zero(fer_csv, tmp_path):
    import csv

    tiny = dict(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(False, False), device="cpu", batch_size=32)
    first = tmp_path / "first"
    train_diffusion(DiffusionTrainConfig(cond="label", data=str(fer_csv), out=str(first), images=64, **tiny))
    second = tmp_path / "second"
    config = DiffusionTrainConfig(
        cond="label", data=str(fer_csv), out=str(second), images=320, init=str(first), lr_schedule="cosine",
        warmup_images=32, log_every=1, **{**tiny, "block_out_channels": (8, 16)},
    )  # fmt: skip
    result = train_diffusion(config)
    assert result["images_seen"] == 320
    trained = EmotionEditPipeline.from_pretrained(second, device="cpu").denoiser
    assert tuple(trained.config.block_out_channels) == (16, 32)  # the architecture is the init model's
    with open(second / "metrics.csv") as handle:
        rates = [float(row["lr"]) for row in csv.DictReader(handle)]
    assert max(rates) > 1e-4 and rates[-1] < 1e-6  # warmed up, then decayed to zero at the budget
    # exported, its curve starts with the init's: every image the weights have seen, counted on
    exported = tmp_path / "exported"
    assert main(["export", str(second), str(exported)]) == 0
    with open(first / "metrics.csv") as a, open(second / "metrics.csv") as b, open(exported / "metrics.csv") as c:
        before, after, history = (list(csv.DictReader(handle)) for handle in (a, b, c))
    assert len(history) == len(before) + len(after) and history[: len(before)] == before
    assert [int(row["images_seen"]) for row in history[len(before) :]] == [64 + int(row["images_seen"]) for row in after]
    assert [row["loss"] for row in history[len(before) :]] == [row["loss"] for row in after]
    assert run_record(exported)["images_seen"] == 64 + 320 and run_record(second)["images_seen"] == 320
    assert main(["export", str(exported), str(tmp_path / "again")]) == 0  # counted once, however often exported
    assert (tmp_path / "again" / "metrics.csv").read_text() == (exported / "metrics.csv").read_text()
    with pytest.raises(ValueError, match="--cond"):
        train_diffusion(DiffusionTrainConfig(cond="vae", data=str(fer_csv), out=str(tmp_path / "x"), init=str(first), **tiny))


def test_balanced_batches_draw_every_emotion_equally_and_the_same_on_every_call(tmp_path):
    from emodiff.runs import Run

    labels = torch.tensor([0] * 1000 + [1] * 10 + [4] * 100)  # as skewed as FER's disgust, and a class missing
    run = Run(tmp_path / "run", resume=False, device="cpu", seed=3, checkpoint_minutes=5)
    drawn = torch.cat([run.balanced_batch(step, labels, 64) for step in range(300)])
    assert drawn.min() >= 0 and drawn.max() < len(labels)
    shares = torch.bincount(labels[drawn], minlength=5).float() / len(drawn)
    torch.testing.assert_close(shares[[0, 1, 4]], torch.full((3,), 1 / 3), atol=0.02, rtol=0)
    assert shares[[2, 3]].sum() == 0
    assert len(set(drawn[labels[drawn] == 1].tolist())) == 10  # all ten rare faces are seen, not one of them
    assert torch.equal(run.balanced_batch(7, labels, 64), run.balanced_batch(7, labels, 64))  # resumable: a step's batch is fixed
    assert not torch.equal(run.balanced_batch(7, labels, 64), run.balanced_batch(8, labels, 64))


@pytest.mark.parametrize("max_timestep", [0, 1001])
def test_a_timestep_range_outside_the_schedule_is_refused(fer_csv, tmp_path, max_timestep):
    with pytest.raises(ValueError, match=f"--max-timestep {max_timestep}: expected 1..1000"):
        train_diffusion(_config(fer_csv, tmp_path / "x", max_timestep=max_timestep))


@pytest.mark.slow
def test_a_balanced_fine_tune_at_low_timesteps_resumes_with_its_recipe(fer_csv, tmp_path):
    """Resumed with both options left out, the run keeps them (its record) and ends where the
    uninterrupted run does; the recipe differs from a plain run's."""
    recipe = dict(balance_classes=True, max_timestep=400)
    train_diffusion(_config(fer_csv, tmp_path / "full", **recipe))
    train_diffusion(_config(fer_csv, tmp_path / "plain"))
    parted = tmp_path / "parted"
    train_diffusion(_config(fer_csv, parted, stop_at_step=3, **recipe))
    train_diffusion(DiffusionTrainConfig(cond="label", data=str(fer_csv), out=str(parted), device="cpu", resume=True))
    full, resumed, plain = (load_file(str(tmp_path / name / CHECKPOINT)) for name in ("full", "parted", "plain"))
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-4, atol=1e-6, msg=key)
    assert any(not torch.allclose(full[key], plain[key]) for key in full if key.startswith("model."))
