import dataclasses

import pytest
import torch

from emodiff.encoders import EmotionCNN, EmotionJudge, FaceVAE, PredictionViews, TransformerJudge, load_encoder

CODE_DIMS = {EmotionCNN: 256, FaceVAE: 128, EmotionJudge: 256, TransformerJudge: 160}


@pytest.mark.parametrize("cls", list(CODE_DIMS))
def test_encode_shapes(cls):
    model = cls().eval()
    images = torch.rand(3, 1, 48, 48) * 2 - 1
    assert model.encode(images).shape == (3, CODE_DIMS[cls])


def test_classifier_and_vae_outputs():
    images = torch.rand(2, 1, 48, 48) * 2 - 1
    cnn = EmotionCNN().eval()
    assert cnn(images).shape == (2, 7)
    probs = cnn.predict_proba(images)
    assert torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-5)
    # flip-averaged: an image and its mirror get the same prediction
    assert torch.allclose(cnn.predict_proba(images.flip(-1)), probs, atol=1e-5)
    assert FaceVAE().eval()(images).shape == images.shape


def test_the_second_judge_attends_over_the_whole_face():
    """Unlike the first judge's local convolutions, one patch's change reaches every output feature
    through attention: perturb one corner, and the pooled features of a far corner's token move too."""
    torch.manual_seed(0)
    judge = TransformerJudge().eval()
    assert judge.config.stem_widths == (32, 64, 128) and judge.feature_dim == 160
    images = torch.rand(1, 1, 48, 48) * 2 - 1
    moved = images.clone()
    moved[..., :8, :8] = -1
    with torch.no_grad():
        tokens = lambda x: judge.blocks(judge.stem(x).flatten(2).transpose(1, 2) + judge.position)  # noqa: E731
        far = (tokens(images) - tokens(moved))[0, -1].abs().max()  # the bottom-right patch, 40 pixels away
    assert far > 1e-4
    assert PredictionViews.of(judge) == PredictionViews()  # mirror-only test-time views: its own recipe


@pytest.mark.parametrize("cls", list(CODE_DIMS))
def test_save_load_round_trip_gives_identical_outputs(cls, tmp_path):
    torch.manual_seed(0)
    model = cls().eval()
    with torch.no_grad():  # make BatchNorm statistics non-trivial so they must round-trip too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists()
    assert list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.bin"))
    loaded = load_encoder(tmp_path)
    assert type(loaded) is cls
    images = torch.rand(4, 1, 48, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode(images), model.encode(images))


def test_load_encoder_rejects_a_non_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_encoder(tmp_path)


def test_vae_validation_psnr_is_on_the_0_255_scale():
    vae = FaceVAE().eval()
    images = torch.rand(2, 1, 48, 48) * 2 - 1
    reconstruction = vae(images).clamp(-1, 1)
    mse_255 = ((reconstruction - images) * 127.5).pow(2).flatten(1).mean(1)
    expected = (10 * torch.log10(255.0**2 / mse_255)).mean().item()
    assert abs(vae.validation_metrics(images, None)["psnr"] - expected) < 1e-3


def test_judge_averages_mirrors_shifts_turns_and_zooms():
    torch.manual_seed(0)
    judge = EmotionJudge().eval()
    images = torch.rand(2, 1, 48, 48) * 2 - 1
    assert len(PredictionViews.of(judge).apply(images)) == 18
    probs = judge.predict_proba(images)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    # the views come in mirrored pairs, so an image and its mirror get the same prediction
    torch.testing.assert_close(judge.predict_proba(images.flip(-1)), probs, rtol=1e-4, atol=1e-5)
    previous, views = probs, PredictionViews.of(judge)
    for key in ("rotate_deg", "zoom", "shift"):
        views = dataclasses.replace(views, **{key: 0})
        fewer_views = judge.predict_proba(images, views)
        assert not torch.allclose(fewer_views, previous)  # each kind of view contributes
        previous = fewer_views
    assert len(views.apply(images)) == 2
    torch.testing.assert_close(judge.predict_proba(images), probs)  # asking for other views changed nothing stored
    expected = judge.logits(torch.cat([images, images.flip(-1)])).softmax(-1).view(2, 2, -1).mean(0)
    torch.testing.assert_close(previous, expected)


def test_judge_views_are_exact_pixel_shifts_and_stay_fp32_under_autocast():
    judge = EmotionJudge(tta_rotate_deg=0, tta_zoom=0).eval()
    images = torch.rand(2, 1, 48, 48) * 2 - 1
    padded = torch.nn.functional.pad(images, (2,) * 4, mode="replicate")
    views = PredictionViews.of(judge).apply(images)
    shifted = [padded[..., 2 + dy : 50 + dy, 2 + dx : 50 + dx] for dx, dy in ((2, 0), (-2, 0), (0, 2), (0, -2))]
    for view, expected in zip(views[1:5], shifted):
        torch.testing.assert_close(view, expected, rtol=0, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = PredictionViews.of(judge).apply(images)
    for view, reference in zip(under_autocast, views):
        assert view.dtype == torch.float32
        torch.testing.assert_close(view, reference, rtol=0, atol=1e-5)


def test_the_guides_adversarial_push_stays_in_its_ball_and_raises_the_loss():
    """Adversarial training is only as good as its attack: a push outside the radius would train on
    other faces, one that does not raise the loss would train on nothing harder than the input."""
    import torch.nn.functional as F

    from emodiff.encoders import NoisyEmotionClassifier

    torch.manual_seed(0)
    guide = NoisyEmotionClassifier(widths=(8, 16), time_dim=16, adversarial_radius=2.0).eval()
    noisy, labels = torch.rand(16, 1, 48, 48) * 2 - 1, torch.randint(0, 7, (16,))
    timesteps = torch.randint(0, 500, (16,))
    push = guide.adversarial_push(noisy, timesteps, labels)
    radius = 2.0 * guide.alphas_cumprod[timesteps].sqrt()  # a change of 2.0 to the clean face, as seen in x_t
    assert push.shape == noisy.shape and not push.requires_grad
    assert (push.flatten(1).norm(dim=1) <= radius + 1e-4).all()
    assert (push.flatten(1).norm(dim=1) > 0.5 * radius).all()  # a full step, not a vanishing one
    with torch.no_grad():
        loss = lambda x: F.cross_entropy(guide.logits(x, timesteps), labels, reduction="none")  # noqa: E731
        pushed, plain = loss(noisy + push), loss(noisy)
        random = torch.randn_like(push)
        randomly = loss(noisy + random / random.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * radius.view(-1, 1, 1, 1))
    assert (pushed > plain).all()
    assert (pushed - plain).mean() > 5 * (randomly - plain).abs().mean()
