import dataclasses

import numpy as np
import pytest
import torch

from emodiff.denoiser import NULL_LABEL, EmotionDenoiser
from emodiff.encoders import EmotionCNN
from emodiff.labels import EMOTIONS
from emodiff.pipeline import EmotionEditPipeline, sampling_scheduler
from emodiff.settings import EditSettings

from .conftest import TINY_UNET as TINY
from .conftest import random_faces as faces
from .conftest import tiny_pipeline


@pytest.mark.parametrize("cond, code_dim", [("label", 0), ("cnn", 256), ("vae", 128)])
def test_condition_shapes_for_the_three_variants(cond, code_dim):
    model = EmotionDenoiser(cond=cond, code_dim=code_dim, **TINY)
    labels = torch.tensor([0, 3, NULL_LABEL])
    codes = torch.randn(3, code_dim) if code_dim else None
    condition = model.condition(labels, codes)
    assert condition.shape == (3, 256)
    if code_dim:  # concat(label embedding 128, Linear(code) 128)
        assert model.label_embedding.embedding_dim == 128 and model.code_projection.out_features == 128
        torch.testing.assert_close(condition[:, :128], model.label_embedding(labels))
        dropped = model.condition(labels, codes, drop_code=torch.tensor([True, False, True]))
        torch.testing.assert_close(dropped[0, 128:], model.null_code)
        torch.testing.assert_close(dropped[1], condition[1])
    else:
        assert model.label_embedding.embedding_dim == 256
    out = model(torch.randn(3, 1, 48, 48), torch.tensor([1, 500, 999]), labels, codes)
    assert out.shape == (3, 1, 48, 48)


def test_mismatched_condition_config_is_refused():
    with pytest.raises(ValueError, match="code_dim"):
        EmotionDenoiser(cond="vae", code_dim=0, **TINY)
    with pytest.raises(ValueError, match="label, cnn, vae"):
        EmotionDenoiser(cond="clip", code_dim=3, **TINY)


def test_label_changes_the_prediction_and_null_label_is_its_own_embedding():
    model = EmotionDenoiser(**TINY)
    torch.nn.init.normal_(model.label_embedding.weight, std=1.0)
    x, t = torch.randn(1, 1, 48, 48), torch.tensor([300])
    outputs = [model(x, t, torch.tensor([label])) for label in (0, 3, NULL_LABEL)]
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[0], outputs[2])


@pytest.mark.parametrize("cond", ["label", "vae"])
def test_classifier_free_guidance_mixes_conditional_and_null(cond):
    pipe = tiny_pipeline(cond).to("cpu", bf16=False)
    torch.nn.init.normal_(pipe.denoiser.label_embedding.weight, std=1.0)
    x = torch.randn(2, 1, 48, 48)
    labels = torch.tensor([3, 5])
    codes = pipe._codes(x)
    with torch.no_grad():
        conditional = pipe._eps(x, 400, labels, codes, guidance=1.0)
        null = pipe._eps(x, 400, torch.full_like(labels, NULL_LABEL), codes, guidance=1.0)
        guided = pipe._eps(x, 400, labels, codes, guidance=4.0)
        unguided = pipe._eps(x, 400, labels, codes, guidance=0.0)
    torch.testing.assert_close(unguided, null, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(guided, null + 4.0 * (conditional - null), rtol=1e-4, atol=1e-4)


def test_guidance_away_from_the_source_pushes_from_the_source_prediction_not_the_null_one():
    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    torch.nn.init.normal_(pipe.denoiser.label_embedding.weight, std=1.0)
    x, labels, negatives = torch.randn(2, 1, 48, 48), torch.tensor([3, 5]), torch.tensor([0, 5])
    with torch.no_grad():
        conditional = pipe._eps(x, 400, labels, None, guidance=1.0)
        source = pipe._eps(x, 400, negatives, None, guidance=1.0)
        null = pipe._eps(x, 400, torch.full_like(labels, NULL_LABEL), None, guidance=1.0)
        away = pipe._eps(x, 400, labels, None, guidance=4.0, negatives=negatives)
    torch.testing.assert_close(away, source + 4.0 * (conditional - source), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(away[1], conditional[1], rtol=1e-4, atol=1e-5)  # the face's own emotion: no push at all
    assert not torch.allclose(away[0], null[0] + 4.0 * (conditional[0] - null[0]), atol=1e-3)


def test_away_from_the_source_its_own_decode_is_the_unguided_one_and_other_targets_change():
    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    torch.nn.init.normal_(pipe.denoiser.label_embedding.weight, std=1.0)
    x, source = faces(2, seed=5), [2, 4]
    plain = dict(strength=0.6, steps=5, keep_detail=False)
    away = pipe.edit_faces(x, [0, 2, 4], EditSettings(**plain, guidance=6.0, negative="source"), source_labels=source, seed=1)
    unguided = pipe.edit_faces(x, [0, 2, 4], EditSettings(**plain, guidance=1.0), source_labels=source, seed=1)
    toward = pipe.edit_faces(x, [0, 2, 4], EditSettings(**plain, guidance=6.0), source_labels=source, seed=1)
    np.testing.assert_allclose(away[0, 1], unguided[0, 1], atol=1)
    np.testing.assert_allclose(away[1, 2], unguided[1, 2], atol=1)
    assert np.abs(away[0, 0].astype(int) - unguided[0, 0]).mean() > 1  # another target is pushed ...
    assert np.abs(away[0, 0].astype(int) - toward[0, 0]).mean() > 1  # ... and not as guidance from null pushes it


def test_guidance_away_from_a_named_emotion_pushes_from_its_prediction_for_every_face():
    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    torch.nn.init.normal_(pipe.denoiser.label_embedding.weight, std=1.0)
    x, source = faces(2, seed=5), [0, 4]  # the first face is angry already
    plain = dict(strength=0.6, steps=5, keep_detail=False)
    named = pipe.edit_faces(x, [1], EditSettings(**plain, guidance=6.0, negative="angry"), source_labels=source, seed=1)
    away = pipe.edit_faces(x, [1], EditSettings(**plain, guidance=6.0, negative="source"), source_labels=source, seed=1)
    null = pipe.edit_faces(x, [1], EditSettings(**plain, guidance=6.0), source_labels=source, seed=1)
    np.testing.assert_allclose(named[0], away[0], atol=1)  # for an angry face, away from angry is away from its own emotion
    assert np.abs(named[1].astype(int) - away[1]).mean() > 1 and np.abs(named[1].astype(int) - null[1]).mean() > 1
    # with keep detail the change is taken over the source decoded away from the same emotion: to its own emotion, no change
    kept = EditSettings(strength=0.6, steps=5, guidance=6.0, negative="angry", normalise=False)
    own = pipe.edit_faces(x, [0, 4, 1], kept, source_labels=source, seed=1)
    np.testing.assert_array_equal(own[1, 1], x[1])
    assert np.abs(own[1, 2].astype(int) - x[1]).mean() > 1


@pytest.mark.parametrize("mode", ["paper", "sdedit", "invert"])
def test_same_seed_same_edits(mode):
    pipe = tiny_pipeline("vae")
    settings = EditSettings(mode=mode, strength=0.5, steps=6, guidance=2.0)
    a = pipe.edit_faces(faces(), [0, 3, 6], settings, seed=7)
    b = pipe.edit_faces(faces(), [0, 3, 6], settings, seed=7)
    assert a.shape == (2, 3, 48, 48) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    if mode != "invert":  # inversion is deterministic: the seed only matters for noised modes
        assert not np.array_equal(a, pipe.edit_faces(faces(), [0, 3, 6], settings, seed=8))


@pytest.mark.parametrize("mode", ["sdedit", "invert"])
def test_in_fp32_a_face_edits_the_same_alone_or_in_a_batch_to_one_grey_level(mode):
    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    settings = EditSettings(mode=mode, strength=0.6, steps=5)
    batch = pipe.edit_faces(faces(3), [1, 4], settings, source_labels=[2, 2, 2], seed=3)
    alone = pipe.edit_faces(faces(3)[1:2], [1, 4], settings, source_labels=[2], seed=3)
    difference = np.abs(batch[1].astype(int) - alone[0].astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01  # float rounding at most


def test_paper_mode_draws_each_face_its_own_noise():
    """A label-only model ignores the input in the paper's protocol: only per-face noise makes its
    edits of different faces independent samples rather than one image repeated."""
    pipe = tiny_pipeline("label")
    two = faces(2, seed=5)
    edits = pipe.edit_faces(np.stack([two[0], two[1], two[0]]), [3], EditSettings(mode="paper", steps=4), seed=0)
    # the same face, the same noise: equal up to the one grey level by which kernels may round a batch's rows
    # differently (seen with AVX2 kernels); another face's noise changes the edit by far more
    assert np.abs(edits[0].astype(int) - edits[2].astype(int)).max() <= 1
    assert np.abs(edits[0].astype(int) - edits[1].astype(int)).mean() > 5


@pytest.mark.parametrize("mode", ["sdedit", "invert"])
def test_keep_detail_adds_only_the_change_over_the_source_decode_to_the_input(mode):
    pipe = tiny_pipeline("label")  # untrained: its decodes look nothing like the input
    x, source = faces(2, seed=4), [2, 5]
    both = dict(mode=mode, strength=0.6, steps=5, push_threshold=0.0)  # no push: it would read the two kinds of edit apart
    plain = pipe.edit_faces(x, [0, 2, 5], EditSettings(**both, keep_detail=False), source_labels=source, seed=1)
    kept = pipe.edit_faces(x, [0, 2, 5], EditSettings(**both, keep_detail=True, normalise=False), source_labels=source, seed=1)
    assert np.abs(plain[0, 1].astype(int) - x[0]).mean() > 20  # the plain decode loses the input ...
    np.testing.assert_allclose(kept[0, 1], x[0], atol=1)  # ... editing to the source emotion returns it
    np.testing.assert_allclose(kept[1, 2], x[1], atol=1)
    for face, own in enumerate((1, 2)):
        expected = np.clip(x[face].astype(int) + plain[face].astype(int) - plain[face, own].astype(int), 0, 255)
        np.testing.assert_allclose(kept[face], expected, atol=2)  # plain edits are rounded to uint8 twice
    assert np.abs(kept[0, 0].astype(int) - x[0]).mean() > 1  # another target still changes the face


def test_a_localised_change_keeps_pixels_far_from_it_bit_identical():
    """A change in one corner: far from it the input stays exactly itself; at its centre it is applied whole."""
    import torch

    from emodiff.pipeline import change_mask

    change = torch.zeros(1, 1, 48, 48)
    change[..., 8:14, 8:14] = 40 / 127.5  # a 40-level change over a mouth-corner-sized patch
    change[..., 30:48, 30:48] = 2 / 127.5  # a faint 2-level change elsewhere
    mask = change_mask(change, levels=12.0)
    assert torch.all(mask[..., 8:14, 8:14] > 0.97)  # the strong change: in full
    assert torch.all(mask[..., 28:, 28:] == 0)  # the faint one, and what lies between: dropped exactly
    row = mask[0, 0, 11]
    assert 0 < row[17] < 0.9 and row[:30].diff().abs().max() < 0.3  # a fade beside the strong change, no step
    assert torch.all((mask >= 0) & (mask <= 1))


def test_localise_edits_only_where_the_change_is_strong_and_keeps_the_rest_of_the_input():
    pipe = tiny_pipeline("label")  # untrained: large changes everywhere, so use a high level
    x, source = faces(2, seed=4), [2, 5]
    settings = EditSettings(mode="invert", strength=0.6, steps=5)
    full = pipe.edit_faces(x, [0, 3], settings, source_labels=source, seed=1)
    local = pipe.edit_faces(x, [0, 3], dataclasses.replace(settings, localise=60.0), source_labels=source, seed=1)
    change = np.abs(full.astype(int) - x[:, None])
    kept = local == x[:, None]
    assert kept.mean() > 0.2 and (~kept).mean() > 0.05  # some pixels exactly the input, some edited
    strong = change > 90  # where the full change is strongest, the localised edit follows it
    assert strong.any() and np.abs(local.astype(int) - full.astype(int))[strong].mean() < 0.35 * change[strong].mean()
    with pytest.raises(ValueError, match="keep_detail"):
        EditSettings(mode="sdedit", keep_detail=False, localise=8.0)


def test_mouth_strength_redraws_the_mouth_from_deeper_and_leaves_the_rest_of_the_decode_as_it_was():
    """Differential diffusion: with a denoiser that sees each pixel alone, a pixel outside the mouth
    region follows exactly the decode of the face's own strength, and the mouth a deeper one."""
    from emodiff.pipeline import strength_map

    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    pipe._predict = lambda x, timestep, labels, codes: 0.3 * x + 0.05 * labels.view(-1, 1, 1, 1).float()  # per pixel
    x, source = faces(2, seed=4), [2, 5]
    settings = EditSettings(mode="invert", strength=0.2, steps=15, keep_detail=False, push_threshold=0.0)
    plain = pipe.edit_faces(x, [0, 3], settings, source_labels=source).astype(int)
    deeper = pipe.edit_faces(x, [0, 3], dataclasses.replace(settings, mouth_strength=0.6), source_labels=source).astype(int)
    everywhere = pipe.edit_faces(x, [0, 3], dataclasses.replace(settings, strength=0.6), source_labels=source).astype(int)
    strengths = strength_map(48, 0.2, 0.6)[0, 0].numpy()
    outside, mouth = np.isclose(strengths, 0.2), np.isclose(strengths, 0.6)
    assert outside.mean() > 0.7 and 0.02 < mouth.mean() < 0.1  # the mouth: a small region low in the face
    assert mouth[int(0.783 * 48), 24] and outside[10, 24]
    assert np.abs(deeper - plain)[..., outside].max() <= 1  # the rest of the face: as at its own strength
    assert np.abs(deeper - everywhere)[..., mouth].max() <= 1  # the mouth: as at the deeper one
    assert np.abs(everywhere - plain)[..., mouth].mean() > 3  # which is another edit there
    for bad in (dict(mouth_strength=0.2), dict(mouth_strength=1.2), dict(mode="sdedit", mouth_strength=0.6)):
        with pytest.raises(ValueError, match="mouth_strength"):
            EditSettings(**bad)


class _Reads(torch.nn.Module):
    """A stand-in for the model's CNN that reads every face as every emotion with probability ``p``
    (or, with ``unread``, as that emotion with probability 0), counting its calls."""

    def __init__(self, p: float, unread: int | None = None):
        super().__init__()
        self.p, self.unread, self.calls = p, unread, []

    def predict_proba(self, images):
        self.calls.append(len(images))
        proba = torch.full((len(images), len(EMOTIONS)), self.p)
        if self.unread is not None:
            proba[:, self.unread] = 0.0
        return proba


class _Sees(_Reads):
    """A stand-in CNN that keeps what it is shown."""

    def __init__(self, p: float):
        super().__init__(p)
        self.seen = []

    def predict_proba(self, images):
        self.seen.append(images.clone())
        return super().predict_proba(images)


def test_the_push_reads_an_edit_as_the_photo_will_show_it():
    """A photo shows a crop's change only where the paste-back reaches, over the face as the photo
    keeps it (``shown``): the push judges that, so a change the paste-back leaves out does not
    count as read."""
    from emodiff.data import to_tensor
    from emodiff.photos import Shown

    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    pipe._predict = lambda x, timestep, labels, codes: 0.3 * x + 0.005 * labels.view(-1, 1, 1, 1).float()
    x, source, targets = faces(2, seed=4), [2, 5], [0, 3]
    pushed = EditSettings(mode="invert", strength=0.2, steps=15, guidance=4.0, push_threshold=0.5)
    reach = np.zeros((2, 48, 48), np.float32)
    reach[:, :, :24] = 1  # the left half of each face reaches the photo, the right half does not
    kept = x.copy()
    kept[:, 30:36, 10:38] = 20  # the photo keeps a dark bar over the face, which the model edited without
    pipe._classifier = _Sees(0.0)
    shown_edits = pipe.edit_faces(x, targets, pushed, source_labels=source, shown=Shown(reach, kept))
    seen = pipe._classifier.seen[0].view(2, 2, 48, 48)
    face, backdrop = (to_tensor(a)[:, None, 0].expand_as(seen) for a in (x, kept))
    assert not torch.equal(backdrop[..., 24:], face[..., 24:])
    assert torch.equal(seen[..., 24:], backdrop[..., 24:])  # where the change does not reach: the face as the photo keeps it
    assert (seen[..., :24] - backdrop[..., :24]).abs().amax(dim=(-2, -1)).min() > 0.01  # every edit's change, where it reaches
    pipe._classifier = _Sees(0.0)
    whole = pipe.edit_faces(x, targets, pushed, source_labels=source)  # a crop: the edit as it is
    assert (pipe._classifier.seen[0].view(2, 2, 48, 48)[..., 24:] - face[..., 24:]).abs().amax(dim=(-2, -1)).min() > 0.01
    # the same verdicts (none read): what is shown changes what the push reads, never the edits it returns
    np.testing.assert_array_equal(shown_edits, whole)


def test_push_starts_gentle_and_raises_the_scales_only_of_edits_the_cnn_does_not_read_yet():
    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    pipe._predict = lambda x, timestep, labels, codes: 0.3 * x + 0.005 * labels.view(-1, 1, 1, 1).float()  # per pixel, small pushes
    x, source, targets = faces(2, seed=4), [2, 5], [0, 3, 6]
    settings = EditSettings(mode="invert", strength=0.2, steps=15, guidance=4.0, push_threshold=0.0)  # a decode of three steps
    pushed = dataclasses.replace(settings, push_threshold=0.5, push_low=0.5, push_high=2.0)
    # a factor scales what guidance adds to the conditional prediction: 4 -> 1 + 0.5·3 and 1 + 2·3
    gentle = pipe.edit_faces(x, targets, dataclasses.replace(settings, guidance=2.5), source_labels=source).astype(int)
    hard = pipe.edit_faces(x, targets, dataclasses.replace(settings, guidance=7.0), source_labels=source).astype(int)

    pipe._classifier = _Reads(1.0)  # every edit reads at once: all stay gentle
    assert np.array_equal(pipe.edit_faces(x, targets, pushed, source_labels=source), gentle)
    assert pipe._classifier.calls == [len(x) * len(targets)] * 2  # after every step but the last, each edit once
    pipe._classifier = _Reads(0.0)  # none reads: all pushed harder after the first step
    raised = pipe.edit_faces(x, targets, pushed, source_labels=source).astype(int)
    change = lambda edits: np.abs(edits - x[:, None].astype(int)).mean()  # noqa: E731
    assert change(gentle) < change(raised) < change(hard)
    assert pipe._classifier.calls == [len(x) * len(targets)]  # once pushed, an edit is not read again
    pipe._classifier = _Reads(1.0, unread=0)  # only the edits to angry do not read
    one = pipe.edit_faces(x, targets, pushed, source_labels=source).astype(int)
    assert pipe._classifier.calls == [6, 4]  # after the first step, only the two faces' other edits are read
    assert np.array_equal(one[:, 1:], gentle[:, 1:]) and np.array_equal(one[:, 0], raised[:, 0])
    # pushed from the step that finds an edit weak: one step more at the high scales, and a read at the last step too
    same_step = dataclasses.replace(pushed, push_same_step=True)
    pipe._classifier = _Reads(0.0)
    sooner = pipe.edit_faces(x, targets, same_step, source_labels=source).astype(int)
    assert pipe._classifier.calls == [len(x) * len(targets)] and change(raised) + 0.5 < change(sooner)
    pipe._classifier = _Reads(1.0, unread=0)
    one_sooner = pipe.edit_faces(x, targets, same_step, source_labels=source).astype(int)
    assert pipe._classifier.calls == [6, 4, 4]
    assert np.array_equal(one_sooner[:, 1:], gentle[:, 1:]) and np.array_equal(one_sooner[:, 0], sooner[:, 0])
    pipe._classifier = _Reads(1.0)
    assert np.array_equal(pipe.edit_faces(x, targets, same_step, source_labels=source), gentle)  # nothing weak: nothing changes
    # the decode under the face's own emotion is every edit's reference: never pushed, even as a target
    with_own = pipe.edit_faces(x, [0, *source], pushed, source_labels=source)
    assert np.array_equal(with_own[:, :1], pipe.edit_faces(x, [0], pushed, source_labels=source))
    assert np.array_equal(with_own[[0, 1], [1, 2]], x)  # each face edited to its own emotion is the face
    for bad in (dict(push_threshold=1.0), dict(push_threshold=-0.1), dict(push_threshold=0.5, push_low=2.0, push_high=1.0)):
        with pytest.raises(ValueError, match="push_"):
            EditSettings(**bad)
    # on by default where it was measured, inverting; off from noise or noised input
    assert EditSettings().push_threshold == 0.5 and EditSettings(mode="sdedit").push_threshold == EditSettings(mode="paper").push_threshold == 0


def test_max_change_scales_down_only_the_edits_that_change_the_face_more_than_the_budget():
    from emodiff.pipeline import within_budget

    pipe = tiny_pipeline("label").to("cpu", bf16=False)
    pipe._predict = lambda x, timestep, labels, codes: 0.3 * x + 0.02 * labels.view(-1, 1, 1, 1).float()  # labels apart
    x, source, targets = faces(2, seed=4), [2, 5], [0, 3, 6]
    settings = EditSettings(mode="invert", strength=0.2, steps=15, guidance=4.0, push_threshold=0.0)
    free = pipe.edit_faces(x, targets, settings, source_labels=source).astype(float)
    change = np.abs(free - x[:, None]).mean(axis=(-2, -1))
    budget = float(np.median(change[change > 0]))  # some edits above it, some at or below
    capped = pipe.edit_faces(x, targets, dataclasses.replace(settings, max_change=budget), source_labels=source).astype(float)
    capped_change = np.abs(capped - x[:, None]).mean(axis=(-2, -1))
    under, over = change <= budget - 0.5, change > budget + 0.5  # by more than the rounding
    assert under.any() and over.any()
    assert np.array_equal(capped[under], free[under])  # an edit within the budget is left as it is
    assert np.all(capped_change <= budget + 0.5) and np.all(capped_change[over] < change[over] - 1)
    # the capped change points the same way: a scaled copy of the free one, not another edit
    for face, target in zip(*np.nonzero(over)):
        a, b = (free[face, target] - x[face]).ravel(), (capped[face, target] - x[face]).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.99
    faces_ = torch.zeros(1, 1, 4, 4)
    edits = torch.full((1, 2, 1, 4, 4), 20 / 127.5)
    edits[0, 1] = 5 / 127.5
    assert torch.allclose(within_budget(faces_, edits, 10.0)[0, :, 0, 0, 0] * 127.5, torch.tensor([10.0, 5.0]))
    with pytest.raises(ValueError, match="max_change"):
        EditSettings(max_change=-1)


def test_normalise_edits_a_flat_face_as_fers_typical_face_and_scales_the_change_back():
    """A face with half the contrast of one at FER's typical level is edited as that face is, and
    gets half its change: not the change a model draws on a face flatter than any it learned. A
    face with more contrast than typical is edited at its own."""
    from emodiff.data import TYPICAL_LEVEL, TYPICAL_REGION, to_tensor, to_uint8
    from emodiff.pipeline import to_typical_level

    pipe = tiny_pipeline("label").to("cpu", bf16=False)  # fp32: two faces that are one to the model decode alike in a batch
    noise = faces(1, seed=4).astype(float)
    flatter = np.rint((noise - noise.mean()) * 0.5 + 128).astype(np.uint8)  # stretched to the typical contrast below
    typical = to_uint8(to_typical_level(to_tensor(flatter))[0])[0].astype(int)
    centre = typical[TYPICAL_REGION]
    assert abs(centre.mean() - TYPICAL_LEVEL[0]) < 4 and abs(centre.std() - TYPICAL_LEVEL[1]) < 4
    # a little flatter than typical (so it is stretched too), at odd levels (so it is halved exactly below)
    typical = np.clip(145 + 2 * np.round((typical - 145) * 0.9 / 2), 1, 255).astype(np.uint8)
    flat = (145 + (typical.astype(int) - 145) // 2).astype(np.uint8)
    settings = EditSettings(strength=0.6, steps=5)
    edits = pipe.edit_faces(np.stack([typical, flat]), [0, 3], settings, source_labels=[2, 2], seed=1).astype(float)
    full, halved = edits[0] - typical, edits[1] - flat
    inside = (edits[0] > 0) & (edits[0] < 255)  # the typical face's edit, not clipped
    assert np.abs(full[inside]).mean() > 10
    np.testing.assert_allclose(halved[inside], 0.5 * full[inside], atol=1.5)  # each edit rounded to whole levels
    unnormalised = pipe.edit_faces(flat[None], [0, 3], dataclasses.replace(settings, normalise=False), source_labels=[2], seed=1)[0]
    assert np.abs(unnormalised - flat.astype(float) - 0.5 * full)[inside].mean() > 0.3 * np.abs(full[inside]).mean()
    contrasty = np.clip(np.rint((typical.astype(float) - 145) * 1.5 + 145), 0, 255).astype(np.uint8)
    _, contrast = to_typical_level(to_tensor(np.stack([flat, typical, contrasty])))
    np.testing.assert_allclose(contrast.flatten().numpy(), [0.45, 0.9, 1.0], atol=0.02)  # 1.35x typical: never compressed
    with pytest.raises(ValueError, match="needs keep_detail"):
        EditSettings(keep_detail=False, normalise=True)
    assert EditSettings().normalise and not EditSettings(mode="sdedit").normalise


def test_keep_detail_decodes_a_source_emotion_that_is_also_a_target_once(monkeypatch):
    pipe = tiny_pipeline("label")
    decoded, denoise = [], pipe._denoise
    monkeypatch.setattr(pipe, "_denoise", lambda scheduler, x, *args, **kwargs: decoded.append(len(x)) or denoise(scheduler, x, *args, **kwargs))
    x, settings = faces(2, seed=4), EditSettings(mode="invert", strength=0.6, steps=3)
    some = pipe.edit_faces(x, [0, 2, 5], settings, source_labels=[2, 6], seed=1)
    assert decoded == [3 + 4]  # face 0's source (2) is a target; face 1's (6) is decoded as an extra
    more = pipe.edit_faces(x, [0, 2, 5, 6], settings, source_labels=[2, 6], seed=1)
    np.testing.assert_allclose(some.astype(int), more[:, :3].astype(int), atol=1)
    np.testing.assert_array_equal(more[1, 3], x[1])


class GaussianDenoiser(torch.nn.Module):
    """The exact noise predictor for data ~ N(mean[label], std^2) per pixel: a true score model.

    With it, DDIM inversion followed by decoding under the same label must converge to the input
    as steps grow; a timestep misalignment between the two would leave an error floor instead.
    """

    uses_code = False

    def __init__(self, alphas_cumprod: torch.Tensor, std: float = 0.5):
        super().__init__()
        self.register_buffer("alphas", alphas_cumprod.clone())
        self.means = torch.nn.Parameter(torch.linspace(-0.6, 0.6, 8).view(8, 1, 1, 1), requires_grad=False)
        self.std = std

    def forward(self, x, timesteps, labels, codes=None):
        a = self.alphas[timesteps].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * self.means[labels]) / (a * self.std**2 + 1 - a)


def test_inversion_then_decoding_with_the_same_label_reconstructs_better_with_more_steps():
    scheduler = sampling_scheduler("ddim")
    pipe = EmotionEditPipeline(GaussianDenoiser(scheduler.alphas_cumprod), scheduler).to("cpu", bf16=False)
    x = faces(2, seed=1)
    errors = []
    for steps in (5, 20, 80):
        settings = EditSettings(mode="invert", strength=0.9, steps=steps, guidance=1.0, keep_detail=False)
        out = pipe.edit_faces(x, [3], settings, source_labels=[3, 3])[:, 0]
        errors.append(np.abs(out.astype(float) - x).mean())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 1.0, errors  # gray levels
    # decoding under another label does change the face: the label is what edits
    other = pipe.edit_faces(x, [6], EditSettings(mode="invert", strength=0.9, steps=80, guidance=1.0, keep_detail=False), source_labels=[3, 3])
    assert np.abs(other[:, 0].astype(float) - x).mean() > 10 * errors[2]


def test_pipeline_save_load_round_trip(tmp_path):
    pipe = tiny_pipeline("cnn")
    pipe.save_pretrained(tmp_path)
    loaded = EmotionEditPipeline.from_pretrained(tmp_path, device="cpu")
    assert loaded.denoiser.config.cond == "cnn" and isinstance(loaded.encoder, EmotionCNN)
    settings = EditSettings(mode="sdedit", strength=0.5, steps=4)
    loaded._classifier = pipe._classifier
    np.testing.assert_array_equal(
        pipe.edit_faces(faces(), [2], settings, seed=1), loaded.edit_faces(faces(), [2], settings, seed=1)
    )


def test_public_edit_and_sample_api_take_pil_and_arrays():
    from PIL import Image

    pipe = tiny_pipeline("label")
    pipe.scheduler = sampling_scheduler("dpm", pipe.scheduler)  # swapped the diffusers way
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 52, 3), dtype=np.uint8))
    one = pipe.edit(image, "happy", steps=4, source="sad")
    assert isinstance(one, Image.Image) and one.size == (52, 60) and one.mode == "L"
    many = pipe.edit([image, np.asarray(image.convert("L"))], ["angry", 5], steps=4, source="sad")
    assert len(many) == 2 and len(many[0]) == 2
    samples = pipe.sample("surprise", 3, steps=3)
    assert len(samples) == 3 and samples[0].size == (48, 48)
    # a mode given alone takes that mode's defaults (no keep detail, no push from noise)
    assert pipe.edit(image, "happy", mode="paper", steps=3).size == (52, 60)


def test_the_api_edits_a_photo_through_the_same_face_path_as_the_cli(photo_path, tmp_path):
    from PIL import Image

    from emodiff.cli import main
    from emodiff.photos import load_photo

    pipe = tiny_pipeline("label")
    photo = load_photo(photo_path)
    edited = pipe.edit(photo, "happy", steps=3, source="sad")
    assert edited.size == photo.size and edited.mode == photo.mode  # the photo, not a 48x48 face stretched over it
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    main(["edit", str(photo_path), "--to", "happy", "--out", str(tmp_path / "out"), "--model", str(model), "--steps", "3", "--from", "sad", "--device", "cpu"])
    written = Image.open(tmp_path / "out" / f"{photo_path.stem}_happy.jpg")
    difference = np.abs(np.asarray(written, dtype=int) - np.asarray(edited, dtype=int))
    assert difference.mean() < 1.0  # the same edit; only the JPEG encoding of the file differs


@pytest.mark.parametrize(
    "array, message",
    [
        (np.random.default_rng(0).random((48, 48)), "uint8"),
        (np.zeros((48, 48), np.uint16), "uint8"),
        (np.zeros((48, 48), bool), "uint8"),
        (np.zeros((48, 48, 2), np.uint8), "shape"),
        (np.zeros((1, 1), np.uint8), "too small"),
    ],
)
def test_the_api_refuses_arrays_it_cannot_interpret(array, message):
    with pytest.raises((TypeError, ValueError), match=message):
        tiny_pipeline().edit(array, "happy", steps=2, source="sad")


def test_keep_detail_defaults_on_for_invert_only():
    assert EditSettings().keep_detail is True
    assert EditSettings(mode="sdedit").keep_detail is False and EditSettings(mode="paper").keep_detail is False


@pytest.mark.parametrize(
    "overrides, message",
    [({"strength": 0.0}, "outside"), ({"strength": 1.5}, "outside"), ({"steps": 0}, "positive"), ({"mode": "x"}, "paper"), ({"mode": "paper", "keep_detail": True}, "starts from the input"), ({"negative": "calm"}, "null, source, angry")],
)
def test_bad_edit_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        EditSettings(**overrides)


@pytest.mark.parametrize("scheduler, key", [("ddim", "clip_sample"), ("ddpm", "clip_sample"), ("dpm", "thresholding")])
def test_x0_clipping_is_on_from_noise_off_when_decoding_an_inversion(scheduler, key, monkeypatch):
    pipe = tiny_pipeline()
    pipe.scheduler = sampling_scheduler(scheduler, pipe.scheduler)
    template, before = pipe.scheduler, dict(pipe.scheduler.config)
    kind, seen = type(pipe.scheduler), []
    step = kind.step

    def recording_step(self, *args, **kwargs):
        assert self is not template  # every call steps a scheduler of its own
        seen.append(self.config[key])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(kind, "step", recording_step)
    pipe.sample("happy", 1, steps=3)
    from_noise, seen[:] = list(seen), []
    pipe.edit_faces(faces(1), [3], EditSettings(mode="invert", strength=0.5, steps=4))
    assert from_noise and all(from_noise)
    assert seen and not any(seen)
    assert dict(pipe.scheduler.config) == before and template.timesteps is not None  # the template is left as it was


def test_edits_running_at_once_in_threads_equal_edits_run_one_after_another():
    import threading

    pipe = tiny_pipeline()
    pipe.scheduler = sampling_scheduler("dpm", pipe.scheduler)  # the multistep sampler keeps state while it runs
    jobs = [(EditSettings(mode="invert", strength=0.6, steps=5), 1), (EditSettings(mode="paper", steps=7), 2), (EditSettings(mode="sdedit", strength=0.8, steps=6), 3)]
    alone = [pipe.edit_faces(faces(2, seed=seed), [0, 3], settings, source_labels=[4, 4]) for settings, seed in jobs]
    together: dict[int, np.ndarray] = {}

    def run(index):
        settings, seed = jobs[index]
        together[index] = pipe.edit_faces(faces(2, seed=seed), [0, 3], settings, source_labels=[4, 4])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, expected in enumerate(alone):
        np.testing.assert_array_equal(together[index], expected)


def test_cpu_chunking_of_the_denoiser_batch_does_not_change_edits(monkeypatch):
    import emodiff.devices as devices

    pipe = tiny_pipeline()
    settings = EditSettings(mode="invert", strength=0.6, steps=5)
    whole = pipe.edit_faces(faces(3), [0, 3, 5], settings)
    monkeypatch.setattr(devices, "CPU_CHUNK", 4)  # 3 faces x (3 targets + source) x 2 (guidance) = 24 rows -> 6 pieces
    chunked = pipe.edit_faces(faces(3), [0, 3, 5], settings)
    np.testing.assert_allclose(chunked.astype(int), whole.astype(int), atol=2)  # bf16 kernels may vary with batch size


def test_per_emotion_guidance_loads_from_the_model_directory_and_guidance_overrides_it(tmp_path, capsys):
    import json

    from PIL import Image

    from emodiff.cli import main
    from emodiff.pipeline import EDIT_DEFAULTS, EmotionEditPipeline, ModelLoadError
    from emodiff.settings import EditSettings

    directory = tmp_path / "model"
    pipe = tiny_pipeline()
    pipe.edit_defaults = {"guidance": {"happy": 2.0, "angry": 9.0}}
    pipe.save_pretrained(directory)
    assert json.loads((directory / EDIT_DEFAULTS).read_text()) == {"guidance": {"happy": 2.0, "angry": 9.0}}
    loaded = EmotionEditPipeline.from_pretrained(directory, device="cpu").to("cpu", bf16=False)
    face, plain = faces(1), EditSettings(keep_detail=False)
    own = loaded.edit_faces(face, [3, 0, 4], plain, source_labels=[6], seed=1)  # happy 2, angry 9, sad the default 7
    for column, (label, scale) in enumerate([(3, 2.0), (0, 9.0), (4, 7.0)]):
        alone = loaded.edit_faces(face, [label], dataclasses.replace(plain, guidance=scale), source_labels=[6], seed=1)
        other = loaded.edit_faces(face, [label], dataclasses.replace(plain, guidance=5.0), source_labels=[6], seed=1)
        assert np.abs(own[:, column].astype(int) - alone[:, 0]).max() <= 1  # batch composition: fp32 rounding only
        assert np.abs(own[:, column].astype(int) - other[:, 0]).max() > 1  # the scale matters

    # the command line: no --guidance takes the model's (happy: 2), --guidance overrides it
    path = tmp_path / "face.png"
    Image.fromarray(face[0]).save(path)
    common = [str(path), "--to", "happy", "--model", str(directory), "--from", "neutral", "--no-keep-detail", "--device", "cpu"]
    for name, extra in (("own", []), ("two", ["--guidance", "2"]), ("nine", ["--guidance", "9"])):
        assert main(["edit", *common, *extra, "--out", str(tmp_path / name)]) == 0
    read = lambda name: np.asarray(Image.open(tmp_path / name / "face_happy.png"))  # noqa: E731
    np.testing.assert_array_equal(read("own"), read("two"))
    assert not np.array_equal(read("own"), read("nine"))

    (directory / EDIT_DEFAULTS).write_text(json.dumps({"guidance": {"elated": 3.0}}))
    with pytest.raises(ModelLoadError, match="edit_defaults.json"):
        EmotionEditPipeline.from_pretrained(directory, device="cpu")


def test_a_per_emotion_negative_loads_from_the_model_directory_and_negative_overrides_it(tmp_path):
    import json

    from emodiff.pipeline import EDIT_DEFAULTS, EmotionEditPipeline, ModelLoadError
    from emodiff.settings import EditSettings

    directory = tmp_path / "model"
    pipe = tiny_pipeline()
    torch.nn.init.normal_(pipe.denoiser.label_embedding.weight, std=1.0)
    pipe.edit_defaults = {"guidance": {"angry": 6.0, "happy": 6.0}, "negative": {"angry": "source"}}
    pipe.save_pretrained(directory)
    loaded = EmotionEditPipeline.from_pretrained(directory, device="cpu").to("cpu", bf16=False)
    face, plain = faces(1, seed=2), EditSettings(strength=0.6, steps=5, keep_detail=False)
    own = loaded.edit_faces(face, [0, 3], plain, source_labels=[6], seed=1)  # angry away from the source, happy from null
    away = loaded.edit_faces(face, [0, 3], dataclasses.replace(plain, negative="source"), source_labels=[6], seed=1)
    null = loaded.edit_faces(face, [0, 3], dataclasses.replace(plain, negative="null"), source_labels=[6], seed=1)
    assert np.abs(own[:, 0].astype(int) - away[:, 0]).max() <= 1 and np.abs(own[:, 1].astype(int) - null[:, 1]).max() <= 1
    assert np.abs(own[:, 0].astype(int) - null[:, 0]).max() > 1 and np.abs(own[:, 1].astype(int) - away[:, 1]).max() > 1
    # with keep detail each target's change is taken over a source decode made as its own decode is
    kept = dataclasses.replace(plain, keep_detail=True, normalise=False)
    inversions = []
    invert = loaded._invert
    loaded._invert = lambda *args: inversions.append(1) or invert(*args)  # both kinds share one inversion
    own = loaded.edit_faces(face, [0, 3], kept, source_labels=[6], seed=1)
    assert len(inversions) == 1
    away = loaded.edit_faces(face, [0], dataclasses.replace(kept, negative="source"), source_labels=[6], seed=1)
    null = loaded.edit_faces(face, [3], dataclasses.replace(kept, negative="null"), source_labels=[6], seed=1)
    assert np.abs(own[:, 0].astype(int) - away[:, 0]).max() <= 1 and np.abs(own[:, 1].astype(int) - null[:, 0]).max() <= 1

    (directory / EDIT_DEFAULTS).write_text(json.dumps({"negative": {"angry": "calm"}}))
    with pytest.raises(ModelLoadError, match="negative must be one of null, source"):
        EmotionEditPipeline.from_pretrained(directory, device="cpu")


def test_other_scales_make_a_pipeline_beside_the_first_that_edits_with_them_and_leaves_the_first_alone():
    from emodiff.settings import EditSettings

    pipe = tiny_pipeline().to("cpu", bf16=False)
    pipe.edit_defaults = {"guidance": {"happy": 2.0}}
    other = pipe.with_edit_defaults({"guidance": {"happy": 9.0}})
    assert other.denoiser is pipe.denoiser and other.bf16 is False  # the same models, the same precision
    assert pipe.edit_defaults == {"guidance": {"happy": 2.0}} and other.edit_defaults == {"guidance": {"happy": 9.0}}
    face, plain = faces(1), EditSettings(keep_detail=False)
    nine = pipe.edit_faces(face, [3], dataclasses.replace(plain, guidance=9.0), source_labels=[6], seed=1)
    np.testing.assert_array_equal(other.edit_faces(face, [3], plain, source_labels=[6], seed=1), nine)
    assert not np.array_equal(pipe.edit_faces(face, [3], plain, source_labels=[6], seed=1), nine)
    with pytest.raises(ValueError, match="unknown edit defaults"):
        pipe.with_edit_defaults({"strength": {"happy": 0.3}})


def _tiny_trained_guide():
    """A tiny noise-aware classifier taught a task it can learn in seconds: class c is a bright bar in row band c."""
    from emodiff.encoders import NoisyEmotionClassifier

    torch.manual_seed(0)
    guide = NoisyEmotionClassifier(widths=(8, 16), time_dim=16)
    optimizer = torch.optim.Adam(guide.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        labels = torch.randint(0, 7, (32,), generator=generator)
        images = torch.rand(32, 1, 48, 48, generator=generator) * 0.4 - 0.2
        for row, label in enumerate(labels.tolist()):
            images[row, :, 6 * label + 3 : 6 * label + 9, 8:40] = 0.9
        loss, _ = guide.training_loss(images, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return guide.eval()


def test_classifier_guidance_raises_the_targets_probability_under_the_guiding_classifier(tmp_path):
    from emodiff.data import to_tensor
    from emodiff.encoders import NoisyEmotionClassifier

    guide = _tiny_trained_guide()
    pipe = tiny_pipeline("label")
    pipe._guide = guide
    pipe.to("cpu", bf16=False)
    x, targets, source = faces(3, seed=2), [0, 3, 6], [1, 2, 4]

    def edit(scale: float) -> np.ndarray:
        return pipe.edit_faces(x, targets, EditSettings(strength=0.4, steps=5, classifier_guidance=scale), source_labels=source, seed=1)

    def target_probability(edits: np.ndarray) -> float:
        with torch.no_grad():
            probs = guide.logits(to_tensor(edits.reshape(-1, 48, 48))).softmax(-1).view(3, len(targets), -1)
        return float(np.mean([probs[face, j, target].item() for face in range(3) for j, target in enumerate(targets)]))

    plain, guided = edit(0.0), edit(10.0)
    assert target_probability(guided) > target_probability(plain) + 0.3
    assert target_probability(edit(3.0)) > target_probability(plain) + 0.1  # a gentler push, a smaller rise
    np.testing.assert_array_equal(plain, pipe.edit_faces(x, targets, EditSettings(strength=0.4, steps=5), source_labels=source, seed=1))
    own = pipe.edit_faces(x[:1], [1], EditSettings(strength=0.4, steps=5, classifier_guidance=10.0), source_labels=[1], seed=1)
    np.testing.assert_array_equal(own[0, 0], x[0])  # editing to the source emotion still returns the input
    pipe.save_pretrained(tmp_path)  # a model directory carries its own guiding classifier
    loaded = EmotionEditPipeline.from_pretrained(tmp_path, device="cpu").to("cpu", bf16=False)
    assert isinstance(loaded.guide, NoisyEmotionClassifier)
    loaded._classifier = pipe.classifier
    np.testing.assert_array_equal(loaded.edit_faces(x, targets, EditSettings(strength=0.4, steps=5, classifier_guidance=10.0), source_labels=source, seed=1), guided)
    # per target emotion from the model directory when no scale is asked for; an asked scale overrides it
    loaded.edit_defaults = {"classifier_guidance": {EMOTIONS[targets[0]]: 10.0}}
    decodes = lambda **scale: loaded.edit_faces(x, targets, EditSettings(strength=0.4, steps=5, keep_detail=False, **scale), source_labels=source, seed=1)  # noqa: E731
    own, pushed, unpushed = decodes(), decodes(classifier_guidance=10.0), decodes(classifier_guidance=0.0)
    assert not np.array_equal(pushed[:, 0], unpushed[:, 0])
    np.testing.assert_array_equal(own[:, 0], pushed[:, 0])
    np.testing.assert_array_equal(own[:, 1:], unpushed[:, 1:])


def test_classifier_guidance_without_a_guiding_classifier_says_how_to_get_one(monkeypatch, tmp_path):
    import emodiff.pipeline

    monkeypatch.setattr(emodiff.pipeline, "SHIPPED_WEIGHTS", tmp_path)
    with pytest.raises(FileNotFoundError, match="train-encoder guide"):
        tiny_pipeline("label").edit_faces(faces(1), [0], EditSettings(steps=2, classifier_guidance=1.0), source_labels=[1])
    with pytest.raises(ValueError, match="classifier_guidance must be >= 0"):
        EditSettings(classifier_guidance=-1.0)
    from emodiff.pipeline import EmotionEditPipeline, ModelLoadError

    wrong = tiny_pipeline("label")
    wrong._guide = EmotionCNN()  # not a classifier of noisy faces
    wrong.save_pretrained(tmp_path / "model")
    with pytest.raises(ModelLoadError, match="expected a NoisyEmotionClassifier"):
        EmotionEditPipeline.from_pretrained(tmp_path / "model", device="cpu")
