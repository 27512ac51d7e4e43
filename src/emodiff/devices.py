"""Where models run: the one place that picks a device, bf16 autocast and CPU batch pieces."""

from __future__ import annotations

import contextlib
import os
import platform

import torch

DEVICES = ("auto", "cpu", "cuda")
# The denoiser and judge run over a CPU in pieces of at most this many images: measured here, a
# 48x48 batch of 280 runs at 90 images/s and pieces of 64 at 205 (caches); a GPU takes batches whole.
CPU_CHUNK = 64


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when torch sees one, else the CPU; asking for an absent CUDA is an error."""
    if isinstance(name, torch.device):
        return name
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}: expected one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device (use --device cpu or auto)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off on AMX/AVX512-BF16 CPUs and on CUDA GPUs that support it.

    torch has no public test for a CPU's bf16 units (``get_cpu_capability`` says only "AVX512" on an
    AMX machine), so the private probes are used here, and only here, with a safe default.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
        return any(probe() for probe in probes if probe is not None)
    return False


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on ``device`` when asked, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def batch_piece(device: torch.device, size: int) -> int:
    """How many images to run at once: CPU_CHUNK on a CPU, the whole batch elsewhere."""
    return CPU_CHUNK if device.type == "cpu" else size


def make_accelerator(device: str = "auto", out=None):
    """An Accelerator on the asked device, bf16 autocast where the hardware has it (AMX, Ampere+)."""
    import importlib.util

    from accelerate import Accelerator

    target = resolve_device(device)
    tensorboard = out is not None and importlib.util.find_spec("tensorboard") is not None
    return Accelerator(
        cpu=target.type == "cpu",
        mixed_precision="bf16" if bf16_supported(target) else "no",
        project_dir=str(out) if out else None,
        log_with="tensorboard" if tensorboard else None,
    )


def describe_hardware(accelerator) -> str:
    """Where a run ran, for the records kept next to its weights."""
    if accelerator.device.type == "cuda":
        where = torch.cuda.get_device_name(accelerator.device)
    else:
        where = f"{os.cpu_count()}-core CPU ({platform.machine()}), {torch.get_num_threads()} threads"
    return f"{accelerator.num_processes} x {where}, mixed precision {accelerator.mixed_precision}, torch {torch.__version__}"
