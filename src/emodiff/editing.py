"""Editing image files: face crops or whole photos in, edited images out.

Every output name is planned, and checked against the inputs and the files already in ``--out``,
before the model loads: a run never writes over an input or over another output of the same
run, and replaces an existing file only with ``overwrite``. Inputs that cannot be edited are
named with the reason and the rest of the batch is still written.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import photos
from .data import IMAGE_SUFFIXES
from .files import image_format, save_image
from .grid import labelled_grid
from .labels import EMOTIONS
from .settings import BLENDS, EditSettings


@dataclass
class EditJob:
    inputs: list[str]  # files, or folders of images
    targets: list[int]
    out: str
    settings: EditSettings = field(default_factory=EditSettings)
    source: int | None = None  # the inputs' true emotion (default: predicted)
    face: str = "largest"
    blend: str = BLENDS[0]  # how photo edits go back into the photo (photos.BLENDS)
    detect: bool = True
    crop: bool = False  # also write each 48x48 face crop and its edits
    grid: bool = False
    batch_size: int = 16
    overwrite: bool = False
    seed: int = 0


@dataclass
class Planned:
    path: Path
    stem: str
    suffix: str  # of the edited images
    is_crop: bool


def check_out_dir(out: Path) -> None:
    """``out`` is, or can be made, a writable folder: said before any model loads or file is read."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: is a file, expected a folder for the edited images")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise PermissionError(f"--out {out}: cannot write there ({error.strerror or error})") from None


def expand_inputs(arguments: list[str]) -> tuple[list[Path], list[str]]:
    """Files as given; folders as the image files directly inside them, sorted. Also the problems:
    a folder without images is reported as an input that could not be edited."""
    paths, problems = [], []
    for argument in map(Path, arguments):
        if argument.is_dir():
            inside = sorted(p for p in argument.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                problems.append(f"{argument}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths += inside
        else:
            paths.append(argument)
    return paths, problems


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, made unique (face, face-2, ...) so two inputs never write the same output; a made-up
    stem never takes the name of another input's own stem."""
    taken, stems = {p.stem for p in paths}, []
    used: set[str] = set()
    for path in paths:
        stem, n = path.stem, 1
        while stem in used or (stem != path.stem and stem in taken):
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem)
        stems.append(stem)
    return stems


def output_names(plan: Planned, names: list[str], job: EditJob, faces: int | None = None) -> list[str]:
    """The files one input writes: an edit per target, and with --crop / --grid their extras.
    ``faces``: how many faces were edited in a photo (unknown before detection: then index 0 stands in)."""
    files = [f"{plan.stem}_{name}{plan.suffix}" for name in names]
    if job.crop and not plan.is_crop:
        for index in range(faces or 1):
            files += [f"{plan.stem}_face{index}.png"] + [f"{plan.stem}_face{index}_{name}.png" for name in names]
    if job.grid:
        files.append(f"{plan.stem}_grid.png")
    return files


def plan_outputs(paths: list[Path], job: EditJob, names: list[str]) -> tuple[list[Planned], list[str]]:
    """Each readable input's output stem and suffix; unreadable ones come back as problems."""
    plans, problems = [], []
    for path, stem in zip(paths, unique_stems(paths)):
        try:
            size = photos.probe(path)
        except (OSError, ValueError) as error:
            problems.append(_problem(path, error))
            continue
        is_crop = not job.detect or photos.is_face_crop(size)
        plans.append(Planned(path, stem, photos.output_suffix(path, is_photo=not is_crop), is_crop))
    planned = [Path(job.out) / name for plan in plans for name in output_names(plan, names, job)]
    inputs = {p.resolve() for p in paths}
    clashes = [path for path in planned if path.resolve() in inputs]
    if clashes:
        raise FileExistsError(f"{clashes[0]} is an input of this run: choose another --out so no input is written over")
    existing = [path for path in planned if path.exists()]
    if existing and not job.overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]}{more} already exist: pass --overwrite to replace them, or choose another --out")
    return plans, problems


def _problem(path: Path, error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(error, OSError):
        return f"{path}: cannot read image ({error})"
    return f"{path}: {error}"


def edit_files(job: EditJob, load_pipeline) -> int:
    """``emodiff edit``: plan and check every output, then load the model (``load_pipeline()``) and
    edit in batches. Returns the exit code: 1 if any input could not be edited."""
    if job.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {job.batch_size}")
    prepare = photos.Preparer(job.face, detect=job.detect, blend=job.blend)
    out, names = Path(job.out), [EMOTIONS[t] for t in job.targets]
    check_out_dir(out)
    paths, problems = expand_inputs(job.inputs)
    plans, unreadable = plan_outputs(paths, job, names)
    problems += unreadable
    for problem in problems:
        print(problem, file=sys.stderr)
    pipeline = load_pipeline() if plans else None
    failed, written = len(problems), 0
    with tqdm(total=len(plans), desc="editing", unit="image", disable=len(plans) < 2) as bar:
        for start in range(0, len(plans), job.batch_size):
            ready = []
            for plan in plans[start : start + job.batch_size]:
                try:
                    ready.append((plan, prepare(photos.load_photo(plan.path))))
                except (OSError, ValueError) as error:  # unreadable after all, no face, bad --face index
                    bar.write(_problem(plan.path, error), file=sys.stderr)
                    failed += 1
            if ready:
                sources = None if job.source is None else [job.source] * sum(len(p.crops) for _, p in ready)
                outputs, edits, bounds = pipeline.edit_prepared([p for _, p in ready], job.targets, job.settings, sources, job.seed)
                for (plan, prepared), results, first, last in zip(ready, outputs, bounds[:-1], bounds[1:]):
                    written += write_outputs(out, plan, names, prepared, results, edits[first:last], job)
            bar.update(len(plans[start : start + job.batch_size]))
    print(f"wrote {written} edited image(s) of {len(plans) + len(problems) - failed} input(s) to {out}")
    if failed:
        print(f"{failed} input(s) could not be edited", file=sys.stderr)
    return 1 if failed or not (plans or problems) else 0


def write_outputs(out: Path, plan: Planned, names, prepared: photos.Prepared, results, edits, job: EditJob) -> int:
    files = iter(output_names(plan, names, job, faces=len(prepared.crops)))
    for result in results:
        path = out / next(files)
        save_image(result, path, photos.save_options(result, image_format(path)))
    if job.crop and prepared.faces is not None:
        for crop, row in zip(prepared.crops, edits):
            save_image(Image.fromarray(crop), out / next(files))
            for edit in row:
                save_image(Image.fromarray(edit), out / next(files))
    if job.grid:
        cells = np.concatenate([prepared.crops[:, None], edits], axis=1)
        labels = [f"face {i}" for i in range(len(cells))] if prepared.faces is not None else []
        save_image(labelled_grid(cells, labels, ["input", *names]), out / next(files))
    return len(results)


def write_samples(faces: list[Image.Image], emotion: int, out: Path) -> None:
    for i, face in enumerate(faces):
        save_image(face, out / f"{EMOTIONS[emotion]}_{i:03d}.png")

