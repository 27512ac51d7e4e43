"""Hands: the labels, the detector, leaving faces out of training and counting hands in edits."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from emodiff import hands, training
from emodiff.data import load_fer2013, to_tensor
from emodiff.encoders import EmotionCNN, EmotionJudge
from emodiff.evaluation import evaluate_editor
from emodiff.identity import IdentityModel
from emodiff.labels import EMOTIONS
from emodiff.training import EncoderTrainConfig, train_encoder, training_faces

from .conftest import synthetic_faces, write_csv


def _with_hand(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Three pale finger-wide bars over the lower face of each face, somewhere."""
    rng, images = np.random.default_rng(seed), images.copy()
    for face in images:
        left, top = rng.integers(8, 26), rng.integers(24, 32)
        for finger in range(3):
            face[top : top + 14, left + 4 * finger : left + 4 * finger + 3] = 235
    return images


@pytest.fixture(scope="module")
def detector_and_faces():
    """A detector fitted on 80 synthetic faces, half with a hand, read by an untrained CNN's
    features: pale bars are easy, so what is tested is the fitting and the bookkeeping."""
    images, labels, usage = synthetic_faces(120, seed=3)
    has_hand = np.arange(120) % 2 == 1
    images[has_hand] = _with_hand(images[has_hand])
    faces = training.FaceSet(images, labels, usage * 0)
    torch.manual_seed(0)
    detector = hands.fit_detector(faces, EmotionCNN().eval(), {i: int(has_hand[i]) for i in range(80)}, strength=1.0)
    return detector, faces, has_hand


def test_the_shipped_labels_mark_both_kinds_of_face_in_the_full_training_split():
    labels = hands.load_labels()
    assert len(labels) == 1500 and 300 < sum(labels.values()) < 500
    assert 0 <= min(labels) and max(labels) < 28709


def test_the_detector_finds_the_hands_on_faces_it_was_not_fitted_to(detector_and_faces):
    detector, faces, has_hand = detector_and_faces
    probability = detector.probability(to_tensor(faces.images[80:]))
    assert (probability[has_hand[80:]] >= 0.5).mean() > 0.8
    assert (probability[~has_hand[80:]] < 0.5).mean() > 0.8


def test_the_detector_reports_how_well_it_finds_the_labelled_hands_held_out(detector_and_faces):
    detector, _, _ = detector_and_faces
    quality = detector.cross_validated(0.5)
    assert quality["average_precision"] > 0.9 and quality["recall"] > 0.8 and quality["precision"] > 0.8
    shuffled = dataclasses.replace(detector, hand=np.random.default_rng(0).permutation(detector.hand))  # labels that say nothing
    assert shuffled.cross_validated(0.5)["average_precision"] < 0.8


def test_find_hands_lists_what_the_detector_finds_and_the_labels_overrule_it(detector_and_faces):
    detector, faces, has_hand = detector_and_faces
    found = set(hands.find_hands(faces, detector, 0.5, labels={81: 0, 80: 1}).tolist())
    assert 81 not in found and 80 in found  # labelled faces count as labelled
    unlabelled = np.arange(82, 120)
    assert np.mean([(i in found) == has_hand[i] for i in unlabelled]) > 0.8


def test_a_leave_out_file_takes_its_faces_out_of_training_and_only_those(tmp_path):
    images, labels, usage = synthetic_faces(40)
    images[[2, 5]] = 255  # the faces to leave out, recognisable in any batch
    data = write_csv(tmp_path / "fer.csv", images, labels, usage)
    train = load_fer2013(data).split("Training")
    leave_out = tmp_path / "out.json"
    counts = hands.write_leave_out(leave_out, np.array([2, 5]), train, "test")
    assert sum(counts.values()) == 2 and counts[EMOTIONS[labels[2]]] >= 1
    kept, val = training_faces(str(data), False, str(leave_out))
    assert len(kept) == len(train) - 2 and not (kept.images == 255).all(axis=(1, 2)).any()
    assert len(val) == len(load_fer2013(data).split("PublicTest"))  # validation faces are never left out


def test_an_encoder_run_never_sees_a_left_out_face(tmp_path, monkeypatch):
    images, labels, usage = synthetic_faces(64)
    images[:4] = 255  # Training faces, recognisable in any batch
    data = write_csv(tmp_path / "fer.csv", images, labels, usage)
    leave_out = tmp_path / "out.json"
    hands.write_leave_out(leave_out, np.arange(4), load_fer2013(data).split("Training"), "test")
    seen = []
    forward = training._Objective.forward
    monkeypatch.setattr(training._Objective, "forward", lambda self, x, y: seen.append(x.clone()) or forward(self, x, y))

    def brightest_training_face(out: str, **options) -> float:
        seen.clear()
        train_encoder(EncoderTrainConfig(kind="guide", data=str(data), out=str(tmp_path / out), epochs=2, batch_size=16, device="cpu", seed=1, **options))
        return max(batch.flatten(1).mean(1).max().item() for batch in seen)

    assert brightest_training_face("all") > 0.5  # the white faces are trained on ...
    assert brightest_training_face("without", leave_out=str(leave_out)) < 0.5  # ... unless left out


@pytest.mark.parametrize(
    "content, expected",
    [("not json", "not a leave-out file"), ('{"positions": [0, 99]}', r"positions must be 0\.\.29"), ('{"other": []}', "not a leave-out file")],
)
def test_a_bad_leave_out_file_is_refused_by_name(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=expected) as error:
        hands.read_leave_out(path, 30)
    assert str(path) in str(error.value)


def test_the_shipped_labels_refuse_a_training_split_they_do_not_describe(detector_and_faces):
    _, faces, _ = detector_and_faces
    with pytest.raises(ValueError, match="full FER-2013 Training split"):
        hands.fit_detector(faces, EmotionCNN().eval())  # too few faces
    big = training.FaceSet(np.zeros((28709, 48, 48), np.uint8), np.zeros(28709, np.int64), np.zeros(28709, np.int8))
    with pytest.raises(ValueError, match="not the labelled ones"):
        hands.checked_labels(big)  # as many faces, but not those (another order)


def test_the_shipped_labels_describe_the_real_training_split():
    from .conftest import REAL_CSV

    if not REAL_CSV.exists():
        pytest.skip("real FER-2013 CSV not present")
    hands.checked_labels(load_fer2013(REAL_CSV).split("Training"))


def test_evaluation_counts_the_hands_an_editor_draws_and_none_for_one_that_draws_none(detector_and_faces):
    detector, faces, has_hand = detector_and_faces
    inputs = faces.take((np.flatnonzero(~has_hand[80:]) + 80)[:6])
    plain = lambda x, targets: np.repeat(x[:, None], len(targets), 1)  # noqa: E731
    hand = lambda x, targets: np.stack([_with_hand(x, seed) for seed in range(len(targets))], 1)  # noqa: E731
    judge = EmotionJudge().eval()
    drawn = {
        name: evaluate_editor(editor, inputs, judge, IdentityModel(), faces, progress=False, hands=detector).metrics["hands"]
        for name, editor in (("plain", plain), ("hand", hand))
    }
    assert drawn["plain"]["drawn"] == 0.0
    assert drawn["hand"]["drawn"] > 0.8 and set(drawn["hand"]["per_target"]) == set(EMOTIONS)


def test_find_hands_refuses_data_without_the_full_training_split(fer_csv, tmp_path, capsys):
    from emodiff.cli import main

    assert main(["find-hands", "--data", str(fer_csv), "--out", str(tmp_path / "hands.json")]) != 0
    assert "full FER-2013 Training split" in capsys.readouterr().err
    assert not (tmp_path / "hands.json").exists()


def test_a_leave_out_file_reads_back_the_positions_and_the_command_written(tmp_path):
    images, labels, usage = synthetic_faces(20)
    data = write_csv(tmp_path / "fer.csv", images, labels, usage)
    train = load_fer2013(data).split("Training")
    path = tmp_path / "out.json"
    hands.write_leave_out(path, np.array([1, 3]), train, "emodiff find-hands ...")
    assert json.loads(path.read_text())["about"] == "emodiff find-hands ..."
    np.testing.assert_array_equal(hands.read_leave_out(path, len(train)), [1, 3])
