"""Choosing the device that training and float measurement run on."""

from __future__ import annotations

import torch

from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map ``auto|cpu|cuda`` (or a ``torch.device``) to a concrete device.

    ``auto`` picks CUDA when it is present, else CPU. Asking for CUDA on a machine without it is an error,
    not a silent fall-back, so that timings are never reported for the wrong device.
    """
    if isinstance(device, torch.device):
        name = device.type
    else:
        name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} was asked for but no CUDA GPU is available",
                "a machine with a CUDA GPU for --device cuda",
                "use --device cpu or --device auto",
            )
        return torch.device(name)
    raise DeviceError(
        f"unknown device {device!r}",
        f"one of {', '.join(DEVICE_CHOICES)}",
        "pass --device auto, cpu or cuda",
    )


def require_backend(backend: str) -> None:
    """``--backend gpu`` measures on CUDA: fail now, with a clear message, rather than after the work."""
    if backend == "gpu" and not torch.cuda.is_available():
        raise DeviceError("--backend gpu, but no CUDA GPU is available on this machine",
                          "a machine with a CUDA GPU for the gpu backend", "use --backend cpu, or run on a GPU machine")
