"""The process a run trains in: the launcher's process group, the Accelerator, and the precision that actually runs.

One process, ``accelerate launch`` and ``torchrun`` run the same code. Two launch facts shape it: without a GPU,
Accelerate joins a launched group only with ``ACCELERATE_USE_CPU=1`` (and otherwise gives every process a
single-process Accelerator: N independent runs writing one folder), and ``mixed_precision="fp16"`` on a CPU silently
trains in fp32 (no autocast, no loss scaler), which the summary must say.
"""
from __future__ import annotations

import contextlib
import os
import warnings

from bytezoo.errors import ByteZooError


class LaunchError(ByteZooError, RuntimeError):
    """The launcher started several processes, but this one would train alone."""


def launched_world_size() -> int:
    """How many processes the launcher (torchrun, accelerate launch) says it started: WORLD_SIZE, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def join_launched_group() -> None:
    """Makes a process that a launcher started as one of several join their group, or stops it.

    `torchrun` and `accelerate launch --multi_gpu` set WORLD_SIZE; on a machine without a GPU, Accelerate joins the
    group only with ACCELERATE_USE_CPU=1 and otherwise gives every process a single-process Accelerator: N
    independent runs writing one folder. Without a GPU, the group can only be a CPU (gloo) one, so ask for it.
    """
    import torch

    if launched_world_size() > 1 and not torch.cuda.is_available() and "ACCELERATE_USE_CPU" not in os.environ:
        os.environ["ACCELERATE_USE_CPU"] = "1"


def check_launch(accelerator) -> None:
    world = launched_world_size()
    if world > 1 and accelerator.num_processes != world:
        raise LaunchError(
            f"the launcher started {world} processes (WORLD_SIZE={world}) but this one would train alone "
            f"(Accelerate sees {accelerator.num_processes}, device {accelerator.device}): on CPUs set "
            f"ACCELERATE_USE_CPU=1 (not ACCELERATE_USE_CPU={os.environ.get('ACCELERATE_USE_CPU')!r}); on GPUs give "
            "each process a GPU")


def start_accelerator(mixed_precision: str, grad_accum_steps: int, kwargs_handlers=()) -> tuple[object, str]:
    """Joins the launched group and returns ``(accelerator, precision)``: ``precision`` is what runs ("no" for fp16
    on a CPU, with a warning), which may differ from ``mixed_precision``, what was asked for."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin

    join_launched_group()
    # The plugin, not gradient_accumulation_steps=: Accelerate lets ACCELERATE_GRADIENT_ACCUMULATION_STEPS override the
    # latter, and the loops read exactly grad_accum_steps batches per step, so the two must agree. No scheduler is
    # prepared (the rate is set from the applied updates each step), so none steps with the optimizer.
    accelerator = Accelerator(mixed_precision=mixed_precision, step_scheduler_with_optimizer=False,
                              gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=grad_accum_steps),
                              kwargs_handlers=list(kwargs_handlers))
    cpu_fp16 = mixed_precision == "fp16" and accelerator.device.type == "cpu"
    if cpu_fp16:
        warnings.warn("fp16 on CPU: Accelerate trains in fp32 (no autocast, no loss scaling); use bf16 on CPU",
                      stacklevel=3)
    check_launch(accelerator)
    return accelerator, "no" if cpu_fp16 else mixed_precision


@contextlib.contextmanager
def accelerate_state_of_its_own():
    """Accelerate's state is a process-wide singleton: reset it after a run (pretraining or fine-tuning), so that a
    later run in the same process chooses its own precision and device."""
    try:
        yield
    finally:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state()
        GradientState._reset_state()


__all__ = ["LaunchError", "accelerate_state_of_its_own", "check_launch", "join_launched_group", "launched_world_size",
           "start_accelerator"]
