import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from sklearn.metrics import f1_score, precision_score, recall_score

from emodiff.data import FaceSet
from emodiff.encoders import EmotionJudge
from emodiff.evaluation import (
    IdentityModel, choose_setting, emotion_scores, evaluate_editor, frechet_distance, sample_inputs, write_report,
)
from emodiff.assets import sample_faces


@pytest.fixture(scope="module")
def identity():
    return IdentityModel()


@pytest.fixture(scope="module")
def real_faces():
    """The bundled PublicTest crops: one real face per emotion, always available."""
    return np.stack([np.asarray(Image.open(path).convert("L")) for path in sample_faces()])


@pytest.fixture(scope="module")
def judge():
    torch.manual_seed(0)
    return EmotionJudge().eval()


def test_emotion_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    true, predicted = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    predicted[:100] = true[:100]
    scores = emotion_scores(true, predicted)
    labels = list(range(7))
    np.testing.assert_allclose(list(scores["f1"].values()), f1_score(true, predicted, labels=labels, average=None))
    np.testing.assert_allclose(list(scores["precision"].values()), precision_score(true, predicted, labels=labels, average=None))
    np.testing.assert_allclose(list(scores["recall"].values()), recall_score(true, predicted, labels=labels, average=None))
    assert scores["macro_f1"] == pytest.approx(f1_score(true, predicted, average="macro"))
    assert np.asarray(scores["confusion"]).sum() == 300


def test_identity_distance_small_for_a_blur_large_for_another_person(identity, real_faces):
    blurred = np.stack([np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(0.8))) for f in real_faces])
    same = identity.distance(real_faces, blurred)
    others = identity.distance(real_faces, np.roll(real_faces, 1, axis=0))
    assert np.median(same) < 0.45 < np.median(others)
    assert np.all(identity.distance(real_faces, real_faces) < 1e-6)


def test_identity_descriptors_over_worker_processes_match_one_process(real_faces, monkeypatch):
    import emodiff.identity

    monkeypatch.setattr(emodiff.identity, "PARALLEL_MIN_FACES", 4)
    faces = np.concatenate([real_faces, real_faces[::-1]])
    parallel = IdentityModel(workers=2)
    np.testing.assert_allclose(parallel.descriptors(faces), parallel._descriptors(faces), atol=1e-6)


def test_frechet_distance_zero_for_identical_sets_and_grows_with_a_shift(judge):
    rng = np.random.default_rng(0)
    faces = rng.integers(40, 200, (64, 48, 48)).astype(np.uint8)
    same = frechet_distance(judge, faces, faces)
    shifted = [frechet_distance(judge, faces, np.clip(faces.astype(int) + s, 0, 255).astype(np.uint8)) for s in (10, 40, 80)]
    assert abs(same) < 1e-3 * shifted[0]  # an untrained judge: small features, so compare relatively
    assert shifted[0] < shifted[1] < shifted[2]


@pytest.mark.slow
def test_do_nothing_editor_keeps_identity_but_scores_chance_emotion(identity, real_faces, judge, tmp_path):
    inputs = FaceSet(np.repeat(real_faces, 2, axis=0), np.repeat(np.arange(7), 2), np.ones(14, np.int8))
    do_nothing = lambda faces, targets: np.repeat(faces[:, None], len(targets), axis=1)  # noqa: E731
    evaluation = evaluate_editor(do_nothing, inputs, judge, identity, reference=inputs, batch_size=5, progress=False)
    m = evaluation.metrics
    assert m["edits"] == 14 * 7 and evaluation.edits.shape == (14, 7, 48, 48)
    assert m["identity"]["kept_fraction"] == 1.0 and m["change"]["mean_abs_pixel"] == 0.0
    # every target gets the same verdict per input, so F1 cannot beat 1/7 whatever the judge says
    assert m["emotion"]["macro_f1"] <= 1 / 7 + 1e-9
    write_report(evaluation, tmp_path, "do nothing", "emodiff evaluate ...")
    report = (tmp_path / "report.md").read_text()
    assert "| **all** |" in report and "100%" in report
    assert json.loads((tmp_path / "metrics.json").read_text())["edits"] == 98
    # every edit recorded for emodiff compare, and intervals that hold the estimate
    assert len((tmp_path / "edits.csv").read_text().splitlines()) == 1 + 98
    low, high = m["intervals"]["macro_f1"]
    assert low <= m["emotion"]["macro_f1"] <= high and m["intervals"]["identity_kept"] == [1.0, 1.0]
    assert "95% intervals, from 2000 resamples of the 14 input faces" in report
    assert (tmp_path / "grid.png").exists() and (tmp_path / "confusion.png").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_perfect_editor_scores_full_emotion_f1(identity, real_faces):
    """An 'editor' that returns a real face of each target emotion: the judge agreeing is all it takes."""

    class Oracle(torch.nn.Module):  # judges a face by which bundled face it is
        config = EmotionJudge().config

        def predict_proba(self, images):
            reference = (torch.from_numpy(real_faces).float() / 127.5 - 1).flatten(1)
            return torch.nn.functional.one_hot(torch.cdist(images.flatten(1), reference).argmin(1), 7).float()

        def parameters(self):
            return iter([torch.zeros(1)])

    inputs = FaceSet(real_faces, np.arange(7), np.ones(7, np.int8))
    swap = lambda faces, targets: np.repeat(real_faces[targets][None], len(faces), axis=0)  # noqa: E731
    m = evaluate_editor(swap, inputs, Oracle(), identity, reference=inputs, progress=False).metrics
    assert m["emotion"]["macro_f1"] == 1.0 and m["real_inputs"]["macro_f1"] == 1.0
    assert m["identity"]["kept_fraction"] < 0.5  # it replaced the people
    assert "second_judge" not in m

    # the oracle as the second judge: its verdicts are reported on their own, beside the first judge's
    torch.manual_seed(0)
    both = evaluate_editor(swap, inputs, EmotionJudge().eval(), identity, reference=inputs, progress=False, second_judge=Oracle())
    second = both.metrics["second_judge"]
    assert second["emotion"]["macro_f1"] == 1.0 and second["real_inputs"]["macro_f1"] == 1.0 and second["model"] == "Oracle"
    assert both.metrics["emotion"]["macro_f1"] < 1.0  # an untrained first judge does not agree
    from emodiff.evaluation import markdown_report

    report = markdown_report(both.metrics, "both judges")
    assert "F1, second judge" in report and "**1.000** (macro)" in report


def test_sample_inputs_is_balanced_and_seeded():
    labels = np.repeat(np.arange(7), [30, 3, 30, 30, 30, 30, 30])
    faces = FaceSet(np.zeros((len(labels), 48, 48), np.uint8), labels, np.ones(len(labels), np.int8))
    a, b = sample_inputs(faces, 5, seed=1), sample_inputs(faces, 5, seed=1)
    assert np.bincount(a.labels).tolist() == [5, 3, 5, 5, 5, 5, 5]
    np.testing.assert_array_equal(a.labels, b.labels)


def test_choose_setting_prefers_f1_among_identity_keeping_rows():
    rows = [
        {"macro_f1": 0.6, "identity_kept": 0.5},
        {"macro_f1": 0.4, "identity_kept": 0.95},
        {"macro_f1": 0.3, "identity_kept": 0.99},
    ]
    assert choose_setting(rows)[0] is rows[1]
    assert choose_setting([rows[0], {"macro_f1": 0.2, "identity_kept": 0.8}])[0] is rows[0]


def test_tuning_and_reporting_halves_are_disjoint_balanced_and_fixed():
    from emodiff.data import FaceSet
    from emodiff.evaluation import split_part

    labels = np.repeat(np.arange(7), [5, 2, 9, 12, 7, 6, 8])
    faces = FaceSet(np.arange(len(labels))[:, None, None].repeat(48, 1).repeat(48, 2).astype(np.uint8), labels, np.ones(len(labels), np.int8))
    tuning, reporting = split_part(faces, "tuning"), split_part(faces, "reporting")
    ids = lambda part: set(part.images[:, 0, 0].tolist())  # noqa: E731
    assert ids(tuning).isdisjoint(ids(reporting)) and ids(tuning) | ids(reporting) == ids(faces)
    for label, count in enumerate([5, 2, 9, 12, 7, 6, 8]):
        assert (tuning.labels == label).sum() == (count + 1) // 2 and (reporting.labels == label).sum() == count // 2
    assert ids(split_part(faces, "tuning")) == ids(tuning)  # fixed: the same faces every time
    assert split_part(faces, "all") is faces
    with pytest.raises(ValueError, match="tuning, reporting"):
        split_part(faces, "test")


def test_looks_stretch_contrast_brighten_and_shift_the_inputs():
    from emodiff.evaluation import change_look

    rng = np.random.default_rng(0)
    images = rng.integers(60, 180, (3, 48, 48)).astype(np.uint8)  # a flat, low-contrast face
    images[:, 20, 30] = 250  # one bright feature
    faces = FaceSet(images, np.array([0, 3, 6]), np.ones(3, np.int8))
    stretched = change_look(faces, "contrast").images
    assert stretched.min() == 0 and stretched.max() == 255 and stretched.std() > images.std() * 1.5
    bright = change_look(faces, "bright").images.astype(int)
    assert np.all(bright == np.minimum(images.astype(int) + 40, 255))
    shifted = change_look(faces, "shift").images
    assert np.all(shifted[:, 24, 34] == 250) and np.array_equal(shifted[:, 4:, 4:], images[:, :-4, :-4])
    assert np.array_equal(change_look(faces, "as-is").images, images)
    assert np.array_equal(change_look(faces, "bright").labels, faces.labels)
    with pytest.raises(ValueError, match="contrast, bright, shift"):
        change_look(faces, "dark")


def test_scales_per_emotion_are_chosen_by_the_rule_at_the_chosen_setting_only():
    from emodiff.evaluation import choose_per_emotion
    from emodiff.labels import EMOTIONS

    def row(guidance, strength=0.4, angry=(0.5, 0.95), happy=(0.9, 0.95), pushed=0.0):
        per = {name: {"f1": 0.4, "identity_kept": 0.95} for name in EMOTIONS}
        per["angry"], per["happy"] = dict(zip(("f1", "identity_kept"), angry)), dict(zip(("f1", "identity_kept"), happy))
        return {"model": "m", "mode": "invert", "strength": strength, "steps": 10, "keep_detail": True, "localise": 0.0,
                "guidance": guidance, "classifier_guidance": pushed, "per_emotion": per}  # fmt: skip

    rows = [
        row(5.0, happy=(0.92, 0.97)),
        row(7.0, angry=(0.55, 0.93), happy=(0.93, 0.85)),  # happy reads better but loses the person
        row(9.0, angry=(0.70, 0.80)),  # angry reads best but below 90% identity
        row(12.0, strength=0.6, angry=(0.9, 0.99)),  # another strength: not a candidate
    ]
    chosen = choose_per_emotion(rows, rows[1])
    assert chosen == {"guidance": {**{name: 5.0 for name in EMOTIONS}, "angry": 7.0}}  # ties: the first of the equal rows
    none_keeps = [row(5.0, angry=(0.3, 0.5)), row(9.0, angry=(0.6, 0.6))]
    assert choose_per_emotion(none_keeps, none_keeps[0])["guidance"]["angry"] == 9.0  # then best F1 x identity kept
    pushed = [*rows, row(5.0, angry=(0.65, 0.92), pushed=15.0)]  # classifier guidance reads angry better and keeps the person
    both = choose_per_emotion(pushed, rows[1])
    assert both["guidance"]["angry"] == 5.0 and both["classifier_guidance"]["angry"] == 15.0
    assert both["guidance"]["happy"] == 5.0 and both["classifier_guidance"]["happy"] == 0.0
    assert "negative" not in both  # one kind of negative in the sweep: nothing to choose
    away = {**row(5.0, happy=(0.95, 0.96)), "negative": "source"}  # away from the source, happy reads better and keeps the person
    mixed = choose_per_emotion([*rows, away], rows[1])
    assert mixed["negative"] == {**{name: "null" for name in EMOTIONS}, "happy": "source"} and mixed["guidance"]["happy"] == 5.0
    newer = {**row(5.0, happy=(0.96, 0.97)), "negative": "happy", "mouth_strength": 0.0}  # a row of a sweep that records the mouth's strength
    assert choose_per_emotion([*rows, away, newer], rows[1])["negative"]["happy"] == "happy"  # the older rows lack it: the same setting
    deeper = {**newer, "mouth_strength": 0.4}
    assert choose_per_emotion([*rows, away, deeper], rows[1])["negative"]["happy"] == "source"


def test_the_per_emotion_scales_are_kept_only_where_their_own_edits_beat_the_chosen_setting():
    from emodiff.evaluation import choose_edit_defaults
    from emodiff.labels import EMOTIONS

    chosen = {"guidance": 9.0, "classifier_guidance": 30.0, "macro_f1": 0.637, "identity_kept": 0.92}
    per_emotion = {"guidance": {name: 13.0 for name in EMOTIONS}, "classifier_guidance": {name: 15.0 for name in EMOTIONS}}
    worse = {"macro_f1": 0.606, "identity_kept": 0.91}  # the mix reads below the setting it came from
    scales, kept = choose_edit_defaults(chosen, per_emotion, worse)
    assert scales == {"guidance": {name: 9.0 for name in EMOTIONS}, "classifier_guidance": {name: 30.0 for name in EMOTIONS}}
    assert kept == "the chosen setting's scales for every emotion"
    assert choose_edit_defaults(chosen, per_emotion, {"macro_f1": 0.65, "identity_kept": 0.91}) == (per_emotion, "the per-emotion scales")
    # reading better is not enough below 90% identity, where the chosen setting is
    assert choose_edit_defaults(chosen, per_emotion, {"macro_f1": 0.70, "identity_kept": 0.85})[0] != per_emotion
    # without classifier guidance in the sweep, none is written for it
    plain = choose_edit_defaults({**chosen, "classifier_guidance": 0.0}, {"guidance": per_emotion["guidance"]}, worse)[0]
    assert plain == {"guidance": {name: 9.0 for name in EMOTIONS}}


# ----------------------------------------------------------------------------- uncertainty


def _records(judged, distances=None, keys=None, second=None):
    from emodiff.evaluation import EditRecords

    judged = np.asarray(judged)
    count = len(judged)
    return EditRecords(
        keys or [f"face{i}" for i in range(count)], np.arange(count) % 7, judged, second,
        np.full(judged.shape, 0.3) if distances is None else np.asarray(distances),
    )  # fmt: skip


def test_resampled_f1_is_scikit_learns_on_the_drawn_faces():
    """The bootstrap scores a draw by face counts; that must be F1 of the draw's edits, repeats and all."""
    from emodiff.evaluation import _f1_terms, _macro_f1

    rng = np.random.default_rng(1)
    judged = rng.integers(0, 7, (30, 7))
    judged[:12] = np.arange(7)  # some faces read right everywhere
    judged[12:15, 1] = 3  # and an emotion nobody reads for a few
    drawn = rng.integers(0, 30, 30)
    weights = np.bincount(drawn, minlength=30)[None].astype(float)
    macro, per_emotion = _macro_f1(weights, *_f1_terms(judged))
    true, predicted = np.tile(np.arange(7), 30), judged[drawn].ravel()
    assert macro[0] == pytest.approx(f1_score(true, predicted, labels=list(range(7)), average="macro", zero_division=0))
    np.testing.assert_allclose(per_emotion[0], f1_score(true, predicted, labels=list(range(7)), average=None, zero_division=0))


def test_intervals_hold_the_estimate_and_narrow_with_more_faces():
    from emodiff.evaluation import bootstrap_intervals

    rng = np.random.default_rng(0)

    def editor_that_reads_right_60_percent(count):
        right = rng.random((count, 7)) < 0.6
        return np.where(right, np.arange(7), rng.integers(0, 7, (count, 7)))

    small = bootstrap_intervals(_records(editor_that_reads_right_60_percent(40), rng.uniform(0.3, 0.7, (40, 7))))
    large = bootstrap_intervals(_records(editor_that_reads_right_60_percent(640), rng.uniform(0.3, 0.7, (640, 7))))
    assert small["macro_f1"][0] < 0.6 + 0.4 * 0.6 / 7 < small["macro_f1"][1]  # about 0.63 read right in truth
    assert small["identity_kept"][0] < 0.75 < small["identity_kept"][1]
    width = lambda interval: interval[1] - interval[0]  # noqa: E731
    assert width(large["macro_f1"]) < 0.5 * width(small["macro_f1"])  # 16x the faces: about a quarter as wide
    assert "macro_f1_second_judge" not in small and small["unit"] == "input face"


def test_a_comparison_of_the_same_edits_is_zero_and_of_a_better_editor_positive():
    from emodiff.evaluation import compare_records

    rng = np.random.default_rng(0)
    base = np.where(rng.random((70, 7)) < 0.5, np.arange(7), rng.integers(0, 7, (70, 7)))
    same = compare_records(_records(base), _records(base.copy()))["statistics"]
    assert same["macro_f1"]["difference"] == 0 and same["macro_f1"]["interval"] == [0.0, 0.0]

    better = base.copy()
    better[:20] = np.arange(7)  # 20 faces now read right everywhere, the rest unchanged
    lost = np.where(np.arange(70)[:, None] < 20, 0.7, 0.3)  # ... and lose their person
    compared = compare_records(_records(base), _records(better, lost))["statistics"]
    assert compared["macro_f1"]["interval"][0] > 0 and compared["macro_f1"]["after_ahead"] > 0.97
    assert compared["identity_kept"]["difference"] == pytest.approx(-20 / 70) and compared["identity_kept"]["interval"][1] < 0

    # a small change on a few faces: paired, the interval holds zero
    nudged = base.copy()
    nudged[0, 0], nudged[1, 1] = (base[0, 0] + 1) % 7, (base[1, 1] + 1) % 7
    interval = compare_records(_records(base), _records(nudged))["statistics"]["macro_f1"]["interval"]
    assert interval[0] <= 0 <= interval[1]


def test_a_comparison_of_different_faces_is_refused_naming_the_first():
    from emodiff.evaluation import compare_records

    judged = np.zeros((5, 7), int)
    with pytest.raises(ValueError, match="different faces.*first difference at face 2"):
        compare_records(_records(judged, keys=list("abcde")), _records(judged, keys=list("abXde")))


def test_records_round_trip_through_csv_and_bad_files_name_the_line(tmp_path):
    from emodiff.evaluation import EditRecords

    rng = np.random.default_rng(0)
    records = _records(rng.integers(0, 7, (4, 7)), rng.uniform(0, 1, (4, 7)).round(6), second=rng.integers(0, 7, (4, 7)))
    records.write_csv(tmp_path / "edits.csv")
    back = EditRecords.read_csv(tmp_path)  # the folder evaluate wrote is enough
    assert back.keys == records.keys
    for field in ("sources", "judged", "judged_second", "distances"):
        np.testing.assert_array_equal(getattr(back, field), getattr(records, field))

    lines = (tmp_path / "edits.csv").read_text().splitlines()
    fields = lines[9].split(",")
    lines[9] = ",".join([*fields[:4], "joyful", *fields[5:]])  # a verdict that is no emotion
    (tmp_path / "edits.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"edits.csv, line 10: .*joyful"):
        EditRecords.read_csv(tmp_path / "edits.csv")
    with pytest.raises(FileNotFoundError, match="emodiff evaluate writes edits.csv"):
        EditRecords.read_csv(tmp_path / "elsewhere")


def test_compare_command_prints_the_paired_table(tmp_path, capsys):
    from emodiff.cli import main

    rng = np.random.default_rng(0)
    base = np.where(rng.random((40, 7)) < 0.5, np.arange(7), rng.integers(0, 7, (40, 7)))
    better = base.copy()
    better[:15] = np.arange(7)
    _records(base).write_csv(tmp_path / "a.csv")
    _records(better).write_csv(tmp_path / "b.csv")
    assert main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out", str(tmp_path / "c.md"), "--resamples", "500"]) == 0
    printed = capsys.readouterr().out
    assert "500 resamples" in printed and "| macro F1 |" in printed and "| F1, disgust |" in printed and "**+" in printed
    written = (tmp_path / "c.md").read_text()
    assert written.startswith("```\n") and written.endswith(printed)  # the command line, then the table
    assert main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--resamples", "10"]) == 2
    assert "--resamples 10" in capsys.readouterr().err
