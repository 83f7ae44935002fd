"""The one training runtime both objectives use (``bytezoo pretrain``, ``bytezoo finetune``), and the output-folder
policy every command that writes a folder shares (``bytezoo transfer`` too).

Read in the order a run goes through it (:mod:`~bytezoo.training.runtime` strings them together):

- ``launch``: the launcher's process group, the Accelerator, the precision that actually runs (fp16 on a CPU runs
  in fp32), the launch checks;
- ``run_folder``: what a used output folder means, ``--overwrite`` and ``--resume``, a run's identity (``run.json``:
  its settings, its training data's sha256s), changed data refused on resume;
- ``cpu_threads``: the run's CPU thread count, fixed at its start and kept on resume (``--adapt-threads`` opts out);
- ``schedules``: the learning-rate shapes (warmup, decay) of both objectives;
- ``stop``: SIGTERM, Ctrl-C and ``--max-time`` as clean stops, and the exit codes they end with;
- ``checkpoint``: checkpoints a crash cannot half-write (sha256 per file; a damaged one passed over on resume), the
  export, the one writer of a run's JSON records;
- ``metrics``: ``metrics.jsonl`` and TensorBoard;
- ``options``: the command-line value types and options both commands share;
- ``runtime``: :class:`~bytezoo.training.runtime.TrainingRun`, a run from the Accelerator to the export.

An objective (``bytezoo.pretrain``, ``bytezoo.finetune``) keeps its options, its data and batches, its model and
loss, its figures and its command line.
"""
import lazy_loader as _lazy

# Lazy: the folder policy is used by commands that must not import torch and accelerate to check a folder.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["checkpoint", "cpu_threads", "launch", "metrics", "options", "run_folder", "runtime", "schedules",
                "stop"],
    submod_attrs={
        "run_folder": ["FolderUse", "OutputFolderError", "check_output_folder", "clear_output_folder"],
        "runtime": ["NonFiniteLossError", "TrainingRun"],
        "schedules": ["SCHEDULES", "Schedule", "warmup_steps"],
    },
)
