"""Guidance rescale (Lin et al., 2024), measured on an `emodiff evaluate` set without adding it to
the package: each decoding step's guided noise prediction is brought back to the conditional
prediction's standard deviation and mixed in at ``phi``, the usual remedy for over-guided samples.
Measured and not kept (docs/levers.md, "Guidance rescale").

    python tools/guidance_rescale.py --phi 0.7 [--guidance-times 1.3] [--model DIR] \\
        --data fer2013.csv --faces tuning --per-class 10 --out OUT

``--guidance-times`` multiplies the model's per-emotion guidance scales; everything else is the
model's edit defaults, as `emodiff evaluate` uses them.
"""

from emodiff.cli import experiment_parser
from emodiff.evaluation import evaluate_experiment
from emodiff.pipeline import EmotionEditPipeline
from emodiff.settings import EditSettings


def rescaled(guided, phi: float):
    """``guided`` (a pipeline's ``_guided``: conditional, negative, guidance -> guided prediction)
    with each guided prediction rescaled toward the conditional one's standard deviation by ``phi``
    (0: unchanged)."""

    def rescaled_guided(conditional, negative, guidance):
        eps = guided(conditional, negative, guidance)
        if phi == 0 or negative is None:
            return eps
        dims = tuple(range(1, eps.ndim))
        matched = eps * conditional.std(dim=dims, keepdim=True) / eps.std(dim=dims, keepdim=True)
        return phi * matched + (1 - phi) * eps

    return rescaled_guided


def main(argv: list[str] | None = None) -> None:
    parser = experiment_parser(__doc__)
    parser.add_argument("--phi", type=float, required=True, help="share of the rescaled prediction, 0..1")
    parser.add_argument("--guidance-times", type=float, default=1.0, help="factor on every per-emotion guidance scale (default: 1)")
    args = parser.parse_args(argv)
    if not 0 <= args.phi <= 1:
        parser.error(f"--phi must be in 0..1, got {args.phi}")
    pipe = EmotionEditPipeline.from_pretrained(args.model)
    scales = pipe.edit_defaults.get("guidance", {})
    pipe = pipe.with_edit_defaults({**pipe.edit_defaults, "guidance": {k: v * args.guidance_times for k, v in scales.items()}})
    pipe._guided = rescaled(pipe._guided, args.phi)
    settings = EditSettings(push_threshold=0.0)  # the defaults it was measured against, before the push
    editor = lambda faces, targets: pipe.edit_faces(faces, targets, settings)  # noqa: E731
    title = f"Guidance rescale {args.phi:g}, guidance x{args.guidance_times:g}"
    evaluate_experiment(editor, pipe.device, args.data, args.faces, args.per_class, args.out, title)


if __name__ == "__main__":
    main()
