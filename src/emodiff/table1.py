"""The paper's Table 1 reproduced: its three variants trained at one budget and judged side by side.

Every variant gets the same recipe and the same budget in training images seen, then each is
evaluated twice on the same inputs: in the paper's own protocol (from pure noise, target label +
the input's semantic code, no guidance) and with emodiff's default edit settings. The table puts
the paper's F1 rows beside ours, with identity, realism and change that the paper never measured.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .denoiser import CONDITIONS
from .evaluation import SECOND_JUDGE, load_evaluation_inputs, write_report
from .files import atomic_write
from .labels import EMOTIONS
from .pipeline import EDIT_DEFAULTS
from .runs import CHECKPOINT, METRICS, TRAINING_CONFIG, read_rows
from .settings import EditSettings
from .training import DiffusionTrainConfig, train_diffusion

PAPER_TABLE1 = {  # per-emotion F1, angry..neutral, as printed in the paper
    "label": (0.51, 0.45, 0.45, 0.88, 0.46, 0.94, 0.62),
    "cnn": (0.18, 0.05, 0.14, 0.20, 0.16, 0.19, 0.17),
    "vae": (0.33, 0.15, 0.26, 0.56, 0.32, 0.42, 0.30),
}

GAN_ROW, GAN_PROTOCOL = "StarGAN-style, trained here", "one forward pass"
ROW_FILE = "table1_row.json"  # in each evaluation folder: the row and what it was measured with (kept on --resume)


@dataclass
class Table1Config:
    data: str
    out: str
    images: int = 600_000  # training budget per variant, in images seen
    models: dict[str, str] = field(default_factory=dict)  # variant -> trained model dir, used instead of training
    gan: str | None = None  # a trained GAN model dir (train-gan): the StarGAN-style row on the same faces
    train: dict = field(default_factory=dict)  # DiffusionTrainConfig fields shared by the three runs
    settings: EditSettings = field(default_factory=EditSettings)  # the "emodiff defaults" rows
    paper_steps: int = 50  # DDIM steps of the paper-protocol rows (the paper's 1000 DDPM steps take hours on CPU)
    per_class: int = 20
    split: str = "PublicTest"
    faces: str = "all"  # all of the split, or its tuning or reporting half (evaluation.split_part)
    judge: str = "judge"
    second_judge: str | None = SECOND_JUDGE  # reports beside the judge; None: the judge alone
    look: str = "as-is"  # the inputs as they are, or changed (evaluation.LOOKS)
    scheduler: str = "ddim"
    seed: int = 0
    device: str = "auto"
    skip_bad: bool = False
    resume: bool = False


def images_trained(run: Path) -> int:
    """Training images a run has seen at its last checkpoint (0 if it has none)."""
    if not (run / CHECKPOINT).is_file() or not (run / METRICS).is_file():
        return 0
    rows = read_rows(run / METRICS)
    return int(rows[-1]["images_seen"]) if rows else 0


def model_fingerprint(model: Path) -> str:
    """A digest of what an editor loads from a model directory (its subfolders and edit defaults), not
    of the training run around it (checkpoint, metrics): a retrained or retuned model differs."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model.rglob("*") if p.is_file() and (p.parent != model or p.name == EDIT_DEFAULTS)):
        digest.update(path.relative_to(model).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_record(model: Path) -> dict:
    """Images seen, minutes and hardware of the run that made ``model`` (what its files say)."""
    record = {"images_seen": None, "minutes": None, "hardware": None}
    if (model / METRICS).is_file():
        rows = read_rows(model / METRICS)
        if rows:
            record.update(images_seen=int(rows[-1]["images_seen"]), minutes=float(rows[-1]["minutes"]))
    if (model / TRAINING_CONFIG).is_file():
        record["hardware"] = json.loads((model / TRAINING_CONFIG).read_text()).get("hardware")
    return record


def write_training_curves(models: dict[str, Path], path: Path) -> None:
    """Training loss against images seen, one curve per variant (from each run's metrics.csv)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    for variant, model in models.items():
        if not (model / METRICS).is_file():
            continue
        rows = read_rows(model / METRICS)
        images = np.array([float(r["images_seen"]) for r in rows])
        loss = np.array([float(r["loss"]) for r in rows])
        axes.plot(images, loss, label=variant, linewidth=1)
    axes.set_xlabel("training images seen")
    axes.set_ylabel("training loss (MSE on the noise, window mean)")
    axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=120))
    plt.close(figure)


def paper_protocol(steps: int) -> EditSettings:
    return EditSettings(mode="paper", strength=1.0, steps=steps, guidance=1.0)


def describe(settings: EditSettings) -> str:
    guidance = "the model's guidance per emotion" if settings.guidance is None else f"guidance {settings.guidance:g}"
    if settings.classifier_guidance is None:
        guidance += ", the model's classifier guidance per emotion"
    if settings.mode == "paper":
        return f"from pure noise, {settings.steps} steps, {guidance}"
    detail = ", input detail kept" if settings.keep_detail else ""
    detail += f", change localised ({settings.localise:g} grey levels)" if settings.localise else ""
    detail += f", classifier guidance {settings.classifier_guidance:g}" if settings.classifier_guidance else ""
    mouth = f" (the mouth from {settings.mouth_strength:g}·T)" if settings.mouth_strength else ""
    return f"{settings.mode} to {settings.strength:g}·T{mouth}, {settings.steps} steps, {guidance}{detail}"


def _check(config: Table1Config) -> None:
    out = Path(config.out)
    if out.is_dir() and any(out.iterdir()) and not config.resume:
        raise FileExistsError(f"{out} holds an earlier reproduction: add --resume to continue it, or choose another --out")
    if config.images <= 0:
        raise ValueError(f"--images must be positive, got {config.images}")
    for variant, directory in config.models.items():
        if variant not in CONDITIONS:
            raise ValueError(f"--models {variant}={directory}: unknown variant, expected one of {', '.join(CONDITIONS)}")
        if not (Path(directory) / "denoiser" / "config.json").is_file():
            raise FileNotFoundError(f"--models {variant}={directory}: not a model directory (no denoiser/config.json)")
    if config.gan and not (Path(config.gan) / "generator" / "config.json").is_file():
        raise FileNotFoundError(f"--gan {config.gan}: not a GAN model directory (no generator/config.json; train one with 'emodiff train-gan')")


def train_variants(config: Table1Config) -> dict[str, Path]:
    """The three model directories: given ones as they are, the others trained (or resumed) to the budget."""
    models = {}
    for variant in CONDITIONS:
        if variant in config.models:
            models[variant] = Path(config.models[variant])
            continue
        run = Path(config.out) / "runs" / variant
        seen = images_trained(run)
        batch = config.train.get("batch_size", DiffusionTrainConfig.batch_size)
        if seen > config.images - batch:  # the budget is spent in whole batches
            print(f"{variant}: already trained ({seen} images seen), not trained again", flush=True)
        else:
            train_diffusion(
                DiffusionTrainConfig(
                    cond=variant, data=config.data, out=str(run), images=config.images, seed=config.seed,
                    device=config.device, skip_bad=config.skip_bad, resume=(run / CHECKPOINT).is_file(), **config.train,
                )
            )  # fmt: skip
        models[variant] = run
    return models


def table1_markdown(rows: list[dict], real: dict, runs: dict[str, dict], protocols: dict[str, EditSettings], command: str | None) -> str:
    lines = ["# Table 1 reproduced: per-emotion F1 of the judge on edits, and what the paper did not measure", ""]
    if command:
        lines += ["```", command, "```", ""]
    header = ["row", *EMOTIONS, "macro F1", "macro F1, second judge", "identity kept (<0.6)", "median identity", "Fréchet (judge)", "pixel change", "s/face"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, f1 in PAPER_TABLE1.items():
        cells = [f"paper: {variant}", *(f"{v:.2f}" for v in f1), f"{np.mean(f1):.3f}", "–", "–", "–", "–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    for row in rows:
        m = row["metrics"]
        fd = m["realism"]["mean"]
        cells = [
            f"ours, {row['protocol']}: {row['variant']}",
            *(f"{m['emotion']['f1'][name]:.2f}" for name in EMOTIONS),
            f"**{m['emotion']['macro_f1']:.3f}**",
            f"{m['second_judge']['emotion']['macro_f1']:.3f}" if "second_judge" in m else "–",
            f"{m['identity']['kept_fraction']:.0%}",
            f"{m['identity']['median_distance']:.3f}",
            "–" if fd is None else f"{fd:.2f}",
            f"{m['change']['mean_abs_pixel']:.1f}",
            f"{m['seconds_per_input']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    second_real = rows[0]["metrics"].get("second_judge", {}).get("real_inputs") if rows else None
    second_text = f"{second_real['macro_f1']:.3f}" if second_real else "–"
    cells = ["judge on the real inputs", *(f"{real['f1'][name]:.2f}" for name in EMOTIONS), f"{real['macro_f1']:.3f}", second_text, "100%", "0", "–", "0", "–"]
    lines.append("| " + " | ".join(cells) + " |")
    count = rows[0]["metrics"]["inputs"] if rows else 0
    lines += [
        "",
        f"{count} inputs ({count // len(EMOTIONS)} per source emotion), each edited to all 7 emotions. "
        + "; ".join(f"**{name}**: {describe(settings)}" for name, settings in protocols.items())
        + ("; **one forward pass**: the GAN's generator, target emotion in, no settings" if any(r["protocol"] == GAN_PROTOCOL for r in rows) else "")
        + ". The paper's rows come from its own classifier; ours from emodiff's judge, whose F1 on the real "
        "inputs (last row) shows how strict it is. Identity: dlib face-descriptor distance to the input (same "
        "person below 0.6). Fréchet distance in judge features to real faces of the target emotion (lower is "
        "more realistic). s/face: seconds to edit one input to all 7 emotions, on the hardware of this run. Per-row reports, grids and confusion matrices: `evaluations/<protocol>-<variant>/`; training loss against images seen: `training_curves.png`.",
        "",
        "## Runs",
        "",
        "| variant | images seen | minutes | hardware |",
        "|---|---|---|---|",
    ]
    for variant, record in runs.items():
        minutes = "–" if record["minutes"] is None else f"{record['minutes']:.0f}"
        lines.append(f"| {variant} | {record['images_seen'] or '–'} | {minutes} | {record['hardware'] or '–'} |")
    return "\n".join(lines) + "\n"


def reproduce_table1(config: Table1Config, command: str | None = None) -> dict:
    """Train (or resume, or take) the three variants, evaluate each both ways (and a given GAN once,
    on the same faces), write table1.md/.json."""
    from .gan import GanEditor
    from .pipeline import EmotionEditPipeline

    _check(config)
    out = Path(config.out)
    setup = load_evaluation_inputs(
        config.data, config.split, config.per_class, config.judge, config.seed, config.skip_bad, config.faces, config.second_judge, config.look
    )
    models = train_variants(config)
    protocols = {"paper protocol": paper_protocol(config.paper_steps), "emodiff defaults": config.settings}
    setup_digest = setup.fingerprint()
    rows = []

    def measure(folder: Path, title: str, row: dict, key: dict, evaluate) -> dict:
        """``row`` with the metrics of ``evaluate()``, or the row ``folder`` kept from a run of the same
        key (on --resume: an evaluation takes minutes to hours, and a stopped reproduction should not
        run the finished ones again)."""
        key = json.dumps({**key, "setup": setup_digest, "seed": config.seed}, sort_keys=True)
        kept = folder / ROW_FILE
        if config.resume and kept.is_file() and json.loads(kept.read_text()).get("key") == key:
            print(f"{title}: measured before with the same model, settings and faces, kept", flush=True)
            return json.loads(kept.read_text())["row"]
        print(f"evaluating {title}", flush=True)
        evaluation = evaluate()
        write_report(evaluation, folder, title)
        row = {**row, "metrics": evaluation.metrics}
        atomic_write(kept, lambda temp: temp.write_text(json.dumps({"key": key, "row": row})))
        return row

    for protocol, settings in protocols.items():
        for variant, model in models.items():
            pipeline = EmotionEditPipeline.from_pretrained(model, scheduler=config.scheduler, device=config.device)
            editor = lambda faces, targets: pipeline.edit_faces(faces, targets, settings, seed=config.seed)  # noqa: E731
            key = {"model": model_fingerprint(model), "settings": asdict(settings), "scheduler": config.scheduler,
                   "device": pipeline.device.type, "bf16": pipeline.bf16}  # fmt: skip
            folder = out / "evaluations" / f"{protocol.replace(' ', '-')}-{variant}"
            row = {"variant": variant, "protocol": protocol, "settings": asdict(settings)}
            rows.append(measure(folder, f"{variant}, {protocol} ({describe(settings)})", row, key, lambda: setup.evaluate(editor, pipeline.device)))
    if config.gan:
        gan = GanEditor.from_pretrained(config.gan, device=config.device)
        editor = lambda faces, targets: gan.edit_faces(faces, targets)  # noqa: E731
        row = {"variant": GAN_ROW, "protocol": GAN_PROTOCOL, "settings": None}
        key = {"model": model_fingerprint(Path(config.gan)), "device": gan.device.type, "bf16": gan.bf16}
        rows.append(measure(out / "evaluations" / "gan", f"{GAN_ROW}, {GAN_PROTOCOL}", row, key, lambda: setup.evaluate(editor, gan.device)))
        models[GAN_ROW] = Path(config.gan)
    real = rows[0]["metrics"]["real_inputs"]
    runs = {variant: run_record(model) for variant, model in models.items()}
    write_training_curves({v: m for v, m in models.items() if v != GAN_ROW}, out / "training_curves.png")
    atomic_write(out / "table1.md", lambda t: t.write_text(table1_markdown(rows, real, runs, protocols, command)))
    summary = {"paper": PAPER_TABLE1, "rows": rows, "real_inputs": real, "runs": runs}
    atomic_write(out / "table1.json", lambda t: t.write_text(json.dumps(summary, indent=2)))
    return summary
