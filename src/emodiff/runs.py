"""Run-keeping for the training loops: the folder, checkpoints, the metrics log, timing, signals
and the order of batches, so each loop in ``training.py`` reads top to bottom.

Everything a run needs to continue lives in ``OUT/checkpoint.safetensors`` (weights, optimizer
moments, schedule, step) plus ``OUT/metrics.csv``. Randomness is derived from (seed, step), never
carried, so a resumed run draws exactly the batches and noise the uninterrupted run would have.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .devices import make_accelerator
from .files import atomic_write

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.csv"
TRAINING_CONFIG = "training_config.json"


def copy_training_records(source: Path, out: Path) -> None:
    """How a model was trained travels with it (its metrics and training config), never its checkpoint.
    A run that started from another model (``--init``) gets that model's metrics ahead of its own, so
    the exported curve covers every image the weights have seen, even once the init is replaced."""
    source, out = Path(source), Path(out)
    if (source / TRAINING_CONFIG).is_file():
        shutil.copyfile(source / TRAINING_CONFIG, out / TRAINING_CONFIG)
    if (source / METRICS).is_file():
        rows = training_history(source)
        if rows == read_rows(source / METRICS):
            shutil.copyfile(source / METRICS, out / METRICS)
        else:
            atomic_write(out / METRICS, lambda temp: _write_rows(temp, rows))


COUNTERS = ("step", "images_seen", "minutes")  # what a continued run counts from where its init stopped


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics CSV (``metrics.csv``), as strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def training_history(run: Path) -> list[dict]:
    """``run``'s metrics rows, preceded by those of the model it was initialised from (if that is still
    there with the same columns), its counters continuing from the init's last row; rows that already
    start with the init's (an exported model exported again) are returned as they are."""
    rows = read_rows(Path(run) / METRICS)
    config = json.loads((Path(run) / TRAINING_CONFIG).read_text()) if (Path(run) / TRAINING_CONFIG).is_file() else {}
    init = Path(config["init"]) if config.get("init") else None
    if init is None or not (init / METRICS).is_file() or init.resolve() == Path(run).resolve():
        return rows
    earlier = read_rows(init / METRICS)
    if not earlier or not rows or list(earlier[0]) != list(rows[0]) or rows[: len(earlier)] == earlier:
        return rows
    last = earlier[-1]
    shifted = [{**row, **{key: _counted(float(last[key]) + float(row[key])) for key in COUNTERS if key in row}} for row in rows]
    return earlier + shifted


def _counted(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:g}"


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of one training step on one process: resumable without storing RNG state."""
    return (seed * 1_000_003 + step * 9_176 + rank * 7_919) % (2**63)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 10_007 + epoch))


def save_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer, scheduler, state: dict) -> None:
    """Weights, optimizer tensors and JSON state in one safetensors file: nothing to unpickle."""
    tensors = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }
    optimizer_state = optimizer.state_dict()
    for param_id, slots in optimizer_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optimizer.{param_id}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {
        "state": json.dumps(state),
        "param_groups": json.dumps(optimizer_state["param_groups"]),
        "scheduler": json.dumps(scheduler.state_dict()),
    }
    atomic_write(path, lambda temp: save_file(tensors, str(temp), metadata=metadata))


def load_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer, scheduler) -> dict:
    """Restore what ``save_checkpoint`` wrote into live objects; returns the JSON state."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
        tensors = load_file(str(path))
        for name, module in modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        slots: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, param_id, slot = key.split(".", 2)
                slots.setdefault(int(param_id), {})[slot] = value
        optimizer.load_state_dict({"state": slots, "param_groups": json.loads(metadata["param_groups"])})
        scheduler.load_state_dict(json.loads(metadata["scheduler"]))
        return json.loads(metadata["state"])
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"{path}: cannot resume from this checkpoint ({str(error).splitlines()[0]}); it is corrupt or from "
            "another model: delete it to start the run over, or use another --out"
        ) from None


# What one invocation may change in a resumed run; everything else is the run's recipe.
INVOCATION_FIELDS = frozenset({"data", "out", "device", "checkpoint_minutes", "sample_minutes", "log_every", "skip_bad", "resume", "stop_at_step"})
BUDGET_FIELDS = frozenset({"images", "minutes", "epochs"})  # may be raised to extend a run


def with_recorded_recipe(config):
    """``config`` as the run in ``config.out`` was started, when resuming it.

    A resume that silently took today's defaults would change the run halfway (a cosine fine-tune
    resumed as a constant-rate run from scratch weights, say). So options left at their defaults
    take the recorded values, a budget may be given anew, and any other option that contradicts the
    record is refused.
    """
    from safetensors import safe_open

    path = Path(config.out) / CHECKPOINT
    if not (config.resume and path.is_file()):
        return config
    try:
        with safe_open(str(path), framework="pt") as handle:
            recorded = json.loads(handle.metadata()["state"]).get("config")
    except (SafetensorError, OSError, KeyError, TypeError, ValueError):
        return config  # restoring reports a broken checkpoint with its own message
    if not recorded:
        return config

    def same(a, b) -> bool:
        return (list(a) if isinstance(a, (tuple, list)) else a) == (list(b) if isinstance(b, (tuple, list)) else b)

    taken, conflicts = {}, []
    for field in dataclasses.fields(config):
        name, asked = field.name, getattr(config, field.name)
        if name in INVOCATION_FIELDS or name not in recorded or same(asked, recorded[name]):
            continue
        if name in BUDGET_FIELDS and asked is not None:
            continue
        if field.default is dataclasses.MISSING or not same(asked, field.default):
            conflicts.append(f"{name}={recorded[name]!r} (this call: {asked!r})")
            continue
        value = recorded[name]
        taken[name] = tuple(value) if isinstance(field.default, tuple) else value
    if conflicts:
        raise ValueError(
            f"{config.out} was started with {', '.join(conflicts)}: a resumed run keeps its recipe; "
            "leave those options out, or start a new run with another --out"
        )
    if taken:
        print(f"resuming {config.out} with its recorded " + ", ".join(f"{k}={v!r}" for k, v in taken.items()), file=sys.stderr)
    return dataclasses.replace(config, **taken)


class MetricsLog:
    """Rows of metrics, rewritten atomically to CSV (and sent to TensorBoard when installed)."""

    def __init__(self, path: Path, accelerator):
        self.path, self.accelerator = path, accelerator
        self.rows: list[dict] = []
        if path.exists():
            self.rows = read_rows(path)

    def drop_after(self, step: int) -> None:
        """Forget rows a killed run logged after its last checkpoint; the resumed run redoes them."""
        self.rows = [row for row in self.rows if int(float(row["step"])) <= step]

    def log(self, row: dict) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.accelerator.is_main_process:
            fields = list(dict.fromkeys(key for r in self.rows for key in r))

            def write(temp: Path) -> None:
                with open(temp, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fields)
                    writer.writeheader()
                    writer.writerows(self.rows)

            atomic_write(self.path, write)
        self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=int(row["step"]))


class Run:
    """One training run's folder and clock. Refuses to silently overwrite an earlier run."""

    def __init__(self, out: str | Path, *, resume: bool, device: str, seed: int, checkpoint_minutes: float):
        self.out = Path(out)
        has_checkpoint = (self.out / CHECKPOINT).exists()
        if has_checkpoint and not resume:
            raise FileExistsError(f"{self.out} already holds a training run: pass --resume to continue it, or another --out")
        if self.out.exists() and not self.out.is_dir():
            raise FileExistsError(f"--out {self.out}: is a file, expected a folder for the run")
        self.out.mkdir(parents=True, exist_ok=True)
        self._remove_partial_files()
        self.resuming = has_checkpoint and resume
        self.seed, self.checkpoint_minutes = seed, checkpoint_minutes
        self.accelerator = make_accelerator(device, self.out)
        self.metrics = MetricsLog(self.out / METRICS, self.accelerator)
        self.minutes_before = 0.0
        self._started = self._last_checkpoint = time.monotonic()

    def _remove_partial_files(self) -> None:
        """Temp files of atomic writes a killed run (kill -9) left behind: never a finished file."""
        for partial in self.out.glob(".*.tmp"):
            partial.unlink(missing_ok=True)
        for partial in self.out.glob("**/.save-*"):
            shutil.rmtree(partial, ignore_errors=True)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def minutes(self) -> float:
        """Minutes of training, summed over resumes."""
        return self.minutes_before + (time.monotonic() - self._started) / 60

    def restore(self, modules: dict[str, nn.Module], optimizer, scheduler) -> dict:
        state = load_checkpoint(self.out / CHECKPOINT, modules, optimizer, scheduler)
        self.minutes_before = state.get("minutes", 0.0)
        self.metrics.drop_after(state["step"])
        return state

    def save(self, modules: dict[str, nn.Module], optimizer, scheduler, state: dict) -> None:
        if self.is_main:
            save_checkpoint(self.out / CHECKPOINT, modules, optimizer, scheduler, {**state, "minutes": self.minutes()})
        self._last_checkpoint = time.monotonic()

    def checkpoint_due(self) -> bool:
        return time.monotonic() - self._last_checkpoint > self.checkpoint_minutes * 60

    def write_record(self, record: dict) -> None:
        if self.is_main:
            atomic_write(self.out / TRAINING_CONFIG, lambda t: t.write_text(json.dumps(record, indent=2)))

    def batch(self, step: int, n: int, batch_size: int) -> torch.Tensor:
        """This process's share of step ``step``'s batch: a fresh permutation of the ``n`` faces per epoch."""
        epoch, offset = divmod(step, n // batch_size)
        index = epoch_order(n, self.seed, epoch)[offset * batch_size : (offset + 1) * batch_size]
        return index[self.accelerator.process_index :: self.accelerator.num_processes]

    def balanced_batch(self, step: int, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
        """This process's share of step ``step``'s batch, each face drawn by first drawing its label
        uniformly among those present, then a face of that label: every class is seen as often."""
        g = torch.Generator().manual_seed(step_seed(self.seed, step) + 1)  # the same on every process
        order = torch.argsort(labels, stable=True)
        classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        chosen = torch.randint(len(classes), (batch_size,), generator=g)
        within = (torch.rand(batch_size, generator=g) * counts[chosen]).long().clamp(max=counts[chosen] - 1)
        index = order[starts[chosen] + within]
        return index[self.accelerator.process_index :: self.accelerator.num_processes]

    def generator(self, step: int) -> torch.Generator:
        """The generator of step ``step`` on this process; torch's global RNG (dropout) is seeded alike."""
        seed = step_seed(self.seed, step, self.accelerator.process_index)
        torch.manual_seed(seed)
        return torch.Generator().manual_seed(seed)

    def announce(self, what: str, faces: int) -> None:
        """One line saying what runs where, so a log shows the hardware and precision of every run."""
        a = self.accelerator
        if a.is_main_process:
            processes = f"{a.num_processes} process{'es' if a.num_processes > 1 else ''}"
            print(f"{what}: {faces} training faces, {processes} ({a.distributed_type.value}) on {a.device}, mixed precision {a.mixed_precision}", flush=True)

    def start_trackers(self, name: str, config: dict) -> None:
        """TensorBoard logs under OUT/<name> when tensorboard is installed; the CSV is always written."""
        if self.accelerator.log_with:
            flat = {k: (json.dumps(v) if isinstance(v, (list, tuple, dict)) or v is None else v) for k, v in config.items()}
            self.accelerator.init_trackers(name, config=flat)

    @contextmanager
    def checkpoint_on_interrupt(self, save):
        """Ctrl-C or SIGTERM (kill, cluster pre-emption) calls ``save()`` before the run exits."""

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, interrupt) if main_thread else None
        try:
            yield
        except KeyboardInterrupt:
            save()
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
