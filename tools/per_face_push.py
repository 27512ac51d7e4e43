"""Each face pushed only as hard as it needs, measured on an `emodiff evaluate` set without adding
it to the package: every edit is made at ``--low`` times the model's per-emotion scales (guidance
and classifier guidance), and an edit the model's CNN (the encoder that predicts a face's source
emotion; neither judge) does not yet read as its target with probability ``--threshold`` is made
again at ``--high`` times them. A fixed scale pushes faces that read at once as hard as faces that
resist, and the first pay in identity for nothing. Measured, not yet the default: it edits many
faces twice (docs/levers.md, "Each face pushed as hard as it needs"); the same rule decided inside
one decode is the default since (``EditSettings.push_threshold``).

    python tools/per_face_push.py --low 0.75 --high 1.3 --threshold 0.5 [--model DIR] \\
        --data fer2013.csv --faces tuning --per-class 10 --out OUT

``--low K --high K --threshold 0`` edits every face at K times the scales (1: the model's
defaults); ``emodiff compare`` pairs two such reports.
"""

import numpy as np
import torch

from emodiff.data import to_tensor
from emodiff.cli import experiment_parser
from emodiff.evaluation import evaluate_experiment
from emodiff.pipeline import EmotionEditPipeline
from emodiff.settings import EditSettings


def scaled(pipe: EmotionEditPipeline, times: float) -> EmotionEditPipeline:
    """The same models with every per-emotion guidance and classifier guidance scale times ``times``."""
    defaults = pipe.edit_defaults
    return pipe.with_edit_defaults(
        {**defaults, **{name: {emotion: scale * times for emotion, scale in defaults.get(name, {}).items()} for name in ("guidance", "classifier_guidance")}}
    )


def per_face_editor(pipe: EmotionEditPipeline, low: float, high: float, threshold: float):
    """An editor (faces, targets -> edits) that re-edits at ``high`` the faces with any edit the CNN
    reads as its target below ``threshold``, and keeps the stronger edit only for those targets."""
    gentle, strong, settings = scaled(pipe, low), scaled(pipe, high), EditSettings(push_threshold=0.0)  # two edits, not the push inside one

    def edit(faces: np.ndarray, targets: list[int]) -> np.ndarray:
        edits = gentle.edit_faces(faces, targets, settings)
        with torch.inference_mode():
            reads = pipe.classifier.predict_proba(to_tensor(edits.reshape(-1, *faces.shape[1:])).to(pipe.device)).cpu().numpy()
        weak = reads.reshape(*edits.shape[:2], -1)[:, np.arange(len(targets)), targets] < threshold
        again = weak.any(axis=1)
        if again.any():
            stronger = strong.edit_faces(faces[again], targets, settings)
            edits[again] = np.where(weak[again][..., None, None], stronger, edits[again])
        return edits

    return edit


def main(argv: list[str] | None = None) -> None:
    parser = experiment_parser(__doc__)
    parser.add_argument("--low", type=float, default=1.0, help="factor on the per-emotion scales of the first edit (default: 1)")
    parser.add_argument("--high", type=float, required=True, help="factor on them for an edit that does not read yet")
    parser.add_argument("--threshold", type=float, required=True, help="the CNN's probability of the target an edit must reach, 0..1")
    args = parser.parse_args(argv)
    if not 0 <= args.threshold <= 1:
        parser.error(f"--threshold must be in 0..1, got {args.threshold}")
    if min(args.low, args.high) <= 0:
        parser.error(f"--low and --high must be positive, got {args.low} and {args.high}")
    pipe = EmotionEditPipeline.from_pretrained(args.model)
    title = f"Each face pushed as hard as it needs: x{args.low:g}, then x{args.high:g} below p = {args.threshold:g}"
    evaluate_experiment(per_face_editor(pipe, args.low, args.high, args.threshold), pipe.device, args.data, args.faces, args.per_class, args.out, title)


if __name__ == "__main__":
    main()
