"""The ``emodiff`` command line: one subcommand per job, each with a --help that explains it."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from importlib import import_module
from pathlib import Path

from .data import EMOTIONS, FERDataError


def _lazy(target: str):
    """A handler importing ``module:function`` only when its command runs, so --help stays quick."""
    module, function = target.split(":")
    return lambda args: getattr(import_module(f".{module}", __package__), function)(args)


def _add_edit_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by edit, evaluate and sweep."""
    from .pipeline import MODES, SCHEDULERS, EditSettings

    defaults = EditSettings()
    parser.add_argument("--mode", default=defaults.mode, choices=MODES, help=f"edit mode (default: {defaults.mode})")
    parser.add_argument("--strength", type=float, default=defaults.strength, help=f"fraction of T to noise/invert to, in (0, 1] (default: {defaults.strength})")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"sampler steps over the full T (default: {defaults.steps})")
    parser.add_argument("--scheduler", default="ddim", choices=tuple(SCHEDULERS), help="sampler (default: ddim; ddpm with --steps 1000 is the paper's)")
    parser.add_argument("--guidance", type=float, default=defaults.guidance, help=f"classifier-free guidance scale on the label (default: {defaults.guidance})")
    parser.add_argument(
        "--keep-detail",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add only the edit's change (decode under the target minus decode under the source emotion) to the input, "
        "so texture the model cannot reproduce stays the input's own; one more decode per face; not with --mode paper "
        "(default: on with --mode invert, off otherwise)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise: same seed, identical files (default: 0)")


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.5,0.7, got {text!r}") from None


def _switch_list(text: str) -> tuple[bool, ...]:
    switches = {"on": True, "off": False}
    parts = text.split(",")
    if not all(part in switches for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated on/off like off,on, got {text!r}")
    return tuple(switches[part] for part in parts)


def _add_run_control(parser: argparse.ArgumentParser) -> None:
    """Checkpointing, resuming, bad-row handling and device: shared by both training commands."""
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between checkpoints (default: 5)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--skip-bad", action="store_true", help="leave out malformed data rows (reported) instead of failing")
    parser.add_argument("--stop-at-step", type=int, default=None, help="end this invocation after this optimizer step (resumable)")
    _add_device(parser)


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: auto = cuda if available)"
    )


def _config(config_class, args: argparse.Namespace, **fields):
    """``config_class`` filled from the parsed options of the same names; ``fields`` add to or override them."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return config_class(**{**{name: value for name, value in vars(args).items() if name in names}, **fields})


def _cmd_train_encoder(args: argparse.Namespace) -> int:
    from .training import EncoderTrainConfig, train_encoder

    result = train_encoder(_config(EncoderTrainConfig, args))
    if result["is_main"]:
        print(f"{args.kind}: step {result['step']}/{result['total_steps']}, saved in {args.out}")
    return 0


def _split(text: str) -> str:
    from .data import parse_split

    try:
        return parse_split(text)
    except FERDataError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 32,64,128, got {text!r}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import DiffusionTrainConfig, train_diffusion

    attention = args.attention or (0,) * len(args.channels)
    config = _config(DiffusionTrainConfig, args, block_out_channels=args.channels, attention_levels=tuple(map(bool, attention)))
    result = train_diffusion(config)
    if result["is_main"]:
        print(f"{args.cond}: {result['images_seen']} images seen in {result['minutes']:.1f} min, saved in {args.out}")
    return 0


def _cmd_test_encoder(args: argparse.Namespace) -> int:
    from .data import load_fer2013
    from .encoders import load_encoder
    from .training import evaluate_encoder, make_accelerator

    model = load_encoder(args.model)
    overrides = {"tta_shift": args.tta_shift, "tta_rotate_deg": args.tta_rotate, "tta_zoom": args.tta_zoom}
    model.register_to_config(**{key: value for key, value in overrides.items() if value is not None})
    faces = load_fer2013(args.data, skip_bad=args.skip_bad).split(args.split)
    if len(faces) == 0:
        raise ValueError(f"{args.data}: no {args.split} rows")
    accelerator = make_accelerator(args.device)
    metrics = evaluate_encoder(model.to(accelerator.device), faces, accelerator)
    print(f"{type(model).__name__} on {len(faces)} {args.split} faces: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .files import save_model_dir
    from .training import METRICS, TRAINING_CONFIG

    source, out = Path(args.model), Path(args.out)
    if (source / "denoiser").is_dir():
        from .pipeline import EmotionEditPipeline

        EmotionEditPipeline.from_pretrained(source, device="cpu").save_pretrained(out, fp16=args.fp16)
    else:
        from .encoders import load_encoder

        save_model_dir(load_encoder(source), out, fp16=args.fp16)
    for record in (METRICS, TRAINING_CONFIG):  # how the model was trained travels with it
        if (source / record).is_file():
            shutil.copyfile(source / record, out / record)
    print(f"exported {source} to {args.out}{' in fp16' if args.fp16 else ''}")
    return 0


def _command_line() -> str:
    import shlex

    return "emodiff " + shlex.join(sys.argv[1:])


def _evaluation_inputs(args: argparse.Namespace):
    """Everything evaluate and sweep need, loaded after every option has been checked."""
    from .evaluation import load_evaluation_inputs

    return load_evaluation_inputs(args.data, args.split, args.per_class, args.judge, args.seed, args.skip_bad)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .editing import load_pipeline
    from .evaluation import evaluate_editor, write_report
    from .pipeline import EditSettings

    settings = EditSettings.from_options(args)
    pipeline = load_pipeline(args.model, args.scheduler, args.device)
    inputs, split, judge, identity = _evaluation_inputs(args)
    editor = lambda faces, targets: pipeline.edit_faces(faces, targets, settings, seed=args.seed)  # noqa: E731
    evaluation = evaluate_editor(editor, inputs, judge.to(pipeline.device), identity, reference=split)
    title = f"Evaluation of {args.model or 'the shipped model'} on {args.split}"
    write_report(evaluation, Path(args.out), title, _command_line())
    m = evaluation.metrics
    print(f"macro F1 {m['emotion']['macro_f1']:.3f} (real inputs {m['real_inputs']['macro_f1']:.3f}), identity kept "
          f"{m['identity']['kept_fraction']:.0%}, median distance {m['identity']['median_distance']:.3f}; report in {args.out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import itertools
    import json

    from .editing import load_pipeline
    from .evaluation import choose_setting, evaluate_editor, summary_row, sweep_plot, sweep_table
    from .files import atomic_write
    from .pipeline import EditSettings

    grid = []
    for mode, guidance, steps in itertools.product(args.modes, args.guidances, args.steps):
        for strength in (1.0,) if mode == "paper" else args.strengths:  # paper mode always starts at T
            for keep_detail in (False,) if mode == "paper" else args.keep_detail:
                grid.append(EditSettings(mode=mode, strength=strength, steps=steps, guidance=guidance, keep_detail=keep_detail))
    models = args.model or [None]
    pipelines = {m or "shipped": load_pipeline(m, args.scheduler, args.device) for m in models}
    inputs, split, judge, identity = _evaluation_inputs(args)
    rows = []
    for (name, pipeline), settings in itertools.product(pipelines.items(), grid):
        print(f"{name}: {settings}", flush=True)
        editor = lambda faces, targets: pipeline.edit_faces(faces, targets, settings, seed=args.seed)  # noqa: E731
        metrics = evaluate_editor(editor, inputs, judge.to(pipeline.device), identity, reference=split, progress=False).metrics
        rows.append(summary_row(name, settings, metrics))
    chosen, rule = choose_setting(rows)
    out = Path(args.out)
    atomic_write(out / "sweep.json", lambda t: t.write_text(json.dumps({"rows": rows, "chosen": chosen, "rule": rule}, indent=2)))
    atomic_write(out / "sweep.md", lambda t: t.write_text(sweep_table(rows, chosen, rule, _command_line())))
    sweep_plot(rows, chosen, out / "sweep.png")
    print(f"chosen: {chosen} ({rule}); table in {out / 'sweep.md'}")
    return 0


def _variant_models(items: list[str] | None) -> dict[str, str]:
    models = {}
    for item in items or []:
        variant, sep, directory = item.partition("=")
        if not sep or not directory:
            raise ValueError(f"--models {item!r}: expected VARIANT=DIR, e.g. label=runs/label")
        models[variant] = directory
    return models


def _cmd_reproduce_table1(args: argparse.Namespace) -> int:
    from .pipeline import EditSettings
    from .table1 import Table1Config, reproduce_table1

    train = {"batch_size": args.batch_size, "block_out_channels": args.channels, "layers_per_block": args.layers_per_block}
    train["attention_levels"] = (False,) * len(args.channels)
    config = _config(Table1Config, args, models=_variant_models(args.models), train=train, settings=EditSettings.from_options(args))
    reproduce_table1(config, _command_line())
    print(f"table in {Path(args.out) / 'table1.md'}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_files

    return predict_files(args.images, model=args.model, device=args.device)


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import SCHEDULERS

    parser = argparse.ArgumentParser(
        prog="emodiff",
        description="Change the facial expression of a face with a conditional diffusion model (FER-2013).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train-encoder",
        help="train a semantic encoder (cnn, vae) or the evaluation judge on FER-2013",
        description="Train the CNN emotion encoder, the VAE encoder or the judge on the Training split, "
        "validating on PublicTest after every epoch. Writes OUT/config.json + "
        "OUT/diffusion_pytorch_model.safetensors (the model), OUT/metrics.csv (one row per epoch) and "
        "OUT/checkpoint.safetensors (every few minutes, for --resume).",
    )
    train.add_argument("kind", choices=("cnn", "vae", "judge"), help="which model to train")
    train.add_argument("--data", required=True, help="FER-2013: the Kaggle CSV (plain or .gz) or the image-folder release")
    train.add_argument("--out", required=True, help="model directory to write (refused if it holds a run, unless --resume)")
    train.add_argument("--epochs", type=int, default=None, help="passes over Training (default: cnn 30, judge 30, vae 20)")
    train.add_argument("--batch-size", type=int, default=128, help="images per optimizer step, over all processes (default: 128)")
    train.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (default: the kind's recipe)")
    train.add_argument("--seed", type=int, default=0, help="seed of data order, augmentation and initialisation (default: 0)")
    train.add_argument(
        "--init",
        default=None,
        help="start from the weights of this trained model directory of the same kind (fine-tuning with a fresh "
        "warm-up + cosine schedule) instead of a random initialisation",
    )
    _add_run_control(train)
    train.set_defaults(handler=_cmd_train_encoder)

    train_dm = commands.add_parser(
        "train",
        help="train the conditional diffusion model (label, cnn or vae variant)",
        description="Train the paper's conditional DDPM (1000 steps, linear betas 1e-4..0.02, MSE on the noise) "
        "on the Training split. The condition added to the timestep embedding is the label embedding (label) or "
        "concat(label embedding, Linear(semantic code)) (cnn, vae). Writes a model directory usable by "
        "'emodiff edit --model OUT' after every checkpoint: denoiser/ (EMA weights), scheduler/, encoder/, "
        "metrics.csv (loss curve), samples/*.png, training_config.json and checkpoint.safetensors (for --resume). "
        "Runs on several GPUs or machines unchanged with 'accelerate launch -m emodiff.cli train ...'.",
    )
    train_dm.add_argument("--cond", required=True, choices=("label", "cnn", "vae"), help="conditioning variant")
    train_dm.add_argument("--data", required=True, help="FER-2013: the Kaggle CSV (plain or .gz) or the image-folder release")
    train_dm.add_argument("--out", required=True, help="model directory to write (refused if it holds a run, unless --resume)")
    train_dm.add_argument("--encoder", default=None, help="semantic encoder directory for cnn/vae (default: the shipped one)")
    budget = train_dm.add_mutually_exclusive_group()
    budget.add_argument("--images", type=int, default=None, help="budget in training images seen (default: 600000)")
    budget.add_argument("--minutes", type=float, default=None, help="budget in minutes of training, summed over resumes")
    train_dm.add_argument("--batch-size", type=int, default=64, help="images per step over all processes (default: 64)")
    train_dm.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate after warm-up (default: 3e-4)")
    train_dm.add_argument("--min-snr-gamma", type=float, default=None, help="min-SNR loss weighting with this gamma (e.g. 5; default: off)")
    train_dm.add_argument("--channels", type=_int_list, default=(32, 64, 128), help="UNet widths per level (default: 32,64,128)")
    train_dm.add_argument("--layers-per-block", type=int, default=2, help="ResNet layers per UNet level (default: 2)")
    train_dm.add_argument("--attention", type=_int_list, default=None, help="1/0 per level: self-attention there (default: none; the mid block always has it)")
    train_dm.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the saved weights (default: 0.999)")
    train_dm.add_argument("--seed", type=int, default=0, help="seed of data order, noise and initialisation (default: 0)")
    _add_run_control(train_dm)
    train_dm.set_defaults(handler=_cmd_train)

    edit = commands.add_parser(
        "edit",
        help="change the expression of face images to chosen emotions",
        description="Edit each IMAGE to every emotion in --to. A face crop (up to 64x64) is edited whole and written as "
        "OUT/<stem>_<emotion>.png, 8-bit grayscale at its size. In a photo (larger, any format, colour or not, EXIF "
        "rotation applied) the faces are found and aligned, edited as 48x48 crops, and the change is blended into the "
        "photo's luminance: OUT/<stem>_<emotion>.<ext> at the photo's size, colours kept. Modes: paper = from pure noise with the target label and the input's semantic code "
        "(the paper's manipulation); sdedit = noise the input to strength*T and denoise with the target; "
        "invert = deterministic DDIM inversion of the input to strength*T under its source emotion, then decode "
        "under the target (keeps the person best). All targets of an input are sampled in one batch.",
    )
    edit.add_argument("images", nargs="+", help="face crops (up to 64x64), photos (any size; faces are found), or folders of them")
    edit.add_argument("--to", required=True, help=f"target emotion(s), comma-separated, or 'all': {', '.join(EMOTIONS)}")
    edit.add_argument("--out", required=True, help="output directory")
    edit.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    _add_edit_options(edit)
    edit.add_argument("--from", dest="source", default=None, help="the inputs' true emotion, for invert mode (default: predicted by the CNN encoder)")
    edit.add_argument("--face", default="largest", help="in photos: largest, all, or an index counted left to right from 0 (default: largest)")
    edit.add_argument("--crop", action="store_true", help="in photos: also write each 48x48 face crop and its edits")
    edit.add_argument("--no-detect", action="store_true", help="take every input as a face crop, whatever its size")
    edit.add_argument("--grid", action="store_true", help="also write OUT/<stem>_grid.png: the input and every target in a labelled row")
    edit.add_argument("--batch-size", type=int, default=16, help="input faces edited together (default: 16)")
    _add_device(edit)
    edit.set_defaults(handler=_lazy("editing:run_edit"))

    sample = commands.add_parser(
        "sample",
        help="generate random faces showing an emotion",
        description="Sample N random faces of one emotion from pure noise and write OUT/<emotion>_<i>.png.",
    )
    sample.add_argument("--emotion", required=True, help=f"one of {', '.join(EMOTIONS)}")
    sample.add_argument("-n", type=int, default=8, help="number of faces (default: 8)")
    sample.add_argument("--out", required=True, help="output directory")
    sample.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    sample.add_argument("--steps", type=int, default=50, help="sampler steps (default: 50)")
    sample.add_argument("--scheduler", default="ddim", choices=tuple(SCHEDULERS), help="sampler (default: ddim)")
    sample.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default: 3)")
    sample.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    _add_device(sample)
    sample.set_defaults(handler=_lazy("editing:run_sample"))

    test_encoder = commands.add_parser(
        "test-encoder",
        help="measure an encoder or judge on a FER-2013 split (accuracy, or PSNR for the VAE)",
        description="Print the accuracy (classifiers, mirror-averaged) or reconstruction PSNR (VAE) of a model "
        "directory, or of a shipped model named cnn, vae or judge, on one split.",
    )
    test_encoder.add_argument("model", help="model directory, or cnn / vae / judge for the shipped ones")
    test_encoder.add_argument("--data", required=True, help="FER-2013: the Kaggle CSV (plain or .gz) or the image-folder release")
    test_encoder.add_argument("--split", default="PublicTest", type=_split, help="Training, PublicTest or PrivateTest (default: PublicTest)")
    test_encoder.add_argument("--skip-bad", action="store_true", help="leave out malformed data rows (reported) instead of failing")
    test_encoder.add_argument("--tta-shift", type=int, default=None, help="classifiers: also average over the face moved this many pixels each way (0: none; default: the model's own setting)")
    test_encoder.add_argument("--tta-rotate", type=float, default=None, help="classifiers: also average over the face turned this many degrees each way (0: none; default: the model's own)")
    test_encoder.add_argument("--tta-zoom", type=float, default=None, help="classifiers: also average over the face zoomed by 1 ± this fraction (0: none; default: the model's own)")
    _add_device(test_encoder)
    test_encoder.set_defaults(handler=_cmd_test_encoder)

    export = commands.add_parser(
        "export",
        help="copy a trained model directory without its training state, optionally in fp16",
        description="Write the loadable part of a model directory (an encoder, or a diffusion model's denoiser/, "
        "encoder/ and scheduler/) and the run's record (metrics.csv, training_config.json) to OUT, "
        "dropping the checkpoint and samples.",
    )
    export.add_argument("model", help="trained model directory (from train-encoder or train)")
    export.add_argument("out", help="directory to write")
    export.add_argument("--fp16", action="store_true", help="store weights in half precision (half the size)")
    export.set_defaults(handler=_cmd_export)

    def add_evaluation_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", required=True, help="FER-2013: the Kaggle CSV (plain or .gz) or the image-folder release")
        parser.add_argument("--split", default="PublicTest", type=_split, help="split to take inputs from (default: PublicTest)")
        parser.add_argument("--per-class", type=int, default=20, help="inputs per source emotion, drawn with --seed (default: 20)")
        parser.add_argument("--judge", default="judge", help="judge model directory (default: the shipped judge)")
        parser.add_argument("--out", required=True, help="output directory")
        parser.add_argument("--skip-bad", action="store_true", help="leave out malformed data rows (reported) instead of failing")
        _add_device(parser)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure edits: judge F1 per emotion, identity kept, realism, change and speed",
        description="Take --per-class inputs of every source emotion from --split, edit each to all 7 emotions and "
        "measure: the judge's precision/recall/F1 per target (the paper's Table 1) and macro F1, beside the judge's "
        "F1 on the real inputs; dlib face-descriptor distance to the input (identity kept: < 0.6), SSIM and PSNR; "
        "Fréchet distance in judge features to real faces of the target emotion; mean pixel change; time per face. "
        "Writes OUT/report.md, OUT/metrics.json, OUT/grid.png and OUT/confusion.png.",
    )
    evaluate.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    add_evaluation_options(evaluate)
    _add_edit_options(evaluate)
    evaluate.set_defaults(handler=_cmd_evaluate)

    sweep = commands.add_parser(
        "sweep",
        help="evaluate a grid of edit settings and choose the best one",
        description="Run the evaluate measures over every combination of --modes, --strengths, --guidances, --steps and "
        "--keep-detail (paper mode ignores strength and keep-detail) for each --model, then write OUT/sweep.md (table), OUT/sweep.json and OUT/sweep.png "
        "(macro F1 against identity kept, one colour per model, mode and keep-detail switch). The chosen setting is the best macro F1 "
        "among those keeping >= 90%% of edits under the 0.6 identity distance, else the best F1 x identity kept.",
    )
    sweep.add_argument("--model", action="append", default=None, help="model directory; repeat to compare models (default: the shipped model)")
    sweep.add_argument("--modes", type=lambda t: tuple(t.split(",")), default=("invert",), help="comma-separated modes (default: invert)")
    sweep.add_argument("--strengths", type=_float_list, default=(0.4, 0.5, 0.6), help="comma-separated strengths (default: 0.4,0.5,0.6)")
    sweep.add_argument("--guidances", type=_float_list, default=(5.0, 7.0, 9.0), help="comma-separated guidance scales (default: 5,7,9)")
    sweep.add_argument("--steps", type=_int_list, default=(10,), help="comma-separated sampler step counts (default: 10)")
    sweep.add_argument("--keep-detail", type=_switch_list, default=(False, True), help="comma-separated on/off of --keep-detail (default: off,on; paper mode only off)")
    sweep.add_argument("--scheduler", default="ddim", choices=tuple(SCHEDULERS), help="sampler (default: ddim)")
    sweep.add_argument("--seed", type=int, default=0, help="seed of input choice and noise (default: 0)")
    add_evaluation_options(sweep)
    sweep.set_defaults(handler=_cmd_sweep)

    table1 = commands.add_parser(
        "reproduce-table1",
        help="train the label, cnn and vae variants at one budget and reproduce the paper's Table 1",
        description="Train the three variants of the paper with the same recipe and the same budget in training "
        "images seen (or take trained ones with --models), then evaluate each on --split twice: in the paper's protocol "
        "(from pure noise, target label + the input's semantic code, no guidance) and with the edit options below "
        "(default: emodiff's defaults). Writes OUT/table1.md (the paper's rows beside ours, with identity kept, "
        "realism and pixel change, and the runs' images, minutes and hardware), OUT/table1.json, OUT/runs/<variant>/ "
        "and OUT/evaluations/<protocol>-<variant>/. With --resume, a variant already trained to the budget is not "
        "trained again and an unfinished one continues from its checkpoint.",
    )
    table1.add_argument("--images", type=int, default=600_000, help="training budget per variant in images seen (default: 600000)")
    table1.add_argument("--models", nargs="+", metavar="VARIANT=DIR", help="use these trained model directories instead of training, e.g. label=runs/label")
    table1.add_argument("--resume", action="store_true", help="continue a reproduction in --out")
    table1.add_argument("--batch-size", type=int, default=64, help="training images per step (default: 64)")
    table1.add_argument("--channels", type=_int_list, default=(32, 64, 128), help="UNet widths per level (default: 32,64,128)")
    table1.add_argument("--layers-per-block", type=int, default=2, help="ResNet layers per UNet level (default: 2)")
    table1.add_argument("--paper-steps", type=int, default=50, help="DDIM steps of the paper-protocol rows (default: 50)")
    add_evaluation_options(table1)
    _add_edit_options(table1)
    table1.set_defaults(handler=_cmd_reproduce_table1)

    demo = commands.add_parser(
        "demo",
        help="edit the bundled sample faces and photo to all 7 emotions, into one grid PNG",
        description="Edit the bundled FER-2013 PublicTest faces and the bundled photo (NASA portrait of Eileen "
        "Collins, public domain, from scikit-image's data) to every emotion with the shipped model and write one "
        "labelled grid.",
    )
    demo.add_argument("--out", default="emodiff-demo.png", help="grid PNG to write (default: emodiff-demo.png)")
    demo.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    _add_edit_options(demo)
    _add_device(demo)
    demo.set_defaults(handler=_lazy("demo:run_demo"))

    serve = commands.add_parser(
        "serve",
        help="run the web app (gradio): upload a photo, choose emotions, download the edits",
        description="Serve a gradio web app on --host:--port: upload a photo or face crop (or pick a bundled sample), "
        "choose emotions and a strength, see the edit and the strip of all 7 emotions, and download. Uploads over "
        "20 MB or that are not images are refused with a message. Needs 'pip install gradio'.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    serve.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    _add_device(serve)
    serve.set_defaults(handler=_lazy("app:serve"))

    predict = commands.add_parser(
        "predict",
        help="predict the emotion of face images with the CNN encoder",
        description="Print the emotion the CNN encoder sees in each face (48x48 grayscale crops or any image, "
        "which is converted to grayscale and resized). With no IMAGE, runs on the bundled sample faces.",
    )
    predict.add_argument("images", nargs="*", help="image files (default: the bundled sample faces)")
    predict.add_argument("--model", default=None, help="classifier model directory (default: the shipped CNN encoder)")
    _add_device(predict)
    predict.set_defaults(handler=_cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FERDataError, FileNotFoundError, FileExistsError, ValueError, ImportError) as error:
        print(f"emodiff {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (checkpoint saved: continue with --resume)" if args.command.startswith("train") else ""
        print(f"emodiff {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
