"""Which device a run's own forward passes (frozen-tower encoding, out-of-fold scoring, predict) use.

``runtime.accelerator`` decides it for every pass, not only for Lightning's training: ``cpu`` keeps everything on
the CPU, ``gpu`` needs a CUDA device (an error names the key when there is none), ``auto`` takes CUDA when present.
"""

from __future__ import annotations

__all__ = ["run_device"]


def run_device(accelerator: str) -> str:
    """``"cuda"`` or ``"cpu"`` for ``runtime.accelerator``.

    Raises:
        ValueError: ``gpu`` on a machine where torch sees no CUDA device.
    """
    import torch

    if accelerator == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if accelerator == "gpu":
        raise ValueError(
            "runtime.accelerator is gpu but torch sees no CUDA device here: "
            "set runtime.accelerator to auto or cpu (--set runtime.accelerator=auto)"
        )
    return "cpu"
