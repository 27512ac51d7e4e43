"""Measuring edits the way a user judges them: emotion, identity, realism and how much changed.

- emotion: the independent judge classifies every edit; per-target precision/recall/F1 (the rows of
  the paper's Table 1) and macro F1, beside the judge's F1 on the real inputs;
- identity: dlib's ResNet face descriptor distance between each edit and its input (same person
  below 0.6), plus SSIM and PSNR to the input;
- realism: Fréchet distance between judge features of the edits and of real faces of the target
  emotion, in the judge's features rather than Inception's: features trained on FER faces see
  expression, where an ImageNet network would see 48x48 grey faces as nothing it knows;
- change: mean absolute pixel change, so a do-nothing edit cannot look good;
- uncertainty: 95% intervals from resampling the input faces (a face's 7 edits share its look, so
  faces, not edits, are the unit), and ``compare_records`` for two evaluations of the same faces:
  with 140 faces one emotion's F1 moves by a few hundredths by chance, and a lever must beat that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from .data import FaceSet, to_tensor
from .devices import CPU_CHUNK, autocast, batch_piece, bf16_supported
from .encoders import EmotionClassifier, EmotionJudge
from .files import atomic_write, save_image
from .hands import HandDetector
from .identity import IDENTITY_THRESHOLD, IdentityModel
from .labels import EMOTIONS

HAND_DETECTOR_STRENGTH = 0.1  # on the judge's features: the best of 0.03, 0.1 and 0.3 by cross-validated average precision
Editor = Callable[[np.ndarray, list[int]], np.ndarray]  # uint8 (B, 48, 48), targets -> uint8 (B, T, 48, 48)


def _judge_autocast(device: torch.device):
    """bf16 where the hardware has it: how test-encoder scores the judge, and far faster on such CPUs."""
    return autocast(device, bf16_supported(device))


# ----------------------------------------------------------------------------- realism


class _JudgeFeatures(torch.nn.Module):
    """The judge's pooled features for torchmetrics' FID, which hands over images in [0, 1]."""

    def __init__(self, judge: EmotionJudge):
        super().__init__()
        self.judge = judge
        self.num_features = judge.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with _judge_autocast(images.device):
            return self.judge.encode(images.float() * 2 - 1).double()


def frechet_distance(judge: EmotionJudge, real: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance between judge-feature Gaussians of two uint8 (N, 48, 48) sets."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_JudgeFeatures(judge.eval()), normalize=True)
    with torch.no_grad():
        for faces, is_real in ((real, True), (generated, False)):
            for start in range(0, len(faces), CPU_CHUNK):
                metric.update((to_tensor(faces[start : start + CPU_CHUNK]) + 1) / 2, real=is_real)
        return float(metric.compute())


# ----------------------------------------------------------------------------- emotion


def emotion_scores(true: np.ndarray, predicted: np.ndarray) -> dict:
    """Per-emotion precision/recall/F1 (scikit-learn), macro F1 and the confusion matrix."""
    labels = list(range(len(EMOTIONS)))
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, labels=labels, zero_division=0)
    return {
        "precision": dict(zip(EMOTIONS, precision.tolist())),
        "recall": dict(zip(EMOTIONS, recall.tolist())),
        "f1": dict(zip(EMOTIONS, f1.tolist())),
        "support": dict(zip(EMOTIONS, support.tolist())),
        "macro_f1": float(f1_score(true, predicted, labels=labels, average="macro", zero_division=0)),
        "confusion": confusion_matrix(true, predicted, labels=labels).tolist(),
    }


@torch.no_grad()
def judge_labels(judge: EmotionJudge, faces: np.ndarray) -> np.ndarray:
    """The judge's verdicts on uint8 faces, in pieces of CPU_CHUNK under bf16 autocast where the
    hardware has it: several times faster here than fp32 in large pieces, and how test-encoder scores."""
    device = next(judge.parameters()).device
    size = batch_piece(device, 512)
    with _judge_autocast(device):
        return np.concatenate(
            [judge.predict_proba(to_tensor(faces[i : i + size]).to(device)).argmax(-1).cpu().numpy() for i in range(0, len(faces), size)]
        )


# ----------------------------------------------------------------------------- the evaluation


def sample_inputs(faces: FaceSet, per_class: int, seed: int = 0) -> FaceSet:
    """Up to ``per_class`` faces of each source emotion, drawn with a fixed seed, in label order."""
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(faces.labels == label), size=min(per_class, int((faces.labels == label).sum())), replace=False)
        for label in range(len(EMOTIONS))
    ]
    return faces.take(np.concatenate([np.sort(p) for p in picks]))


FACE_PARTS = ("all", "tuning", "reporting")
PARTS_SEED = 2026  # fixed for good: which faces tune and which report must never move


def split_part(faces: FaceSet, part: str) -> FaceSet:
    """Half of each emotion's faces for choosing settings (tuning), the other half for reporting
    them, by a fixed seed, so no face both chooses a setting and reports it; "all" keeps both."""
    if part not in FACE_PARTS:
        raise ValueError(f"unknown face part {part!r}: expected one of {', '.join(FACE_PARTS)}")
    if part == "all":
        return faces
    rng = np.random.default_rng(PARTS_SEED)
    chosen = []
    for label in range(len(EMOTIONS)):
        members = rng.permutation(np.flatnonzero(faces.labels == label))
        half = (len(members) + 1) // 2
        chosen.append(members[:half] if part == "tuning" else members[half:])
    return faces.take(np.sort(np.concatenate(chosen)))


def _contrast_stretched(faces: np.ndarray) -> np.ndarray:
    low, high = np.percentile(faces, [2, 98], axis=(1, 2), keepdims=True)
    return np.clip((faces - low) * 255 / np.maximum(high - low, 1), 0, 255)


def _shifted(faces: np.ndarray, pixels: int = 4) -> np.ndarray:
    padded = np.pad(faces, ((0, 0), (pixels, 0), (pixels, 0)), mode="edge")  # the border repeats, as a looser crop's would
    return padded[:, : faces.shape[1], : faces.shape[2]]


# Inputs unlike FER-2013's average (evenly lit, frontal, tightly cropped): identity must hold on them too.
LOOKS = {
    "as-is": lambda faces: faces,
    "contrast": _contrast_stretched,  # 2nd..98th percentile stretched to 0..255
    "bright": lambda faces: np.clip(faces.astype(np.float32) + 40, 0, 255),  # 40 grey levels lighter
    "shift": _shifted,  # the face 4 pixels (8%) right and down
}


def change_look(faces: FaceSet, look: str) -> FaceSet:
    if look not in LOOKS:
        raise ValueError(f"unknown look {look!r}: expected one of {', '.join(LOOKS)}")
    images = np.rint(LOOKS[look](faces.images.astype(np.float32))).astype(np.uint8)
    return FaceSet(images, faces.labels, faces.usage)


SECOND_JUDGE = "judge2"  # the shipped second judge, reported beside the first wherever an evaluation runs


def load_judge(name: str, option: str = "--judge"):
    """A judge by model directory or shipped name, refused with the option's name if it is not one."""
    from .encoders import JUDGE_CLASSES, load_encoder

    model = load_encoder(name).to(memory_format=torch.channels_last)  # measured here: 2x faster convolutions
    if not isinstance(model, JUDGE_CLASSES):
        expected = " or ".join(cls.__name__ for cls in JUDGE_CLASSES)
        raise ValueError(f"{option} {name}: a {type(model).__name__}, expected a judge ({expected})")
    return model


@dataclass
class EvaluationSetup:
    """Everything an evaluation needs, loaded and checked before any editing starts: the inputs, the
    whole split (real faces for the Fréchet distance), the judge, the identity model and the second
    judge, which only reports (a sweep chooses by the first judge alone)."""

    inputs: FaceSet
    reference: FaceSet
    judge: EmotionJudge
    identity: IdentityModel
    second_judge: EmotionClassifier | None = None
    hands: HandDetector | None = None

    def fingerprint(self) -> str:
        """A digest of everything here that an evaluation's numbers depend on (the faces' pixels and
        labels, the judges' and the hand detector's weights): equal digests, with the same editor,
        give the same evaluation, so a finished one can be kept rather than run again."""
        import hashlib

        digest = hashlib.sha256()
        for faces in (self.inputs, self.reference):
            digest.update(np.ascontiguousarray(faces.images).tobytes() + np.asarray(faces.labels, np.int64).tobytes())
        for model in (self.judge, self.second_judge):
            for name, tensor in (model.state_dict() if model is not None else {}).items():
                digest.update(name.encode() + tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
        if self.hands is not None:
            for array in (self.hands.mean, self.hands.scale, self.hands.regression.coef_, self.hands.regression.intercept_):
                digest.update(np.ascontiguousarray(array, np.float64).tobytes())
        return digest.hexdigest()

    def evaluate(self, editor: Editor, device: torch.device, progress: bool = True) -> EditEvaluation:
        second = self.second_judge.to(device) if self.second_judge is not None else None
        return evaluate_editor(
            editor, self.inputs, self.judge.to(device), self.identity, self.reference, progress=progress, second_judge=second, hands=self.hands
        )


def load_evaluation_inputs(
    data: str,
    split: str,
    per_class: int,
    judge: str = "judge",
    seed: int = 0,
    skip_bad: bool = False,
    part: str = "all",
    second_judge: str | None = SECOND_JUDGE,
    look: str = "as-is",
) -> EvaluationSetup:
    """Inputs drawn from the split (its tuning or reporting half with ``part``, see ``split_part``;
    changed by ``look``, see ``LOOKS``), the judges and the identity model, every option checked first."""
    from .data import load_fer2013

    if per_class <= 0:
        raise ValueError(f"--per-class must be positive, got {per_class}")
    if look not in LOOKS:
        raise ValueError(f"unknown --look {look!r}: expected one of {', '.join(LOOKS)}")
    judge_model = load_judge(judge, "--judge")
    second_model = load_judge(second_judge, "--second-judge") if second_judge else None
    everything = load_fer2013(data, skip_bad=skip_bad)
    faces = everything.split(split)
    if len(faces) == 0:
        raise ValueError(f"{data}: no {split} rows to evaluate on")
    inputs = change_look(sample_inputs(split_part(faces, part), per_class, seed), look)
    return EvaluationSetup(inputs, faces, judge_model, IdentityModel(), second_model, hand_detector(everything.split("Training"), judge_model))


def headline(metrics: dict) -> str:
    """An evaluation's numbers in one line, as ``emodiff evaluate`` prints them."""
    second = metrics.get("second_judge")
    second_text = f"; second judge: macro F1 {second['emotion']['macro_f1']:.3f} (real inputs {second['real_inputs']['macro_f1']:.3f})" if second else ""
    hands_text = f"; hands drawn on {metrics['hands']['drawn']:.1%} of edits" if "hands" in metrics else ""
    return (f"macro F1 {metrics['emotion']['macro_f1']:.3f} (real inputs {metrics['real_inputs']['macro_f1']:.3f}){second_text}; identity kept "
            f"{metrics['identity']['kept_fraction']:.0%}, median distance {metrics['identity']['median_distance']:.3f}{hands_text}")  # fmt: skip


def evaluate_experiment(editor: Editor, device: torch.device, data: str, faces: str, per_class: int, out: Path, title: str) -> dict:
    """An editor that is no option of ``emodiff edit`` measured as ``emodiff evaluate`` measures one
    (PublicTest's ``faces`` half, both judges, identity), its report written to ``out``: how a script
    in tools/ tries a lever without adding it to the package. Returns the metrics, printed in one line."""
    evaluation = load_evaluation_inputs(data, "PublicTest", per_class, part=faces).evaluate(editor, device)
    write_report(evaluation, Path(out), title)
    print(f"{headline(evaluation.metrics)}; report in {out}")
    return evaluation.metrics


def hand_detector(train: FaceSet, judge: EmotionJudge) -> HandDetector | None:
    """The hand detector on the judge's features (the judge only reports, so it may look), fitted to
    the hand labels; None where the data lacks the Training faces they mark (hands are then not counted)."""
    from .hands import checked_labels, fit_detector

    try:
        labels = checked_labels(train)
    except ValueError:
        return None
    return fit_detector(train, judge, labels, strength=HAND_DETECTOR_STRENGTH)


@dataclass
class EditEvaluation:
    inputs: FaceSet
    edits: np.ndarray  # uint8 (N, 7, 48, 48)
    metrics: dict
    records: EditRecords


def evaluate_editor(
    editor: Editor,
    inputs: FaceSet,
    judge: EmotionJudge,
    identity: IdentityModel,
    reference: FaceSet,
    batch_size: int = 20,
    progress: bool = True,
    second_judge: EmotionClassifier | None = None,
    hands: HandDetector | None = None,
) -> EditEvaluation:
    """Edit every input to all 7 emotions and measure the edits (see the module docstring); the
    ``second_judge``'s verdicts, when given, are reported beside the first judge's, and with a
    ``hands`` detector, how many edits gained a hand."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
    from tqdm.auto import tqdm

    targets = list(range(len(EMOTIONS)))
    edits, seconds = [], 0.0
    for start in tqdm(range(0, len(inputs), batch_size), desc="editing", disable=not progress):
        began = time.perf_counter()
        edits.append(editor(inputs.images[start : start + batch_size], targets))
        seconds += time.perf_counter() - began
    edits = np.concatenate(edits)
    count, per_face = edits.shape[:2]
    flat_edits = edits.reshape(-1, *edits.shape[2:])
    flat_inputs = np.repeat(inputs.images, per_face, axis=0)
    flat_targets = np.tile(targets, count)

    judged = judge_labels(judge, flat_edits)
    judged_second = judge_labels(second_judge, flat_edits) if second_judge is not None else None
    input_descriptors = identity.descriptors(inputs.images)
    edit_descriptors = identity.descriptors(flat_edits)
    distances = np.linalg.norm(edit_descriptors - np.repeat(input_descriptors, per_face, axis=0), axis=1)
    a, b = (to_tensor(flat_edits) + 1) / 2, (to_tensor(flat_inputs) + 1) / 2
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    change = np.abs(flat_edits.astype(np.float64) - flat_inputs).mean(axis=(1, 2))
    realism = {
        EMOTIONS[t]: frechet_distance(judge, reference.images[reference.labels == t], flat_edits[flat_targets == t])
        for t in targets
        if (reference.labels == t).sum() >= 2 and (flat_targets == t).sum() >= 2
    }
    per_target = {
        EMOTIONS[t]: {
            "identity_median": float(np.median(distances[flat_targets == t])),
            "identity_kept": float(np.mean(distances[flat_targets == t] < IDENTITY_THRESHOLD)),
            "change": float(change[flat_targets == t].mean()),
        }
        for t in targets
    }
    metrics = {
        "inputs": int(count),
        "edits": int(len(flat_edits)),
        "emotion": emotion_scores(flat_targets, judged),
        "real_inputs": emotion_scores(inputs.labels, judge_labels(judge, inputs.images)),
        "identity": {
            "median_distance": float(np.median(distances)),
            "kept_fraction": float(np.mean(distances < IDENTITY_THRESHOLD)),
            "threshold": IDENTITY_THRESHOLD,
            "ssim": float(ssim.mean()),
            "psnr": float(psnr[torch.isfinite(psnr)].mean()) if torch.isfinite(psnr).any() else float("inf"),
        },
        "realism": {"frechet_judge_features": realism, "mean": float(np.mean(list(realism.values()))) if realism else None},
        "change": {"mean_abs_pixel": float(change.mean())},
        "per_target": per_target,
        "seconds_per_input": seconds / max(count, 1),
    }
    if second_judge is not None:
        metrics["second_judge"] = {
            "model": type(second_judge).__name__,
            "emotion": emotion_scores(flat_targets, judged_second),
            "real_inputs": emotion_scores(inputs.labels, judge_labels(second_judge, inputs.images)),
        }
    if hands is not None:
        metrics["hands"] = hands_drawn(hands, inputs.images, flat_edits, flat_targets)
    by_face = lambda values: values.reshape(count, per_face)  # noqa: E731
    records = EditRecords(
        face_keys(inputs.images), inputs.labels.copy(), by_face(judged), None if judged_second is None else by_face(judged_second), by_face(distances)
    )
    metrics["intervals"] = bootstrap_intervals(records)
    return EditEvaluation(inputs, edits, metrics, records)


def hands_drawn(hands: HandDetector, inputs: np.ndarray, flat_edits: np.ndarray, flat_targets: np.ndarray) -> dict:
    """The share of edits with a hand (p >= 0.5) whose input had none: a hand is no expression, but the
    judges read one as fear, so only this count sees the model drawing them."""
    had = np.repeat(hands.probability(to_tensor(inputs)) >= 0.5, len(flat_edits) // len(inputs))
    drawn = (hands.probability(to_tensor(flat_edits)) >= 0.5) & ~had
    per_target = {EMOTIONS[t]: float(drawn[flat_targets == t].sum() / max((~had & (flat_targets == t)).sum(), 1)) for t in range(len(EMOTIONS))}
    return {"drawn": float(drawn.sum() / max((~had).sum(), 1)), "per_target": per_target, "inputs_with_hands": float(had.mean())}


# ----------------------------------------------------------------------------- uncertainty

RESAMPLES = 2000  # bootstrap draws of the input faces: the interval's ends move by < 0.005 between seeds
INTERVAL = 0.95
RECORDS_FILE = "edits.csv"
_RECORD_COLUMNS = ("face", "key", "source", "target", "judged", "judged_second", "identity_distance")


def face_keys(images: np.ndarray) -> list[str]:
    """A short hash of each input face's pixels: two evaluations pair up only if they edited the same faces."""
    import hashlib

    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:12] for image in images]


@dataclass
class EditRecords:
    """Per input face and target emotion (the columns, in EMOTIONS' order): what each judge read and
    the identity distance. Intervals and comparisons resample these by face."""

    keys: list[str]
    sources: np.ndarray  # (N,) the input faces' own emotions
    judged: np.ndarray  # (N, 7)
    judged_second: np.ndarray | None  # (N, 7), or None without a second judge
    distances: np.ndarray  # (N, 7)

    def write_csv(self, path: Path) -> None:
        import csv
        import io

        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(_RECORD_COLUMNS)
        for face, (key, source) in enumerate(zip(self.keys, self.sources)):
            for target, name in enumerate(EMOTIONS):
                second = "" if self.judged_second is None else EMOTIONS[self.judged_second[face, target]]
                writer.writerow([face, key, EMOTIONS[source], name, EMOTIONS[self.judged[face, target]], second, f"{self.distances[face, target]:.6f}"])
        atomic_write(path, lambda temp: temp.write_text(text.getvalue()))

    @classmethod
    def read_csv(cls, path: Path) -> EditRecords:
        """Read what ``write_csv`` wrote; anything else is refused with the file and line."""
        import csv

        path = Path(path)
        if path.is_dir():
            path = path / RECORDS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file (emodiff evaluate writes {RECORDS_FILE} into its --out folder; one made by an older emodiff has none: run it again)")
        index = {name: i for i, name in enumerate(EMOTIONS)}
        with path.open(newline="") as file:
            rows = list(csv.reader(file))
        if not rows or tuple(rows[0]) != _RECORD_COLUMNS:
            raise ValueError(f"{path}: line 1 should be the header {','.join(_RECORD_COLUMNS)}")
        body = rows[1:]
        if not body or len(body) % len(EMOTIONS):
            raise ValueError(f"{path}: {len(body)} edit rows, expected 7 per input face")
        keys, sources, judged, second, distances = [], [], [], [], []
        for line, row in enumerate(body, start=2):
            try:
                face, key, source, target, verdict, verdict_second, distance = row
                expected_face, expected_target = divmod(line - 2, len(EMOTIONS))
                if int(face) != expected_face or index[target] != expected_target:
                    raise ValueError(f"expected face {expected_face}, target {EMOTIONS[expected_target]}")
                if expected_target == 0:
                    keys.append(key)
                    sources.append(index[source])
                judged.append(index[verdict])
                second.append(index[verdict_second] if verdict_second else -1)
                distances.append(float(distance))
            except (ValueError, KeyError) as error:
                raise ValueError(f"{path}, line {line}: {row!r}: {error}") from None
        shape = (len(keys), len(EMOTIONS))
        second = np.asarray(second).reshape(shape)
        if (second < 0).any() and not (second < 0).all():
            raise ValueError(f"{path}: the second judge's verdict is missing on some rows only")
        return cls(keys, np.asarray(sources), np.asarray(judged).reshape(shape), None if (second < 0).all() else second, np.asarray(distances).reshape(shape))


def _f1_terms(judged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face and emotion c: is its edit to c judged c (a true positive), and how many of its
    edits to other emotions are judged c (false positives). Each face has one edit per target, so
    sums of these over any multiset of faces give that multiset's per-emotion F1."""
    emotions = np.arange(judged.shape[1])
    hits = (judged == emotions).astype(np.float64)
    false = (judged[:, :, None] == emotions).sum(axis=1) - hits
    return hits, false


def _macro_f1(weights: np.ndarray, hits: np.ndarray, false: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro and per-emotion F1 for each row of ``weights`` (how often each face is drawn), as
    scikit-learn scores it (an emotion nobody predicts and nobody is: 0)."""
    true_pos, false_pos = weights @ hits, weights @ false
    false_neg = weights.sum(axis=1, keepdims=True) - true_pos
    denominator = 2 * true_pos + false_pos + false_neg
    f1 = np.divide(2 * true_pos, denominator, out=np.zeros_like(true_pos), where=denominator > 0)
    return f1.mean(axis=1), f1


def _face_draws(count: int, resamples: int, seed: int) -> np.ndarray:
    """(1 + resamples, count): how often each face is in each bootstrap draw, the first row the data itself."""
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(count, np.full(count, 1 / count), size=resamples).astype(np.float64)
    return np.vstack([np.ones(count), draws])


def _statistics(records: EditRecords, weights: np.ndarray) -> dict[str, np.ndarray]:
    macro, per_emotion = _macro_f1(weights, *_f1_terms(records.judged))
    stats = {"macro_f1": macro, "identity_kept": weights @ (records.distances < IDENTITY_THRESHOLD).mean(axis=1) / weights.sum(axis=1)}
    if records.judged_second is not None:
        stats["macro_f1_second_judge"] = _macro_f1(weights, *_f1_terms(records.judged_second))[0]
    stats.update({f"f1_{name}": per_emotion[:, i] for i, name in enumerate(EMOTIONS)})
    return stats


def _interval(values: np.ndarray) -> list[float]:
    tail = (1 - INTERVAL) / 2 * 100
    return [float(v) for v in np.percentile(values[1:], [tail, 100 - tail])]


def bootstrap_intervals(records: EditRecords, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """95% percentile-bootstrap intervals over the input faces for macro F1 (each judge), identity
    kept and each emotion's F1."""
    stats = _statistics(records, _face_draws(len(records.keys), resamples, seed))
    return {"level": INTERVAL, "resamples": resamples, "unit": "input face", **{name: _interval(values) for name, values in stats.items()}}


def compare_records(before: EditRecords, after: EditRecords, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """``after`` minus ``before`` on the same faces: each statistic's difference, its 95% interval
    from resampling the faces (both evaluations drawn with the same faces, so what the faces share
    cancels), and how often a resample has ``after`` ahead."""
    if before.keys != after.keys:
        mismatch = next((i for i, (a, b) in enumerate(zip(before.keys, after.keys)) if a != b), min(len(before.keys), len(after.keys)))
        raise ValueError(
            f"the two evaluations edited different faces ({len(before.keys)} and {len(after.keys)}; first difference at face {mismatch}): "
            "compare evaluations run with the same --data, --split, --faces, --per-class, --seed and --look"
        )
    weights = _face_draws(len(before.keys), resamples, seed)
    first, second = _statistics(before, weights), _statistics(after, weights)
    statistics = {
        name: {
            "before": float(first[name][0]),
            "after": float(second[name][0]),
            "difference": float(second[name][0] - first[name][0]),
            "interval": _interval(second[name] - first[name]),
            "after_ahead": float(np.mean(second[name][1:] > first[name][1:])),
        }
        for name in first
        if name in second
    }
    return {"level": INTERVAL, "resamples": resamples, "faces": len(before.keys), "statistics": statistics}


_STATISTIC_NAMES = {"macro_f1": "macro F1", "macro_f1_second_judge": "macro F1, second judge", "identity_kept": "identity kept"}


def comparison_table(comparison: dict, before: str, after: str) -> str:
    """``compare_records``' result as markdown."""
    lines = [
        f"{comparison['faces']} input faces, each edited to all 7 emotions by both; {comparison['level']:.0%} intervals from "
        f"{comparison['resamples']} resamples of the faces, the same faces for both; difference = {after} − {before}.",
        "",
        f"| statistic | {before} | {after} | difference | interval | resamples with {after} ahead |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in comparison["statistics"].items():
        low, high = row["interval"]
        clear = "**" if low > 0 or high < 0 else ""
        lines.append(
            f"| {_STATISTIC_NAMES.get(name, name.replace('f1_', 'F1, '))} | {row['before']:.3f} | {row['after']:.3f} | {clear}{row['difference']:+.3f}{clear} "
            f"| {low:+.3f} … {high:+.3f} | {row['after_ahead']:.0%} |"
        )
    lines += ["", "Bold: the interval leaves out zero."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- reports


def markdown_report(metrics: dict, title: str, command: str | None = None) -> str:
    emotion, real = metrics["emotion"], metrics["real_inputs"]
    second = metrics.get("second_judge")
    lines = [f"# {title}", ""]
    if command:
        lines += ["```", command, "```", ""]
    second_header = (" F1, second judge | second judge F1 on real inputs |", "---|---|") if second else ("", "")
    lines += [
        f"{metrics['inputs']} inputs, each edited to all 7 emotions ({metrics['edits']} edits); "
        f"{metrics['seconds_per_input']:.3f} s per input face.",
        "",
        "| target | precision | recall | F1 | judge F1 on real inputs |" + second_header[0]
        + " identity kept (<0.6) | median identity distance | Fréchet (judge features) | mean pixel change |",
        "|---|---|---|---|---|" + second_header[1] + "---|---|---|---|",
    ]
    realism = metrics["realism"]["frechet_judge_features"]
    for name in EMOTIONS:
        target = metrics["per_target"][name]
        fd = f"{realism[name]:.2f}" if name in realism else "–"
        by_second = f" {second['emotion']['f1'][name]:.2f} | {second['real_inputs']['f1'][name]:.2f} |" if second else ""
        lines.append(
            f"| {name} | {emotion['precision'][name]:.2f} | {emotion['recall'][name]:.2f} | {emotion['f1'][name]:.2f} "
            f"| {real['f1'][name]:.2f} |{by_second} {target['identity_kept']:.0%} | {target['identity_median']:.3f} | {fd} | {target['change']:.1f} |"
        )
    identity = metrics["identity"]
    mean_fd = metrics["realism"]["mean"]
    mean_fd_text = "–" if mean_fd is None else f"{mean_fd:.2f}"
    by_second = f" **{second['emotion']['macro_f1']:.3f}** (macro) | {second['real_inputs']['macro_f1']:.3f} (macro) |" if second else ""
    lines += [
        f"| **all** | | | **{emotion['macro_f1']:.3f}** (macro) | {real['macro_f1']:.3f} (macro) |{by_second} "
        f"**{identity['kept_fraction']:.0%}** | {identity['median_distance']:.3f} | {mean_fd_text} "
        f"| {metrics['change']['mean_abs_pixel']:.1f} |",
        "",
        f"SSIM to the input {identity['ssim']:.3f}, PSNR {identity['psnr']:.2f} dB. Identity: dlib ResNet face "
        "descriptor distance between edit and input (150x150 upsample, whole image as the face box, "
        "5-point landmarks; same person below 0.6). Realism: Fréchet distance between judge features of "
        "the edits and of the split's real faces of the target emotion — in FER features, which see "
        "expression, rather than ImageNet Inception features; lower is better, compare only within "
        "this report's judge."
        + (f" Second judge: {second['model']}, another architecture and recipe; it only reports." if second else ""),
    ]
    intervals = metrics.get("intervals")
    if intervals:
        spans = [("macro F1", "macro_f1", "{:.3f}"), ("second judge", "macro_f1_second_judge", "{:.3f}"), ("identity kept", "identity_kept", "{:.0%}")]
        text = "; ".join(f"{label} {fmt.format(intervals[key][0])}–{fmt.format(intervals[key][1])}" for label, key, fmt in spans if key in intervals)
        lines += [
            "",
            f"{intervals['level']:.0%} intervals, from {intervals['resamples']} resamples of the {metrics['inputs']} input faces: {text} "
            f"(per emotion in metrics.json). Two settings on the same faces: `emodiff compare` pairs them, which cancels what the faces share (measured on the reporting faces: intervals about half as wide, README).",
        ]
    hands = metrics.get("hands")
    if hands:
        per_target = ", ".join(f"{name} {share:.0%}" for name, share in hands["per_target"].items())
        lines += [
            "",
            f"Hands drawn: {hands['drawn']:.1%} of the edits whose input had no hand on the face gained one ({per_target}; "
            f"{hands['inputs_with_hands']:.0%} of the inputs had one). A detector on the judge's features fitted to "
            "FER-2013 Training faces labelled by hand (emodiff.hands); the judges read a hand as fear, so only this sees it. "
            "It also leans on what fear looks like: compare settings by it, do not read it as a census.",
        ]
    return "\n".join(lines) + "\n"


def write_figures(evaluation: EditEvaluation, out: Path) -> None:
    """A grid of one input per source emotion x its 7 edits, and the target-vs-judged confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .grid import labelled_grid

    rows = [int(np.flatnonzero(evaluation.inputs.labels == label)[0]) for label in range(len(EMOTIONS)) if (evaluation.inputs.labels == label).any()]
    cells = np.concatenate([evaluation.inputs.images[rows][:, None], evaluation.edits[rows]], axis=1)
    grid = labelled_grid(cells, [f"{EMOTIONS[evaluation.inputs.labels[r]]} input" for r in rows], ["input", *EMOTIONS])
    save_image(grid, out / "grid.png")

    matrix = np.asarray(evaluation.metrics["emotion"]["confusion"], dtype=float)
    matrix = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(7), EMOTIONS, rotation=45, ha="right")
    axes.set_yticks(range(7), EMOTIONS)
    axes.set_xlabel("judged emotion")
    axes.set_ylabel("target emotion")
    for i in range(7):
        for j in range(7):
            axes.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if matrix[i, j] > 0.5 else "black")
    figure.colorbar(image)
    figure.tight_layout()
    atomic_write(out / "confusion.png", lambda temp: figure.savefig(temp, format="png", dpi=120))
    plt.close(figure)


def write_report(evaluation: EditEvaluation, out: Path, title: str, command: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "metrics.json", lambda temp: temp.write_text(json.dumps(evaluation.metrics, indent=2)))
    atomic_write(out / "report.md", lambda temp: temp.write_text(markdown_report(evaluation.metrics, title, command)))
    evaluation.records.write_csv(out / RECORDS_FILE)
    write_figures(evaluation, out)


# ----------------------------------------------------------------------------- sweep


def choose_setting(rows: list[dict], min_identity: float = 0.9) -> tuple[dict, str]:
    """Best macro F1 among settings keeping >= ``min_identity`` of edits the same person; if none
    reaches that, the best product macro F1 x identity kept. Returns the row and the rule used."""
    keeping = [r for r in rows if r["identity_kept"] >= min_identity]
    if keeping:
        return max(keeping, key=lambda r: r["macro_f1"]), f"best macro F1 with >= {min_identity:.0%} of edits under {IDENTITY_THRESHOLD}"
    return max(rows, key=lambda r: r["macro_f1"] * r["identity_kept"]), (
        f"no setting keeps {min_identity:.0%} of edits under {IDENTITY_THRESHOLD}: best macro F1 x identity kept"
    )


def _push(row: dict) -> str:
    """A sweep row's push (EditSettings.push_threshold and its factors), as the table shows it."""
    if not row.get("push_threshold"):
        return "off"
    factors = f"{row['push_low']:g}x, {row['push_high']:g}x" if row.get("push_low") is not None else "default factors"
    return f"{factors} below {row['push_threshold']:g}" + (", same step" if row.get("push_same_step") else "")


def sweep_table(rows: list[dict], chosen: dict, rule: str, command: str | None = None, combined: dict | None = None, kept: str | None = None) -> str:
    """The sweep as markdown; ``combined``: the row of the per-emotion scales, listed last, and
    ``kept``: which scales edit_defaults.json holds (``choose_edit_defaults``)."""
    lines = ["# Edit-settings sweep", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        "| model | mode | strength | mouth strength | guidance | classifier guidance | negative | steps | keep detail | localise | push | macro F1 | macro F1, second judge | identity kept (<0.6) | median identity | Fréchet | pixel change | hands drawn | s/face |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows + ([combined] if combined else []):
        mark = " **(chosen)**" if r is chosen else ""
        fd = "–" if r["frechet"] is None else f"{r['frechet']:.2f}"
        own = r is not combined and r["mode"] != "gan" and r["guidance"] is None  # emodiff sweep --own-scales
        scales = ("per emotion",) * 3 if r is combined else ("own",) * 3 if own else (r["guidance"], r.get("classifier_guidance") or "off", r.get("negative", "null"))
        knobs = ("–",) * 9 if r["mode"] == "gan" else (
            r["strength"], r.get("mouth_strength") or "off", *scales, r["steps"], "on" if r["keep_detail"] else "off", r["localise"] or "off", _push(r)
        )  # fmt: skip
        second = "–" if r.get("macro_f1_second_judge") is None else f"{r['macro_f1_second_judge']:.3f}"
        hands = "–" if r.get("hands_drawn") is None else f"{r['hands_drawn']:.1%}"
        lines.append(
            f"| {r['model']}{mark} | {r['mode']} | {' | '.join(map(str, knobs))} | {r['macro_f1']:.3f} | {second} "
            f"| {r['identity_kept']:.0%} | {r['identity_median']:.3f} | {fd} | {r['change']:.1f} | {hands} | {r['seconds_per_input']:.3f} |"
        )
    lines += ["", f"Choice rule: {rule}, by the first judge; the second judge only reports."]
    if rows and "edits" in rows[0]:
        lines += ["", "Every row's edits are in edits/, numbered in the table's order (`emodiff compare edits/01.csv edits/02.csv` "
                      "pairs two rows on their shared faces: the sure way to tell two rows apart)."]  # fmt: skip
    if combined:
        lines += ["", f"The last row edits with each target emotion's own scales, chosen by the same rule on that emotion's F1 "
                      f"and identity; edit_defaults.json holds {kept}, whichever of the two the rule prefers."]  # fmt: skip
    return "\n".join(lines) + "\n"


def sweep_plot(rows: list[dict], chosen: dict, path: Path) -> None:
    """Macro F1 against identity kept: one marker per setting, one colour per model, mode and keep-detail switch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    curve_of = lambda r: (r["model"], r["mode"], r["keep_detail"], r["localise"], r.get("classifier_guidance", 0.0), r.get("negative", "null"), r.get("mouth_strength", 0.0))  # noqa: E731
    for key in dict.fromkeys(curve_of(r) for r in rows):
        curve = [r for r in rows if curve_of(r) == key]
        label = f"{key[0]} / {key[1]}" + (" / keep detail" if key[2] else "") + (f" / localise {key[3]:g}" if key[3] else "")
        label += f" / classifier guidance {key[4]:g}" if key[4] else ""
        label += f" / away from the {key[5]}" if key[5] != "null" else ""
        label += f" / mouth from {key[6]:g}" if key[6] else ""
        axes.plot([r["identity_kept"] for r in curve], [r["macro_f1"] for r in curve], "o", label=label)
        for r in curve:
            if r["mode"] != "gan":
                axes.annotate(f"s{r['strength']} g{'own' if r['guidance'] is None else r['guidance']}", (r["identity_kept"], r["macro_f1"]), fontsize=6, alpha=0.7)
    axes.scatter([chosen["identity_kept"]], [chosen["macro_f1"]], s=160, facecolors="none", edgecolors="red", label="chosen")
    axes.axvline(0.9, color="gray", linestyle=":", linewidth=1)
    axes.set_xlabel(f"identity kept (fraction of edits with dlib distance < {IDENTITY_THRESHOLD})")
    axes.set_ylabel("macro F1 of the judge on the edits")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=120))
    plt.close(figure)


def summary_row(model: str, settings, metrics: dict) -> dict:
    """One sweep row; ``settings`` None for an editor without any (a GAN)."""
    return {
        "model": model,
        "mode": settings.mode if settings else "gan",
        "strength": settings and settings.strength,
        "mouth_strength": settings.mouth_strength if settings else 0.0,
        "guidance": settings and settings.guidance,
        "steps": settings and settings.steps,
        "keep_detail": bool(settings and settings.keep_detail),
        "localise": settings.localise if settings else 0.0,
        "classifier_guidance": settings.classifier_guidance if settings else 0.0,
        "negative": settings.negative if settings else "null",  # None: the model's own per emotion
        "push_threshold": settings.push_threshold if settings else 0.0,
        "push_low": settings.push_low if settings else None,
        "push_high": settings.push_high if settings else None,
        "push_same_step": bool(settings and settings.push_same_step),
        "max_change": settings.max_change if settings else 0.0,
        "macro_f1": metrics["emotion"]["macro_f1"],
        "macro_f1_second_judge": metrics["second_judge"]["emotion"]["macro_f1"] if "second_judge" in metrics else None,
        "identity_kept": metrics["identity"]["kept_fraction"],
        "identity_median": metrics["identity"]["median_distance"],
        "frechet": metrics["realism"]["mean"],
        "change": metrics["change"]["mean_abs_pixel"],
        "hands_drawn": metrics["hands"]["drawn"] if "hands" in metrics else None,
        "seconds_per_input": metrics["seconds_per_input"],
        "per_emotion": {
            name: {"f1": metrics["emotion"]["f1"][name], "identity_kept": metrics["per_target"][name]["identity_kept"]}
            for name in EMOTIONS
        },
    }


def choose_per_emotion(rows: list[dict], chosen: dict, min_identity: float = 0.9) -> dict[str, dict[str, float]]:
    """Each target emotion's guidance, classifier guidance and negative by ``choose_setting``'s rule on
    that emotion's F1 and identity, among the rows that differ from ``chosen`` in those alone: a
    model's ``edit_defaults.json`` ({"guidance": {...}, "classifier_guidance": {...}, "negative":
    {...}}; the second only when a candidate row used classifier guidance, the third only when
    the candidates push away from more than one kind of label)."""
    # a setting a row does not record is its default then: sweeps written before --mouth-strength lack it
    keys = {"model": None, "mode": None, "strength": None, "mouth_strength": 0.0, "steps": None, "keep_detail": None, "localise": 0.0}
    candidates = [r for r in rows if all(r.get(k, absent) == chosen.get(k, absent) for k, absent in keys.items()) and r["guidance"] is not None]
    pushed = any(r.get("classifier_guidance") for r in candidates)
    negatives = len({r.get("negative", "null") for r in candidates}) > 1
    by_emotion: dict[str, dict] = {"guidance": {}, **({"classifier_guidance": {}} if pushed else {}), **({"negative": {}} if negatives else {})}
    for name in EMOTIONS:
        scored = [{"macro_f1": r["per_emotion"][name]["f1"], "identity_kept": r["per_emotion"][name]["identity_kept"], "row": r} for r in candidates]
        best = choose_setting(scored, min_identity)[0]["row"]  # the same rule, on this emotion's F1 and identity
        by_emotion["guidance"][name] = best["guidance"]
        if pushed:
            by_emotion["classifier_guidance"][name] = best.get("classifier_guidance") or 0.0
        if negatives:
            by_emotion["negative"][name] = best.get("negative", "null")
    return by_emotion


def choose_edit_defaults(chosen: dict, per_emotion: dict, combined: dict, min_identity: float = 0.9) -> tuple[dict, str]:
    """The scales a model should keep: ``per_emotion`` (``choose_per_emotion``'s) if the edits made
    with them (``combined``, their sweep row) win over the chosen single setting by
    ``choose_setting``'s rule, else the chosen setting's scales for every emotion. Each emotion's
    scales are chosen on its own F1, but its edits also take precision from every other target, so
    the mix can read worse than the setting it came from (measured: docs/pilot_balanced_s02).
    Returns the scales and which of the two they are."""
    if choose_setting([chosen, combined], min_identity)[0] is combined:
        return per_emotion, "the per-emotion scales"
    uniform = {"guidance": {name: chosen["guidance"] for name in EMOTIONS}}
    if "classifier_guidance" in per_emotion:
        uniform["classifier_guidance"] = {name: chosen.get("classifier_guidance") or 0.0 for name in EMOTIONS}
    if "negative" in per_emotion:
        uniform["negative"] = {name: chosen.get("negative", "null") for name in EMOTIONS}
    return uniform, "the chosen setting's scales for every emotion"
