"""The ``emodiff`` command line: one subcommand per job, each with a --help that explains it.

Options shared by several commands are declared once, in parent parsers; each subcommand's
handler is one small function that turns its options into the dataclass its module takes. Only
``labels`` and ``settings`` (no torch) are imported to build the parser, so ``--help`` and
argument errors answer at once; the work's modules are imported when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from .labels import EMOTIONS, FERDataError, parse_emotion, parse_emotions, parse_split
from .settings import BLENDS, DEFAULT_GUIDANCE, MODES, NEGATIVES, SAMPLERS, EditSettings

DATA_HELP = "FER-2013: the Kaggle CSV (plain or .gz), the image-folder release, or a mosaic from pack-data"


# ----------------------------------------------------------------------------- option types


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.5,0.7, got {text!r}") from None


def _factor_pairs(text: str) -> tuple[tuple[float, float], ...]:
    pairs = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        try:
            pairs.append((float(low), float(high)))  # no colon: float("") refuses it
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated LOW:HIGH pairs like 0.6:1.6,0.75:1.3, got {part!r} in {text!r}") from None
    return tuple(pairs)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")  # refused below, with the same message
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text!r}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 32,64,128, got {text!r}") from None


def _switch_list(text: str) -> tuple[bool, ...]:
    switches = {"on": True, "off": False}
    parts = text.split(",")
    if not all(part in switches for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated on/off like off,on, got {text!r}")
    return tuple(switches[part] for part in parts)


def _checked(parse):
    """An argparse type from a labels parser, so a bad value is a usage error naming the choices."""

    def convert(text: str):
        try:
            return parse(text)
        except FERDataError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


# ----------------------------------------------------------------------------- shared options


def _parent(add) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    add(parser)
    return parser


def _device(p):
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: auto = cuda if available; asking for an absent cuda is an error)")


def _model(p):
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")


def _scheduler(p):
    p.add_argument("--scheduler", default="ddim", choices=SAMPLERS, help="sampler (default: ddim; ddpm with --steps 1000 is the paper's)")


def _sampling(p, steps: int, guidance: float | None):
    """The sampler's options, shared by edits and random samples (with their own defaults)."""
    p.add_argument("--steps", type=int, default=steps, help=f"sampler steps over the full T (default: {steps})")
    _scheduler(p)
    default = f"{guidance:g}" if guidance is not None else f"the model's own per target emotion where it has them, else {DEFAULT_GUIDANCE:g}"
    p.add_argument("--guidance", type=float, default=guidance, help=f"classifier-free guidance scale on the label (default: {default})")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise: same seed, identical files (default: 0)")


def _edit(p):
    defaults = EditSettings()
    p.add_argument("--mode", default=defaults.mode, choices=MODES, help=f"edit mode (default: {defaults.mode})")
    p.add_argument("--strength", type=float, default=defaults.strength, help=f"fraction of T to noise/invert to, in (0, 1] (default: {defaults.strength})")
    p.add_argument("--mouth-strength", type=float, default=defaults.mouth_strength, help="with --mode invert: invert and "
                   "decode the mouth from this deeper strength, the rest of the face from --strength (differential diffusion), "
                   "so a broad smile can close instead of being hidden under pale bands; costs the deeper strength's steps "
                   f"(default: {defaults.mouth_strength:g} = off)")  # fmt: skip
    _sampling(p, defaults.steps, defaults.guidance)
    p.add_argument(
        "--keep-detail",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add only the edit's change (decode under the target minus decode under the source emotion) to the input, "
        "so texture the model cannot reproduce stays the input's own; one more decode per face; not with --mode paper "
        "(default: on with --mode invert, off otherwise)",
    )
    p.add_argument(
        "--normalise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --keep-detail: edit a copy of the face brought to FER-2013's typical brightness and contrast and scale "
        "the change back to the face's own contrast; photos are flatter than FER's faces and their edits otherwise come out "
        "twice as strong (default: on with --keep-detail)",
    )
    p.add_argument("--localise", type=float, default=defaults.localise, help="with --keep-detail: keep the input exactly where "
                   "the change (blurred over 2 pixels of the 48x48 face) is under half this many grey levels, apply it in full "
                   f"from this many; faint changes away from mouth, eyes and brows cost identity (default: {defaults.localise:g} = off)")  # fmt: skip
    p.add_argument("--negative", default=defaults.negative, choices=NEGATIVES, help="what --guidance pushes away from: null "
                   "(no emotion, standard classifier-free guidance) or source (the face's own emotion, a negative prompt: "
                   "the push is then the change of emotion alone) or an emotion (what tells the target from it) (default: the "
                   "model's own per target emotion where it has them, else null)")  # fmt: skip
    p.add_argument("--classifier-guidance", type=float, default=None, help="scale of classifier guidance: each decoding step "
                   "also follows the gradient of a noise-aware emotion classifier's log-probability of the target (the model "
                   "directory's guide/, else the shipped one), on top of --guidance; it pushes the emotions the label alone draws "
                   "faintly; 0 = off (default: the model's own per target emotion where it has them, else 0)")  # fmt: skip
    p.add_argument("--push-threshold", type=float, default=None, help="push each edit only as hard as it needs: start at "
                   "--push-low times both guidance scales, and after each decoding step go on at --push-high times them for "
                   "an edit the model's own emotion CNN does not yet read as its target with this probability (on a photo, "
                   "the edit as the photo will show it); 0 = off "
                   "(default: 0.5 with --mode invert, else 0)")  # fmt: skip
    p.add_argument("--push-low", type=float, default=defaults.push_low, help=f"with --push-threshold: the factor to start at (default: {defaults.push_low:g})")
    p.add_argument("--push-high", type=float, default=defaults.push_high, help=f"with --push-threshold: the factor for edits that do not read yet (default: {defaults.push_high:g})")
    p.add_argument("--push-same-step", action="store_true", help="with --push-threshold: an edit found weak takes the step "
                   "that found it at --push-high too, not only the steps after it (a harder push: docs/levers.md)")  # fmt: skip
    p.add_argument("--max-change", type=float, default=defaults.max_change, help="a budget for each edit: where it changes the "
                   "48x48 face by more than this many grey levels on average, its change is scaled down to it (the largest "
                   "changes are the ones that lose the person); 0 = off (default: %(default)g)")  # fmt: skip


def _blend(p):
    p.add_argument("--blend", default=BLENDS[0], choices=BLENDS, help="in photos: how the edit goes back into the photo: "
                   "poisson (the change's own steps kept wherever the face's landmark mask reaches, and what it does to "
                   "the face as a whole blended out past it by Poisson image editing: the whole expression arrives and "
                   "fades out smoothly; anything covering the face is filled in before the edit and left as it is), "
                   "landmarks (the luminance change added under the face's own brows, eyes, nose, mouth and chin, fading "
                   "to nothing inside the face: the default until 2026-12-07, read less by the judges), "
                   "guided (landmarks, with the photo's own fine detail carried along where the change follows the face's "
                   "features: a fold the edit deepens or smooths away does so at the photo's resolution; measured in the README: "
                   "the same emotion, less identity kept), "
                   "warp (the landmark mask, the photo's own pixels moved by the edit's optical flow and only what moving cannot "
                   "explain added; measured in the README, not better) or ellipse (the change added under a fixed ellipse of "
                   f"the face crop, the blend before issue #19) (default: {BLENDS[0]})")  # fmt: skip


def _training(p):
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--out", required=True, help="run directory to write (refused if it holds a run, unless --resume)")
    p.add_argument("--seed", type=int, default=0, help="seed of data order, noise, augmentation and initialisation (default: 0)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between checkpoints (default: 5)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--skip-bad", action="store_true", help="leave out malformed data rows (reported) instead of failing")
    p.add_argument("--stop-at-step", type=int, default=None, help="end this invocation after this optimizer step (resumable)")
    p.add_argument("--leave-out", default=None, metavar="FILE", help="train without the Training faces this file lists "
                   "(emodiff find-hands writes one: the faces with a hand on them) (default: train on all)")  # fmt: skip
    _device(p)


def _evaluation(p):
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="PublicTest", type=_checked(parse_split), help="split to take inputs from (default: PublicTest)")
    p.add_argument("--per-class", type=int, default=20, help="inputs per source emotion, drawn with --seed (default: 20)")
    p.add_argument("--faces", default="all", choices=("all", "tuning", "reporting"), help="draw the inputs from the split's "
                   "tuning half (for choosing settings), its reporting half (for reporting them), or all of it; the halves "
                   "are fixed, half of each emotion's faces each (default: all)")  # fmt: skip
    p.add_argument("--look", default="as-is", choices=("as-is", "contrast", "bright", "shift"), help="change the inputs before "
                   "editing, to measure faces unlike FER-2013's evenly lit, tightly cropped average: contrast (2nd..98th "
                   "percentile stretched to 0..255), bright (+40 grey levels), shift (4 pixels right and down) (default: as-is)")  # fmt: skip
    _judges(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--skip-bad", action="store_true", help="leave out malformed data rows (reported) instead of failing")
    _device(p)


def _judges(p):
    p.add_argument("--judge", default="judge", help="judge model directory (default: the shipped judge); in a sweep it "
                   "alone chooses the setting")  # fmt: skip
    p.add_argument("--second-judge", default="judge2", type=lambda name: None if name == "none" else name, help="a second judge that only reports, beside the first: a model "
                   "directory, judge2 (the shipped one, another architecture and recipe) or none (default: judge2)")  # fmt: skip


def _unet(p):
    p.add_argument("--batch-size", type=int, default=64, help="training images per step over all processes (default: 64)")
    p.add_argument("--channels", type=_int_list, default=(32, 64, 128), help="UNet widths per level (default: 32,64,128)")
    p.add_argument("--layers-per-block", type=int, default=2, help="ResNet layers per UNet level (default: 2)")


# ----------------------------------------------------------------------------- handlers


BALANCE_HELP = ("draw every emotion equally often (each face by first drawing its emotion uniformly) instead of in "
                "FER-2013's proportions, where disgust is 1.5%% of faces")


def _config(config_class, args: argparse.Namespace, **fields):
    """``config_class`` filled from the parsed options of the same names; ``fields`` add to or override them."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return config_class(**{**{name: value for name, value in vars(args).items() if name in names}, **fields})


def _command_line() -> str:
    return "emodiff " + shlex.join(sys.argv[1:])


def _pipeline(args: argparse.Namespace):
    """The editor in --model: a diffusion model directory, or a GAN one from train-gan."""
    from .pipeline import load_editor

    return load_editor(args.model, scheduler=args.scheduler, device=args.device)


def _cmd_train_encoder(args) -> int:
    from .training import EncoderTrainConfig, train_encoder

    result = train_encoder(_config(EncoderTrainConfig, args))
    if result["is_main"]:
        print(f"{args.kind}: step {result['step']}/{result['total_steps']}, saved in {args.out}")
    return 0


def _cmd_train(args) -> int:
    from .training import DiffusionTrainConfig, train_diffusion

    attention = tuple(map(bool, args.attention or (0,) * len(args.channels)))
    result = train_diffusion(_config(DiffusionTrainConfig, args, block_out_channels=args.channels, attention_levels=attention))
    if result["is_main"]:
        print(f"{args.cond}: {result['images_seen']} images seen in {result['minutes']:.1f} min, saved in {args.out}")
    return 0


def _cmd_train_gan(args) -> int:
    from .training import GanTrainConfig, train_gan

    result = train_gan(_config(GanTrainConfig, args))
    if result["is_main"]:
        print(f"gan: {result['images_seen']} images seen in {result['minutes']:.1f} min, saved in {args.out}")
    return 0


def _cmd_pack_data(args) -> int:
    import numpy as np

    from .data import load_fer2013, load_mosaic, save_mosaic
    from .labels import SPLITS

    out = Path(args.out)
    if out.suffix.lower() not in (".jpg", ".jpeg"):
        raise ValueError(f"--out {out}: a mosaic is a JPEG file, expected a name ending in .jpg")
    faces = load_fer2013(args.data, skip_bad=args.skip_bad)
    chosen = faces.take(np.flatnonzero(np.isin(faces.usage, [SPLITS.index(s) for s in args.splits])))
    if len(chosen) == 0:
        raise ValueError(f"{args.data}: no rows of {', '.join(args.splits)}")
    save_mosaic(chosen, out, quality=args.quality)
    back = load_mosaic(out)
    error = np.abs(back.images.astype(np.int16) - chosen.images).mean()
    print(f"{len(chosen)} faces ({', '.join(args.splits)}) in {out}: {out.stat().st_size / 1e6:.1f} MB, "
          f"mean error {error:.2f} grey levels; use it as --data {out}")
    return 0


def _cmd_find_hands(args) -> int:
    from .encoders import load_encoder
    from .hands import fit_detector, find_hands, write_leave_out
    from .training import training_faces

    train, _ = training_faces(args.data, args.skip_bad)
    detector = fit_detector(train, load_encoder(args.encoder))
    quality = detector.cross_validated(args.threshold)
    print(f"hand detector, 5-fold cross-validated on the {len(detector.hand)} labelled faces: average precision "
          f"{quality['average_precision']:.2f}; from {args.threshold:g}, recall {quality['recall']:.2f}, precision {quality['precision']:.2f}")
    positions = find_hands(train, detector, args.threshold)
    counts = write_leave_out(args.out, positions, train, _command_line())
    shares = ", ".join(f"{emotion} {count}/{int((train.labels == i).sum())}" for i, (emotion, count) in enumerate(counts.items()))
    print(f"{len(positions)} of {len(train)} Training faces with a hand on them ({shares}) in {args.out}; train without them with --leave-out {args.out}")
    return 0


def _cmd_edit(args) -> int:
    from .editing import EditJob, edit_files

    job = _config(
        EditJob, args, inputs=args.images, targets=parse_emotions(args.to), settings=_config(EditSettings, args),
        source=None if args.source is None else parse_emotion(args.source), detect=not args.no_detect,
    )  # fmt: skip
    return edit_files(job, lambda: _pipeline(args))


def _cmd_sample(args) -> int:
    from .editing import check_out_dir, write_samples

    label = parse_emotion(args.emotion)
    if args.n <= 0 or args.steps <= 0:
        raise ValueError("-n and --steps must be positive")
    check_out_dir(Path(args.out))
    faces = _pipeline(args).sample(label, args.n, steps=args.steps, guidance=args.guidance, seed=args.seed)
    write_samples(faces, label, Path(args.out))
    print(f"wrote {len(faces)} {EMOTIONS[label]} face(s) to {args.out}")
    return 0


def _cmd_test_encoder(args) -> int:
    from functools import partial

    from .data import load_fer2013
    from .devices import autocast, bf16_supported, resolve_device
    from .encoders import EmotionClassifier, PredictionViews, load_encoder
    from .training import evaluate_encoder

    device = resolve_device(args.device)
    model = load_encoder(args.model).to(device)
    metrics = None
    if isinstance(model, EmotionClassifier):
        asked = {"shift": args.tta_shift, "rotate_deg": args.tta_rotate, "zoom": args.tta_zoom}
        views = dataclasses.replace(PredictionViews.of(model), **{k: v for k, v in asked.items() if v is not None})
        metrics = partial(model.validation_metrics, views=views)
    faces = load_fer2013(args.data, skip_bad=args.skip_bad).split(args.split)
    if len(faces) == 0:
        raise ValueError(f"{args.data}: no {args.split} rows")
    measured = evaluate_encoder(model, faces, device, lambda: autocast(device, bf16_supported(device)), metrics)
    print(f"{type(model).__name__} on {len(faces)} {args.split} faces: " + ", ".join(f"{k} {v:.4f}" for k, v in measured.items()))
    return 0


def _cmd_export(args) -> int:
    from .files import save_model_dir
    from .runs import copy_training_records

    source, out = Path(args.model), Path(args.out)
    if (source / "denoiser").is_dir() or (source / "generator").is_dir():
        from .pipeline import load_editor

        load_editor(source, device="cpu").save_pretrained(out, fp16=args.fp16)
    else:
        from .encoders import load_encoder

        save_model_dir(load_encoder(source), out, fp16=args.fp16)
    copy_training_records(source, out)
    print(f"exported {source} to {args.out}{' in fp16' if args.fp16 else ''}")
    return 0


def experiment_parser(description: str) -> argparse.ArgumentParser:
    """The options every experiment script in tools/ shares with ``emodiff evaluate`` (the model, the
    data, which PublicTest faces, how many, where the report goes); a script adds its own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--data", required=True, help="the FER-2013 CSV")
    parser.add_argument("--faces", choices=("tuning", "reporting", "all"), default="tuning", help="which PublicTest faces (default: tuning)")
    parser.add_argument("--per-class", type=int, default=20, help="inputs per source emotion (default: 20)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report")
    return parser


def _evaluation_inputs(args):
    """Everything evaluate and sweep need, loaded after every option has been checked."""
    from .evaluation import load_evaluation_inputs

    return load_evaluation_inputs(args.data, args.split, args.per_class, args.judge, args.seed, args.skip_bad, args.faces, args.second_judge, args.look)


def _cmd_evaluate(args) -> int:
    from .evaluation import headline, write_report

    settings = _config(EditSettings, args)
    pipeline = _pipeline(args)
    setup = _evaluation_inputs(args)
    editor = lambda faces, targets: pipeline.edit_faces(faces, targets, settings, seed=args.seed)  # noqa: E731
    evaluation = setup.evaluate(editor, pipeline.device)
    write_report(evaluation, Path(args.out), f"Evaluation of {args.model or 'the shipped model'} on {args.split}", _command_line())
    print(f"{headline(evaluation.metrics)}; report in {args.out}")
    return 0


def _cmd_compare(args) -> int:
    from .evaluation import RECORDS_FILE, RESAMPLES, EditRecords, compare_records, comparison_table
    from .files import atomic_write

    resamples = RESAMPLES if args.resamples is None else args.resamples
    if resamples < 100:
        raise ValueError(f"--resamples {resamples}: too few for a 95% interval, use at least 100")
    before, after = EditRecords.read_csv(Path(args.before)), EditRecords.read_csv(Path(args.after))
    folder = lambda given: Path(given).parent.name if Path(given).name == RECORDS_FILE else Path(given).name  # noqa: E731
    names = (folder(args.before), folder(args.after))
    names = names if names[0] != names[1] else (args.before, args.after)  # the folders' names, unless they are alike
    table = comparison_table(compare_records(before, after, resamples), *names)
    print(table, end="")
    if args.out:
        atomic_write(Path(args.out), lambda temp: temp.write_text(f"```\n{_command_line()}\n```\n\n{table}"))
    return 0


def _cmd_sweep(args) -> int:
    import itertools
    import json

    from .evaluation import choose_edit_defaults, choose_per_emotion, choose_setting, summary_row, sweep_plot, sweep_table
    from .files import atomic_write
    from .pipeline import EDIT_DEFAULTS, EmotionEditPipeline, load_editor

    grid = []
    defaults = EditSettings()
    # None: each emotion's own, from the model's edit_defaults.json
    swept = ((None,),) * 3 if args.own_scales else (args.guidances, args.classifier_guidances, args.negatives)
    guidances, classifier_guidances, negatives = swept
    for mode, guidance, steps in itertools.product(args.modes, guidances, args.steps):
        for strength in (1.0,) if mode == "paper" else args.strengths:  # paper mode always starts at T
            for keep_detail in (False,) if mode == "paper" else args.keep_detail:
                mouths = dict.fromkeys(m if m > strength else 0.0 for m in args.mouth_strengths) if mode == "invert" else (0.0,)
                thresholds = (args.push_thresholds or (None,)) if mode == "invert" else (None,)  # None: the mode's default
                factors = (args.push_factors or ((defaults.push_low, defaults.push_high),)) if mode == "invert" else ((defaults.push_low, defaults.push_high),)
                for localise, pushed, negative, mouth, threshold, (low, high) in itertools.product(args.localises if keep_detail else (0.0,), classifier_guidances, negatives, mouths, thresholds, factors):
                    if threshold == 0:  # the push off has no factors: one row, not one per pair
                        low, high = defaults.push_low, defaults.push_high
                    grid.append(EditSettings(mode=mode, strength=strength, mouth_strength=mouth, steps=steps, guidance=guidance, keep_detail=keep_detail,
                                             localise=localise, classifier_guidance=pushed, negative=negative, push_threshold=threshold,
                                             push_low=low, push_high=high))  # fmt: skip
    grid = list(dict.fromkeys(grid))
    editors = {m or "shipped": load_editor(m, scheduler=args.scheduler, device=args.device) for m in args.model or [None]}
    setup = _evaluation_inputs(args)
    out = Path(args.out)
    rows, settings_of = [], {}

    def measure(name, pipeline, settings, is_diffusion=True):
        editor = lambda faces, targets: pipeline.edit_faces(faces, targets, settings, seed=args.seed)  # noqa: E731
        evaluation = setup.evaluate(editor, pipeline.device, progress=False)
        records = f"edits/{len(rows) + 1:02d}.csv"  # every row's edits, so emodiff compare can pair any two rows
        evaluation.records.write_csv(out / records)
        return {**summary_row(name, settings if is_diffusion else None, evaluation.metrics), "edits": records}

    for (name, pipeline), settings in itertools.product(editors.items(), grid):
        is_diffusion = isinstance(pipeline, EmotionEditPipeline)
        if not is_diffusion and settings != grid[0]:
            continue  # a GAN has no edit settings: one row is all it has
        print(f"{name}: {settings if is_diffusion else 'a GAN (no edit settings)'}", flush=True)
        rows.append(measure(name, pipeline, settings, is_diffusion))
        settings_of[id(rows[-1])] = settings
    chosen, rule = choose_setting(rows)
    combined = kept = scales = None
    if chosen["mode"] != "gan" and max(map(len, swept)) > 1:
        per_emotion = choose_per_emotion(rows, chosen)
        print(f"{chosen['model']}: the per-emotion scales {per_emotion}", flush=True)
        own = dataclasses.replace(settings_of[id(chosen)], guidance=None, classifier_guidance=None, negative=None)
        combined = measure(f"{chosen['model']}, per-emotion scales", editors[chosen["model"]].with_edit_defaults(per_emotion), own)
        scales, kept = choose_edit_defaults(chosen, per_emotion, combined)
    record = {"rows": rows, "chosen": chosen, "rule": rule, "per_emotion_row": combined, "edit_defaults": kept}
    atomic_write(out / "sweep.json", lambda t: t.write_text(json.dumps(record, indent=2)))
    atomic_write(out / "sweep.md", lambda t: t.write_text(sweep_table(rows, chosen, rule, _command_line(), combined, kept)))
    sweep_plot(rows, chosen, out / "sweep.png")
    print(f"chosen: {chosen} ({rule}); table in {out / 'sweep.md'}")
    if scales is not None:
        text = json.dumps(scales, indent=2)
        atomic_write(out / EDIT_DEFAULTS, lambda t: t.write_text(text))
        print(f"the per-emotion scales read macro F1 {combined['macro_f1']:.3f} at {combined['identity_kept']:.0%} identity kept, the chosen "
              f"setting {chosen['macro_f1']:.3f} at {chosen['identity_kept']:.0%}: {out / EDIT_DEFAULTS} holds {kept}; copy it into the "
              "model directory to make them its defaults")  # fmt: skip
    return 0


def _variant_models(items: list[str] | None) -> dict[str, str]:
    models = {}
    for item in items or []:
        variant, sep, directory = item.partition("=")
        if not sep or not directory:
            raise ValueError(f"--models {item!r}: expected VARIANT=DIR, e.g. label=runs/label")
        models[variant] = directory
    return models


def _cmd_reproduce_table1(args) -> int:
    from .table1 import Table1Config, reproduce_table1

    train = {"batch_size": args.batch_size, "block_out_channels": args.channels, "layers_per_block": args.layers_per_block}
    train["attention_levels"] = (False,) * len(args.channels)
    config = _config(Table1Config, args, models=_variant_models(args.models), train=train, settings=_config(EditSettings, args))
    reproduce_table1(config, _command_line())
    print(f"table in {Path(args.out) / 'table1.md'}")
    return 0


def _cmd_evaluate_photos(args) -> int:
    from .editing import expand_inputs
    from .evaluation import load_judge
    from .photo_evaluation import evaluate_photos, write_photo_report

    paths, problems = expand_inputs(args.photos)
    if problems or not paths:
        raise ValueError("; ".join(problems) or "no photos given")
    pipeline = _pipeline(args)
    judges = [load_judge(args.judge, "--judge").to(pipeline.device)]
    if args.second_judge:
        judges.append(load_judge(args.second_judge, "--second-judge").to(pipeline.device))
    evaluation = evaluate_photos(pipeline, paths, _config(EditSettings, args), judges, seed=args.seed, variants=args.variants, blend=args.blend)
    write_photo_report(evaluation, Path(args.out), _command_line())
    m = evaluation.metrics
    second = f" (second judge {m['macro_f1_second']:.3f})" if m.get("macro_f1_second") is not None else ""
    second_crops = f", second judge {m['macro_f1_crops_second']:.3f}" if m.get("macro_f1_crops_second") is not None else ""
    print(f"macro F1 {m['macro_f1']:.3f}{second} (the 48x48 edits before the paste-back {m['macro_f1_crops']:.3f}{second_crops}), "
          f"identity kept {m['identity_kept']:.0%}, seam median {m['seam_median']:.2f}, "
          f"pixels changed outside the faces {m['outside_changed']}; report in {args.out}")
    return 0


def _cmd_demo(args) -> int:
    import time

    from .assets import demo_grid
    from .files import save_image

    started = time.perf_counter()
    grid, count = demo_grid(_pipeline(args), _config(EditSettings, args), seed=args.seed)
    save_image(grid, Path(args.out))
    print(f"edited {count} faces to {len(EMOTIONS)} emotions in {time.perf_counter() - started:.1f} s: {args.out}")
    return 0


def _cmd_serve(args) -> int:
    from .app import EditService, launch

    service = EditService(args.model, args.device)
    try:
        launch(service, args.host, args.port)
    finally:
        service.close()
    return 0


def _cmd_predict(args) -> int:
    from .predict import predict_files

    return predict_files(args.images, model=args.model, device=args.device, face=args.face)


# ----------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    device, model, edit = _parent(_device), _parent(_model), _parent(_edit)
    training, evaluation, unet = _parent(_training), _parent(_evaluation), _parent(_unet)
    parser = argparse.ArgumentParser(prog="emodiff", description="Change the facial expression of a face with a conditional diffusion model (FER-2013).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler, help: str, description: str, parents=()):
        sub = commands.add_parser(name, help=help, description=description, parents=list(parents))
        sub.set_defaults(handler=handler)
        return sub

    p = command(
        "train-encoder", _cmd_train_encoder, "train a semantic encoder (cnn, vae), an evaluation judge (judge, judge2) or the guiding classifier (guide) on FER-2013",
        "Train the CNN emotion encoder, the VAE encoder, the judge (ResNet), the second judge (judge2: conv stem + "
        "transformer, its own recipe) or the noise-aware classifier that --classifier-guidance follows (guide: the emotion "
        "of a noisy face at a diffusion timestep) on the Training split, validating on PublicTest after "
        "every epoch. Writes OUT/config.json + OUT/diffusion_pytorch_model.safetensors (the model), OUT/metrics.csv (one row "
        "per epoch) and OUT/checkpoint.safetensors (every few minutes, for --resume).", [training],
    )  # fmt: skip
    p.add_argument("kind", choices=("cnn", "vae", "judge", "judge2", "guide"), help="which model to train")
    p.add_argument("--epochs", type=int, default=None, help="passes over Training (default: cnn 30, judge 30, judge2 20, vae 20, guide 15)")
    p.add_argument("--batch-size", type=int, default=128, help="images per optimizer step, over all processes (default: 128)")
    p.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (default: the kind's recipe)")
    p.add_argument("--init", default=None, help="start from the weights of this trained model directory of the same kind "
                   "(fine-tuning with a fresh warm-up + cosine schedule) instead of a random initialisation")  # fmt: skip
    p.add_argument("--adversarial-radius", type=float, default=None, metavar="R",
                   help="guide only: train it adversarially, each noisy face first pushed the way that most raises the loss, "
                   "as far as a change of L2 norm R to the clean face (faces in [-1, 1]) moves it; its gradients become "
                   "smooth and face-shaped, but measured as a guide it bought less emotion per point of identity than the "
                   "shipped, plainly trained one (README) (default: 0, plain training; with --init, that model's own)")  # fmt: skip
    p.add_argument("--balance-classes", action="store_true", help=BALANCE_HELP)
    p.add_argument("--fingers", type=_fraction, default=0.0, metavar="P",
                   help="draw 2 to 4 finger-like bars over this fraction of the training faces, of every emotion, so the "
                   "classifier stops reading a hand over the mouth as fear or surprise, as FER-2013's faces teach it; "
                   "measured on the guide, its edits drew fewer hands but read less (README) (default: 0, none)")  # fmt: skip

    p = command(
        "train", _cmd_train, "train the conditional diffusion model (label, cnn or vae variant)",
        "Train the paper's conditional DDPM (1000 steps, linear betas 1e-4..0.02, MSE on the noise) on the Training split. "
        "The condition added to the timestep embedding is the label embedding (label) or concat(label embedding, "
        "Linear(semantic code)) (cnn, vae). Writes a model directory usable by 'emodiff edit --model OUT' after every "
        "checkpoint: denoiser/ (EMA weights), scheduler/, encoder/, metrics.csv (loss curve), samples/*.png, "
        "training_config.json and checkpoint.safetensors (for --resume). Runs on several GPUs or machines unchanged with "
        "'accelerate launch -m emodiff.cli train ...'.", [training, unet],
    )  # fmt: skip
    p.add_argument("--cond", required=True, choices=("label", "cnn", "vae"), help="conditioning variant")
    p.add_argument("--encoder", default=None, help="semantic encoder directory for cnn/vae (default: the shipped one)")
    p.add_argument("--init", default=None, help="continue from this trained model directory's weights (its architecture and encoder; a fresh optimizer and schedule)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--images", type=int, default=None, help="budget in training images seen (default: 600000)")
    budget.add_argument("--minutes", type=float, default=None, help="budget in minutes of training, summed over resumes")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate after warm-up (default: 3e-4)")
    p.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"), help="learning rate after warm-up: constant, or cosine decay to zero at the --images budget (default: constant)")
    p.add_argument("--min-snr-gamma", type=float, default=None, help="min-SNR loss weighting with this gamma (e.g. 5; default: off)")
    p.add_argument("--max-timestep", type=int, default=None, help="train only on timesteps below this (of 1000): edits invert to "
                   "and decode from strength x 1000 (200 by default), so a fine-tuning stage (--init) can spend its budget there; "
                   "a model trained so no longer samples from pure noise (--mode paper) (default: all 1000)")  # fmt: skip
    p.add_argument("--balance-classes", action="store_true", help=BALANCE_HELP)
    p.add_argument("--attention", type=_int_list, default=None, help="1/0 per level: self-attention there (default: none; the mid block always has it)")
    p.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the saved weights (default: 0.999)")
    p.add_argument("--sample-minutes", type=float, default=30.0, help="minutes between sample grids in OUT/samples (one more at the end; default: 30)")

    p = command(
        "train-gan", _cmd_train_gan, "train the StarGAN-style editor, the GAN peer of the diffusion model",
        "Train a StarGAN-style expression editor on the Training split: a generator taking the face and the target "
        "emotion (one-hot planes) and a spectrally normalised discriminator with a real/fake head and an emotion head; "
        "hinge adversarial loss, emotion classification, cycle reconstruction (and optionally an identity term). Writes "
        "a model directory usable by 'emodiff edit --model OUT' (and evaluate, sweep, reproduce-table1) after every "
        "checkpoint: generator/ (EMA weights), metrics.csv, samples/*.png (held-out faces edited to every emotion), "
        "training_config.json and checkpoint.safetensors (for --resume).", [training],
    )  # fmt: skip
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--images", type=int, default=None, help="budget in training images seen (default: 600000, the shipped diffusion model's)")
    budget.add_argument("--minutes", type=float, default=None, help="budget in minutes of training, summed over resumes")
    p.add_argument("--batch-size", type=int, default=64, help="training images per step over all processes (default: 64)")
    p.add_argument("--lr-generator", type=float, default=1e-4, help="Adam learning rate of the generator (default: 1e-4)")
    p.add_argument("--lr-discriminator", type=float, default=2e-4, help="Adam learning rate of the discriminator (default: 2e-4)")
    p.add_argument("--cycle-weight", type=float, default=10.0, help="weight of the cycle reconstruction L1 (default: 10, StarGAN's)")
    p.add_argument("--identity-weight", type=float, default=0.0, help="weight of L1(G(face, own emotion), face) (default: 0)")
    p.add_argument("--generator-channels", type=_int_list, default=(32, 64, 128), help="generator widths per level (default: 32,64,128)")
    p.add_argument("--residual-blocks", type=int, default=4, help="residual blocks at the generator's lowest resolution (default: 4)")

    p = command(
        "pack-data", _cmd_pack_data, "write FER-2013 splits as one compact JPEG mosaic (to move the data to a GPU machine)",
        "Write the faces of --splits as one JPEG of 48x48 tiles with their labels and splits in its comment; every --data "
        "option reads it. FER-2013's faces came from JPEGs, so at quality 95 the Training split (28,709 faces) is about "
        "37 MB against 80 MB of CSV, with a mean error of about 0.1 grey levels (printed).",
    )  # fmt: skip
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--out", required=True, help="the mosaic to write (.jpg)")
    p.add_argument("--splits", type=_checked(lambda t: tuple(map(parse_split, t.split(",")))), default=("Training",), help="comma-separated splits to keep (default: Training)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    p.add_argument("--skip-bad", action="store_true", help="leave out malformed data rows (reported) instead of failing")

    p = command(
        "find-hands", _cmd_find_hands, "list the Training faces with a hand on them, to train without them (--leave-out)",
        "A hand over the mouth, cheek or brow is on a third of FER-2013's fear faces, a quarter of its surprise faces and "
        "a sixth of its sad ones; a model trained on them draws hands when it makes a face fearful. This fits a hand "
        "detector (a logistic regression on --encoder's features) to 1,500 Training faces labelled by hand (shipped with "
        "emodiff), runs it over the Training split and writes the positions of the faces it finds (and every labelled "
        "hand) to --out, for train, train-encoder and train-gan --leave-out.",
    )  # fmt: skip
    p.add_argument("--data", required=True, help=DATA_HELP + "; the labels mark faces of the full Training split")
    p.add_argument("--out", required=True, help="the leave-out file to write (.json)")
    p.add_argument("--threshold", type=_fraction, default=0.3, help="detector probability from which a face is listed "
                   "(default: 0.3; the cross-validated recall and precision there are printed)")  # fmt: skip
    p.add_argument("--encoder", default="cnn", help="classifier whose features the detector reads (default: the shipped "
                   "semantic CNN encoder: a judge must not choose what the model learns)")  # fmt: skip
    p.add_argument("--skip-bad", action="store_true", help="leave out malformed data rows (reported) instead of failing")

    p = command(
        "edit", _cmd_edit, "change the expression of face images to chosen emotions",
        "Edit each IMAGE to every emotion in --to. A face crop (up to 64x64) is edited whole and written as "
        "OUT/<stem>_<emotion>.png, 8-bit grayscale at its size. In a photo (larger, any format, colour or not, EXIF "
        "rotation applied) the faces are found and aligned, edited as 48x48 crops, and the change is blended into the "
        "photo's luminance: OUT/<stem>_<emotion>.<ext> at the photo's size, colours, ICC profile, DPI and EXIF kept "
        "(JPEG at the input's own quantisation). Modes: paper = from pure noise with the target label and the input's "
        "semantic code (the paper's manipulation); sdedit = noise the input to strength*T and denoise with the target; "
        "invert = deterministic DDIM inversion of the input to strength*T under its source emotion, then decode under "
        "the target (keeps the person best). Every output name is checked before any work: a run never writes over an "
        "input or another of its outputs, and replaces existing files only with --overwrite. Inputs that cannot be "
        "edited are named with the reason, the rest are written, and the exit code is 1.", [model, edit, device],
    )  # fmt: skip
    p.add_argument("images", nargs="+", help="face crops (up to 64x64), photos (any size; faces are found), or folders of them")
    p.add_argument("--to", required=True, help=f"target emotion(s), comma-separated, or 'all': {', '.join(EMOTIONS)}")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--from", dest="source", default=None, help="the inputs' true emotion, for invert mode (default: predicted by the CNN encoder)")
    p.add_argument("--face", default="largest", help="in photos: largest (of the faces found with at least half the surest one's confidence), all, or an index counted left to right from 0 (default: largest)")
    _blend(p)
    p.add_argument("--crop", action="store_true", help="in photos: also write each 48x48 face crop and its edits")
    p.add_argument("--no-detect", action="store_true", help="take every input as a face crop, whatever its size")
    p.add_argument("--grid", action="store_true", help="also write OUT/<stem>_grid.png: the input and every target in a labelled row")
    p.add_argument("--batch-size", type=int, default=16, help="input faces edited together (default: 16)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist in --out (never an input)")

    p = command("sample", _cmd_sample, "generate random faces showing an emotion",
                "Sample N random faces of one emotion from pure noise and write OUT/<emotion>_<i>.png.", [model, device])  # fmt: skip
    p.add_argument("--emotion", required=True, help=f"one of {', '.join(EMOTIONS)}")
    p.add_argument("-n", type=int, default=8, help="number of faces (default: 8)")
    p.add_argument("--out", required=True, help="output directory")
    _sampling(p, steps=50, guidance=3.0)

    p = command(
        "test-encoder", _cmd_test_encoder, "measure an encoder or judge on a FER-2013 split (accuracy, or PSNR for the VAE)",
        "Print the accuracy (classifiers, mirror-averaged) or reconstruction PSNR (VAE) of a model directory, or of a "
        "shipped model named cnn, vae, judge or judge2, on one split.", [device],
    )  # fmt: skip
    p.add_argument("model", help="model directory, or cnn / vae / judge / judge2 for the shipped ones")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="PublicTest", type=_checked(parse_split), help="Training, PublicTest or PrivateTest (default: PublicTest)")
    p.add_argument("--skip-bad", action="store_true", help="leave out malformed data rows (reported) instead of failing")
    p.add_argument("--tta-shift", type=int, default=None, help="classifiers: also average over the face moved this many pixels each way (0: none; default: the model's own setting)")
    p.add_argument("--tta-rotate", type=float, default=None, help="classifiers: also average over the face turned this many degrees each way (0: none; default: the model's own)")
    p.add_argument("--tta-zoom", type=float, default=None, help="classifiers: also average over the face zoomed by 1 ± this fraction (0: none; default: the model's own)")

    p = command(
        "export", _cmd_export, "copy a trained model directory without its training state, optionally in fp16",
        "Write the loadable part of a model directory (an encoder, a diffusion model's denoiser/, encoder/ and "
        "scheduler/, or a GAN's generator/) and the run's record (metrics.csv, training_config.json) to OUT, dropping the checkpoint and samples.",
    )  # fmt: skip
    p.add_argument("model", help="trained model directory (from train-encoder, train or train-gan)")
    p.add_argument("out", help="directory to write")
    p.add_argument("--fp16", action="store_true", help="store weights in half precision (half the size)")

    p = command(
        "evaluate", _cmd_evaluate, "measure edits: judge F1 per emotion, identity kept, realism, change and speed",
        "Take --per-class inputs of every source emotion from --split, edit each to all 7 emotions and measure: the "
        "judge's precision/recall/F1 per target (the paper's Table 1) and macro F1, beside the judge's F1 on the real "
        "inputs; dlib face-descriptor distance to the input (identity kept: < 0.6), SSIM and PSNR; Fréchet distance in "
        "judge features to real faces of the target emotion; mean pixel change; time per face; 95% intervals from "
        "resampling the input faces. Writes OUT/report.md, OUT/metrics.json, OUT/edits.csv (every edit's verdicts and "
        "identity distance, for emodiff compare), OUT/grid.png and OUT/confusion.png.", [model, evaluation, edit],
    )  # fmt: skip

    p = command(
        "compare", _cmd_compare, "is one evaluation better than another, or chance? (paired, same faces)",
        "Compare two 'emodiff evaluate' runs on the same input faces (the same --data, --split, --faces, --per-class, "
        "--seed and --look): macro F1 by each judge, identity kept and each emotion's F1, AFTER minus BEFORE, with 95% "
        "intervals from resampling the faces, the same faces for both, so what the faces share cancels. With 70 or 140 "
        "faces one emotion's F1 moves by a few hundredths by chance; a difference whose interval holds zero is not yet one.",
    )  # fmt: skip
    p.add_argument("before", help="an evaluate --out folder (or its edits.csv): the reference")
    p.add_argument("after", help="an evaluate --out folder (or its edits.csv): the candidate")
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples of the faces (default: 2000)")

    p = command(
        "evaluate-photos", _cmd_evaluate_photos, "measure photo edits: identity at the photo's resolution, emotion, seams, containment",
        "Edit the largest face of each photo to all 7 emotions and measure every edited photo: dlib's face-descriptor "
        "distance to the input face at the photo's resolution (identity kept below 0.6), the judge's verdict on the face "
        "re-cropped from the edited photo (per-emotion F1), a seam score (the 99th percentile of the change's steps "
        "where the edit ends and the photo is flat, once the input is moved onto the edit by optical flow, in grey levels "
        "per pixel; 0 for an unedited photo, at most 1 for a change that fades out) and the pixels changed outside the face (must be 0). Writes OUT/report.md, OUT/metrics.json and "
        "OUT/contact_sheet.jpg (each photo's face and its 7 edits).",
        [model, edit, device],
    )  # fmt: skip
    p.add_argument("photos", nargs="+", help="photos, or folders of them (e.g. ../shared/photos)")
    p.add_argument("--variants", action="store_true", help="also measure harder copies of each photo: turned 20°, shrunk to "
                   "a 60-pixel face, grayscale, and with a dark bar across the mouth")  # fmt: skip
    _judges(p)
    _blend(p)
    p.add_argument("--out", required=True, help="output directory")

    p = command(
        "sweep", _cmd_sweep, "evaluate a grid of edit settings and choose the best one",
        "Run the evaluate measures over every combination of --modes, --strengths, --guidances, --steps and --keep-detail "
        "(paper mode ignores strength and keep-detail) for each --model, then write OUT/sweep.md (table), OUT/sweep.json "
        "and OUT/sweep.png (macro F1 against identity kept, one colour per model, mode and keep-detail switch), and each "
        "row's edits as OUT/edits/NN.csv, in the table's order, for emodiff compare. The chosen "
        "setting is the best macro F1 among those keeping >= 90% of edits under the 0.6 identity distance, else the best "
        "F1 x identity kept. With more than one guidance, classifier guidance or negative, each target emotion's scales "
        "(and negative) are then "
        "chosen by the same rule on that emotion's F1 and identity, the edits made with them are measured as one more row, "
        "and OUT/edit_defaults.json holds them if the rule prefers that row to the chosen setting, else the chosen "
        "setting's scales for every emotion: copy it into a model directory to make them its defaults.", [evaluation],
    )  # fmt: skip
    p.add_argument("--model", action="append", default=None, help="model directory; repeat to compare models (default: the shipped model)")
    p.add_argument("--modes", type=lambda t: tuple(t.split(",")), default=("invert",), help="comma-separated modes (default: invert)")
    p.add_argument("--strengths", type=_float_list, default=(0.4, 0.5, 0.6), help="comma-separated strengths (default: 0.4,0.5,0.6)")
    p.add_argument("--guidances", type=_float_list, default=(5.0, 7.0, 9.0), help="comma-separated guidance scales (default: 5,7,9)")
    p.add_argument("--mouth-strengths", type=_float_list, default=(0.0,), help="comma-separated --mouth-strength values, used in invert mode; "
                   "one not above a strength gives that strength's plain edit (default: 0 = off)")  # fmt: skip
    p.add_argument("--localises", type=_float_list, default=(0.0,), help="comma-separated --localise levels, used with keep-detail on (default: 0 = off)")
    p.add_argument("--push-thresholds", type=_float_list, default=(), help="comma-separated --push-threshold values, used in invert "
                   "mode; 0 replays a sweep measured before the push was the default (default: the default, 0.5)")  # fmt: skip
    p.add_argument("--own-scales", action="store_true", help="edit with the model's own per-emotion guidance, classifier guidance "
                   "and negative (its edit_defaults.json) instead of --guidances, --classifier-guidances and --negatives: "
                   "to sweep the other settings, e.g. --push-factors, around the model's defaults")  # fmt: skip
    p.add_argument("--push-factors", type=_factor_pairs, default=(), help="comma-separated LOW:HIGH pairs of --push-low and --push-high, "
                   "used in invert mode with the push on, e.g. 0.6:1.6,0.75:1.3 (default: the defaults' pair)")  # fmt: skip
    p.add_argument("--negatives", type=lambda t: tuple(t.split(",")), default=("null",), help="comma-separated --negative choices (default: null)")
    p.add_argument("--classifier-guidances", type=_float_list, default=(0.0,), help="comma-separated --classifier-guidance scales (default: 0 = off)")
    p.add_argument("--steps", type=_int_list, default=(10,), help="comma-separated sampler step counts (default: 10)")
    p.add_argument("--keep-detail", type=_switch_list, default=(False, True), help="comma-separated on/off of --keep-detail (default: off,on; paper mode only off)")
    p.add_argument("--seed", type=int, default=0, help="seed of input choice and noise (default: 0)")
    _scheduler(p)

    p = command(
        "reproduce-table1", _cmd_reproduce_table1, "train the label, cnn and vae variants at one budget and reproduce the paper's Table 1",
        "Train the three variants of the paper with the same recipe and the same budget in training images seen (or take "
        "trained ones with --models), then evaluate each on --split twice: in the paper's protocol (from pure noise, "
        "target label + the input's semantic code, no guidance) and with the edit options below (default: emodiff's "
        "defaults). Writes OUT/table1.md (the paper's rows beside ours, with identity kept, realism and pixel change, and "
        "the runs' images, minutes and hardware), OUT/table1.json, OUT/runs/<variant>/ and "
        "OUT/evaluations/<protocol>-<variant>/. With --resume, a variant already trained to the budget is not trained "
        "again, an unfinished one continues from its checkpoint, and an evaluation finished with the same model, settings, "
        "faces and judges is kept rather than run again.", [evaluation, edit, unet],
    )  # fmt: skip
    p.add_argument("--images", type=int, default=600_000, help="training budget per variant in images seen (default: 600000)")
    p.add_argument("--models", nargs="+", metavar="VARIANT=DIR", help="use these trained model directories instead of training, e.g. label=runs/label")
    p.add_argument("--resume", action="store_true", help="continue a reproduction in --out")
    p.add_argument("--paper-steps", type=int, default=50, help="DDIM steps of the paper-protocol rows (default: 50)")
    p.add_argument("--gan", default=None, help="also evaluate this trained GAN model directory (from train-gan) on the same faces: the StarGAN-style row")

    p = command(
        "demo", _cmd_demo, "edit the bundled sample faces and photo to all 7 emotions, into one grid PNG",
        "Edit the bundled FER-2013 PublicTest faces and the bundled photo (NASA portrait of Eileen Collins, public "
        "domain, from scikit-image's data) to every emotion with the shipped model and write one labelled grid.",
        [model, edit, device],
    )  # fmt: skip
    p.add_argument("--out", default="emodiff-demo.png", help="grid PNG to write (default: emodiff-demo.png)")

    p = command(
        "serve", _cmd_serve, "run the web app (gradio): upload a photo, choose emotions, download the edits",
        "Serve a gradio web app on --host:--port: upload a photo or face crop (or pick a bundled sample), choose emotions "
        "and a strength, see the edit, a before/after view and the strip of all 7 emotions, and download. Uploads over "
        "20 MB or that are not images are refused with a message. Needs 'pip install gradio'.", [model, device],
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")

    p = command(
        "predict", _cmd_predict, "predict the emotion of face crops and faces in photos with the CNN encoder",
        "Print the emotion the CNN encoder sees in each face: a crop (up to 64x64) whole, or the faces in a photo, found "
        "and framed as 'emodiff edit' frames them. With no IMAGE, runs on the bundled sample faces.", [device],
    )  # fmt: skip
    p.add_argument("images", nargs="*", help="image files (default: the bundled sample faces)")
    p.add_argument("--model", default=None, help="classifier model directory (default: the shipped CNN encoder)")
    p.add_argument("--face", default="largest", help="in photos: largest (of the faces found with at least half the surest one's confidence), all, or an index counted left to right from 0 (default: largest)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, FileExistsError, PermissionError) as error:
        print(f"emodiff {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, ImportError) as error:  # FERDataError, PhotoError, ModelLoadError are ValueErrors
        print(f"emodiff {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"emodiff {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (checkpoint saved: continue with --resume)" if args.command.startswith("train") else ""
        print(f"emodiff {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
