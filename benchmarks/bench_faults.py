"""The fault campaign (issue 28): small ``bytezoo pretrain`` and ``bytezoo finetune`` runs killed (SIGKILL) at random
moments, each then resumed, and every outcome counted.

Each trial starts the command in a child process with one fault installed (the child is this script, ``child``
mode, which patches bytezoo's own functions so the fault lands where it is named, then runs the ``bytezoo`` command):

- ``time:S``: SIGKILL S seconds after the child starts (anywhere: start-up, packing, a step, a log line, a save);
- ``checkpoint:N:POINT``: SIGKILL inside the N-th checkpoint write: ``after_state`` (Accelerate's files written),
  ``after_streams`` (the streams' state written), ``before_mark`` / ``after_mark`` (before / after the train state
  that marks the staging folder complete), ``after_rename`` (renamed into place, older ones not yet rotated out);
- ``export:POINT``: inside the final export: ``after_model``, ``after_summary``, ``after_aside`` (the previous export
  moved aside), ``after_swap`` (the new one in place, the old one not yet removed); the last two need a previous
  export, so those trials first finish the run and kill the export of a ``--resume`` of it;
- ``pack:K``: inside the packing of the raw sources into ``OUTPUT/corpus``, at its K-th write, or ``pack:index``
  just before the index (what makes a pack a corpus) is written;
- ``hub:POINT``: inside ``bytezoo hub push`` of the finished model: ``after_first_blob``, ``before_manifest``,
  ``before_tag``, or ``time:S``;
- ``full:PHASE``: not a kill but a full disk: ``resource.setrlimit(RLIMIT_FSIZE)`` in the child as the phase starts
  (``checkpoint`` = the second checkpoint, ``export``, ``pack``), so its next large write fails.

Then the same command runs again with ``--resume`` (for ``hub``: the same push again, then a pull), with no fault,
and the outcome is one of:

- **bitwise**: it ends with exit code 0 and the exported weights equal the uninterrupted reference run's, bit for
  bit (for ``hub``: every pushed file pulls back byte-identical);
- **refused cleanly**: it ends with exit code 2 and one line of error (``bytezoo ...: error: ...``), no traceback;
- **other**: anything else (must not happen).

Full-disk trials must also fail with exactly one line (exit 2) before the resume; and a corrupted newest checkpoint
(bytes flipped in its weights, or its streams file truncated) must make ``--resume`` fall back to the previous
checkpoint, say so, and still end bitwise equal.

    python benchmarks/bench_faults.py                       # 30 pretraining + 30 fine-tuning kills, the extras
    python benchmarks/bench_faults.py --kills 1 --finetune-kills 0 --no-extras --steps 10 \
        --only checkpoint:2:before_mark --output /tmp/faults.json                       # the suite's smoke test

Results: ``benchmarks/results/faults.json`` (every trial: its fault, exit codes, outcome, the last lines of
output) and ``faults.md`` (the table).
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _machine.py

CHECKPOINT_POINTS = ("after_state", "after_streams", "before_mark", "after_mark", "after_rename")
EXPORT_POINTS = ("after_model", "after_summary", "after_aside", "after_swap")
HUB_POINTS = ("after_first_blob", "before_manifest", "before_tag")
FULL_LIMIT = 16 * 1024  # bytes a file may hold once the disk is "full": below every checkpoint and corpus file
SOURCES = 4  # raw corpus files: packing writes each separately
PRETRAIN_STEPS, FINETUNE_STEPS, SAVE_EVERY = 40, 30, 5


# --- the child: one bytezoo command with one fault installed ----------------------------------------------------------
def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fill_the_disk() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (FULL_LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def install(fault: str) -> None:
    """Patches bytezoo (and the libraries it calls) so that ``fault`` happens where it says."""
    kind, _, where = fault.partition(":")
    if kind == "time":
        timer = threading.Timer(float(where), die)
        timer.daemon = True
        timer.start()
    elif kind == "checkpoint":
        number, _, point = where.partition(":")
        _inside_checkpoint(int(number), point)
    elif kind == "export":
        _inside_export(where)
    elif kind == "pack":
        _inside_pack(where)
    elif kind == "hub":
        _inside_push(where)
    elif kind == "full":
        _full_disk(where)
    elif kind != "none":
        raise SystemExit(f"unknown fault {fault!r}")


def _inside_checkpoint(number: int, point: str) -> None:
    import accelerate

    from bytezoo.training import checkpoint as ckpt

    state = {"saves": 0, "active": False, "listings": 0}
    real_save, real_state, real_file, real_json, real_dirs = (ckpt.save_checkpoint, accelerate.Accelerator.save_state,
                                                              ckpt.save_file, ckpt.write_json, ckpt.checkpoint_dirs)

    def save_checkpoint(*args, **kwargs):
        state["saves"] += 1
        state["active"], state["listings"] = state["saves"] == number, 0
        return real_save(*args, **kwargs)

    def save_state(self, *args, **kwargs):
        result = real_state(self, *args, **kwargs)
        if state["active"] and point == "after_state":
            die()
        return result

    def save_file(tensors, path, *args, **kwargs):
        real_file(tensors, path, *args, **kwargs)
        if state["active"] and point == "after_streams" and "streams-rank" in str(path):
            die()

    def write_json(path, document):
        if state["active"] and Path(path).name == ckpt.TRAIN_STATE and point == "before_mark":
            die()
        real_json(path, document)
        if state["active"] and Path(path).name == ckpt.TRAIN_STATE and point == "after_mark":
            die()

    def checkpoint_dirs(*args, **kwargs):
        if state["active"]:
            state["listings"] += 1
            if point == "after_rename" and state["listings"] == 2:  # the rotation's listing, after the rename
                die()
        return real_dirs(*args, **kwargs)

    ckpt.save_checkpoint, accelerate.Accelerator.save_state = save_checkpoint, save_state
    ckpt.save_file, ckpt.write_json, ckpt.checkpoint_dirs = save_file, write_json, checkpoint_dirs


def _inside_export(point: str) -> None:
    import transformers

    from bytezoo.training import checkpoint as ckpt

    state = {"active": False}
    real_export, real_json, real_replace = ckpt.export_model, ckpt.write_json, os.replace
    real_save = transformers.PreTrainedModel.save_pretrained

    def export_model(model, tokenizer, export_dir, summary):
        state["active"] = True
        return real_export(model, tokenizer, export_dir, summary)

    def save_pretrained(self, *args, **kwargs):
        result = real_save(self, *args, **kwargs)
        if state["active"] and point == "after_model":
            die()
        return result

    def write_json(path, document):
        real_json(path, document)
        if state["active"] and point == "after_summary" and Path(path).name == "training_summary.json":
            die()

    def replace(source, destination, *args, **kwargs):
        real_replace(source, destination, *args, **kwargs)
        name = Path(source).name
        if state["active"] and ((point == "after_aside" and name == "model")
                                or (point == "after_swap" and name == ".tmp-model")):
            die()

    ckpt.export_model, ckpt.write_json, os.replace = export_model, write_json, replace
    transformers.PreTrainedModel.save_pretrained = save_pretrained


def _inside_pack(point: str) -> None:
    from bytezoo.data import packed

    if point == "index":
        packed._write_index = lambda *args, **kwargs: die()
        return
    writes, real_write = {"n": 0}, packed._ShardWriter.write

    def write(self, data):
        writes["n"] += 1
        real_write(self, data)
        if writes["n"] == int(point):
            die()

    packed._ShardWriter.write = write


def _inside_push(point: str) -> None:
    from bytezoo.hub import remote

    if point == "after_first_blob":
        real_upload = remote.HubRepo.upload_blob

        def upload_blob(self, *args, **kwargs):
            real_upload(self, *args, **kwargs)
            die()

        remote.HubRepo.upload_blob = upload_blob
    elif point == "before_manifest":
        remote.HubRepo.write_manifest = lambda self, manifest: die()
    elif point == "before_tag":
        remote.HubRepo.write_tag = lambda self, tag: die()
    else:
        raise SystemExit(f"unknown hub point {point!r}")


def _full_disk(phase: str) -> None:
    from bytezoo.data import packed
    from bytezoo.training import checkpoint as ckpt

    module, name, when = {"pack": (packed, "_pack", 1), "export": (ckpt, "export_model", 1),
                          "checkpoint": (ckpt, "save_checkpoint", 2)}[phase]  # the second checkpoint: one is kept
    calls, real = {"n": 0}, getattr(module, name)

    def filling_the_disk_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == when:
            fill_the_disk()
        return real(*args, **kwargs)

    setattr(module, name, filling_the_disk_first)


def child(arguments: list[str]) -> int:
    fault, command = arguments[0], arguments[1:]
    install(fault)
    from bytezoo.cli import main

    return main(command)


# --- the campaign -----------------------------------------------------------------------------------------------------
def run_child(fault: str, command: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), "child", fault, *command], env=env,
                          capture_output=True, text=True, timeout=timeout)


def tail(text: str, lines: int = 4) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()][-lines:]


def weights(folder: Path) -> dict | None:
    from safetensors.torch import load_file

    path = folder / "model" / "model.safetensors"
    return load_file(str(path)) if path.is_file() else None


def same_weights(a: dict | None, b: dict | None) -> bool:
    import torch

    return a is not None and b is not None and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def one_error_line(result: subprocess.CompletedProcess) -> bool:
    lines = tail(result.stderr, 1000)
    errors = [line for line in lines if ": error: " in line and line.startswith("bytezoo")]
    return result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr


def classify(result: subprocess.CompletedProcess, folder: Path, reference: dict) -> str:
    if result.returncode == 0 and same_weights(weights(folder), reference):
        return "bitwise"
    if one_error_line(result):
        return "refused cleanly"
    return "other"


class Campaign:
    def __init__(self, work: Path, seed: int, steps: dict[str, int] | None = None, only: list[str] | None = None):
        self.work, self.rng, self.only = work, random.Random(seed), only
        self.steps = steps or {"pretrain": PRETRAIN_STEPS, "finetune": FINETUNE_STEPS}
        self.env = {**os.environ, "BYTEZOO_QUIET_THREADS": "1", "BYTEZOO_CACHE": str(work / "cache"),
                    "TMPDIR": str(work / "tmp"), "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(HERE.parent / "src"), os.environ.get("PYTHONPATH")]))}
        self.env.pop("BYTEZOO_NUM_THREADS", None)
        (work / "tmp").mkdir(parents=True, exist_ok=True)
        self.trials: list[dict] = []

    # the two commands, on fixed data
    def prepare(self, finetune: bool) -> None:
        rng = random.Random(0)
        words = ["good", "bad", "plot", "acting", "the", "a", "film", "boring", "great", "é", "twist", "ending"]
        corpus = self.work / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        for index in range(SOURCES):
            lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(150)]
            (corpus / f"part-{index}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if not finetune:
            return
        task = self.work / "task"
        task.mkdir(exist_ok=True)
        positive, negative, filler = ["good", "great", "fine"], ["bad", "awful", "dull"], ["the", "film", "a", "was"]
        for split, count in (("train", 96), ("dev", 32)):
            with open(task / f"{split}.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["label", "sentence"])
                for _ in range(count):
                    label = rng.randint(0, 1)
                    sentence = [rng.choice(positive if label else negative)] + rng.choices(filler, k=rng.randint(0, 9))
                    rng.shuffle(sentence)
                    writer.writerow([["neg", "pos"][label], " ".join(sentence)])
        subprocess.run([sys.executable, "-c", "import sys, bytezoo; m = bytezoo.create_model('mlstm-256', "
                        "hidden_size=32, embedding_size=8); m.save_pretrained(sys.argv[1]); "
                        "bytezoo.ByteTokenizer().save_pretrained(sys.argv[1])", str(task / "lm")],
                       env=self.env, check=True, capture_output=True)

    def pretrain(self, output: Path, *extra: str) -> list[str]:
        return ["--threads", "1", "pretrain", "--model", "mlstm-256", "--model-config", "hidden_size=64",
                "--model-config", "embedding_size=16", "--batch-size", "8", "--seq-len", "32",
                "--data", str(self.work / "corpus" / "*.txt"), "--output", str(output),
                "--max-steps", str(self.steps["pretrain"]), "--save-every", str(SAVE_EVERY), "--keep-checkpoints", "2",
                "--lr", "3e-3", "--log-every", "2", "--no-progress", *extra]

    def finetune(self, output: Path, *extra: str) -> list[str]:
        task = self.work / "task"
        return ["--threads", "1", "finetune", "--model", str(task / "lm"), "--train", str(task / "train.csv"),
                "--dev", str(task / "dev.csv"), "--output", str(output), "--max-steps", str(self.steps["finetune"]),
                "--eval-every", "5", "--save-every", str(SAVE_EVERY), "--patience", "0", "--batch-size", "8",
                "--lr", "1e-2", "--log-every", "2", "--no-progress", *extra]

    def reference(self, objective: str) -> tuple[dict, float]:
        output = self.work / f"{objective}-reference"
        started = time.monotonic()
        result = run_child("none", getattr(self, objective)(output), self.env)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"the reference {objective} run failed:\n{result.stderr[-3000:]}")
        return weights(output), seconds

    def faults(self, objective: str, count: int, seconds: float) -> list[str]:
        """``count`` faults: a quarter at random times, the rest spread over the named places (or ``--only``)."""
        if self.only:
            return self.only[:count]
        last = self.steps[objective] // SAVE_EVERY  # the final checkpoint
        places = [f"checkpoint:{n}:{p}" for n in (1, 2, 3, last) for p in CHECKPOINT_POINTS]
        places += [f"export:{p}" for p in EXPORT_POINTS]
        if objective == "pretrain":
            places += [f"pack:{k}" for k in range(1, SOURCES + 1)] + ["pack:index"]
            places += [f"hub:{p}" for p in HUB_POINTS] + ["hub:time"]
        timed = max(1, count // 4)
        chosen = [f"time:{self.rng.uniform(1.0, seconds * 0.75):.2f}" for _ in range(timed)]
        if objective == "pretrain":  # at least one of each kind the issue names
            must = ["pack:2", "export:after_aside", "checkpoint:2:before_mark", "hub:before_manifest"]
            chosen += must[: max(0, count - timed)]
        rest = [p for p in places if p not in chosen]
        chosen += self.rng.sample(rest, min(len(rest), max(0, count - len(chosen))))
        return chosen[:count]

    def kill_and_resume(self, objective: str, fault: str, index: int, reference: dict) -> dict:
        output = self.work / f"{objective}-{index:02d}"
        command = getattr(self, objective)(output)
        if fault.startswith("hub:"):
            return self.push_trial(fault, index)
        if fault in ("export:after_aside", "export:after_swap"):  # a re-export: a finished run resumed exports again
            run_child("none", command, self.env)
            command = command + ["--resume"]
        killed = run_child(fault, command, self.env)
        resumed = run_child("none", command + ["--resume"] * ("--resume" not in command), self.env)
        outcome = classify(resumed, output, reference)
        return {"objective": objective, "fault": fault, "killed_exit": killed.returncode,
                "reached": killed.returncode == -signal.SIGKILL, "resume_exit": resumed.returncode,
                "outcome": outcome, "resume_tail": tail(resumed.stdout + resumed.stderr)}

    def push_trial(self, fault: str, index: int) -> dict:
        """A push killed midway, pushed again, pulled into an empty cache: every pushed file must come back whole."""
        source = self.work / "pretrain-reference" / "model"
        repository = f"file://{self.work}/hub-{index:02d}"
        point = fault.split(":", 1)[1]
        if point == "time":  # a moment inside a push: timed once, unfaulted, into a scratch repository
            if not hasattr(self, "push_seconds"):
                started = time.monotonic()
                run_child("none", ["hub", "push", str(source), f"file://{self.work}/hub-timing"], self.env)
                self.push_seconds = time.monotonic() - started
            fault = f"time:{self.rng.uniform(0.3, 0.9 * self.push_seconds):.2f}"
        killed = run_child(fault if point == "time" else f"hub:{point}", ["hub", "push", str(source), repository],
                           self.env)
        pushed = run_child("none", ["hub", "push", str(source), repository], self.env)
        env = {**self.env, "BYTEZOO_CACHE": str(self.work / f"cache-pull-{index:02d}")}
        pulled_into = self.work / f"pulled-{index:02d}"
        pulled = run_child("none", ["hub", "pull", repository, str(pulled_into)], env)
        files = [p.name for p in source.iterdir() if p.is_file() and (pulled_into / p.name).is_file()]
        whole = (pushed.returncode == 0 and pulled.returncode == 0 and "model.safetensors" in files
                 and all((source / n).read_bytes() == (pulled_into / n).read_bytes() for n in files))
        refused = one_error_line(pushed) or one_error_line(pulled)
        outcome = "bitwise" if whole else "refused cleanly" if refused else "other"
        return {"objective": "hub push", "fault": fault, "killed_exit": killed.returncode,
                "reached": killed.returncode == -signal.SIGKILL, "resume_exit": pushed.returncode,
                "outcome": outcome, "resume_tail": tail(pushed.stdout + pushed.stderr + pulled.stderr)}

    def full_disk(self, objective: str, phase: str, reference: dict) -> dict:
        output = self.work / f"{objective}-full-{phase}"
        command = getattr(self, objective)(output)
        failed = run_child(f"full:{phase}", command, self.env)
        message = [line for line in tail(failed.stderr, 1000) if ": error: " in line]
        resumed = run_child("none", command + ["--resume"], self.env)
        one_line = one_error_line(failed) and "no room to write" in failed.stderr
        outcome = classify(resumed, output, reference) if one_line else "other"
        return {"objective": objective, "fault": f"full disk during {phase} (RLIMIT_FSIZE {FULL_LIMIT} B)",
                "killed_exit": failed.returncode, "reached": bool(message), "error_line": message,
                "resume_exit": resumed.returncode, "outcome": outcome,
                "resume_tail": tail(resumed.stdout + resumed.stderr)}

    def corrupted(self, objective: str, damage: str, reference: dict) -> dict:
        """Killed after its third checkpoint, the newest then damaged: --resume must fall back and end bitwise."""
        output = self.work / f"{objective}-corrupt-{damage}"
        command = getattr(self, objective)(output)
        killed = run_child("checkpoint:3:after_rename", command, self.env)
        newest = sorted((output / "checkpoints").glob("step-*"))[-1]
        if damage == "weights":
            target = newest / "model.safetensors"
            data = bytearray(target.read_bytes())
            data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensors: loads silently unless checked
            target.write_bytes(bytes(data))
        else:
            target = next(newest.glob("streams-rank0.safetensors"), None) or next(newest.glob("*.safetensors"))
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        resumed = run_child("none", command + ["--resume"], self.env)
        said = "is damaged" in resumed.stdout and "instead" in resumed.stdout
        outcome = classify(resumed, output, reference)
        return {"objective": objective, "fault": f"newest checkpoint {newest.name} corrupted ({damage})",
                "killed_exit": killed.returncode, "reached": killed.returncode == -signal.SIGKILL,
                "resume_exit": resumed.returncode, "fell_back_and_said_so": said,
                "outcome": outcome if said or outcome != "bitwise" else "other",
                "resume_tail": tail(resumed.stdout + resumed.stderr)}

    def run(self, kills: dict[str, int], extras: bool, log=functools.partial(print, flush=True)) -> None:
        self.prepare(finetune=bool(kills.get("finetune")) or extras)
        for objective, count in kills.items():
            if not count and not extras:
                continue
            reference, seconds = self.reference(objective)
            log(f"{objective}: reference run {seconds:.1f} s")
            for index, fault in enumerate(self.faults(objective, count, seconds)):
                trial = self.kill_and_resume(objective, fault, index, reference)
                self.trials.append({**trial, "kind": "kill"})
                log(f"  {trial['objective']:<10} {trial['fault']:<28} killed {trial['killed_exit']:>4}  "
                    f"resumed {trial['resume_exit']:>3}  {trial['outcome']}")
            if not extras:
                continue
            for phase in ("checkpoint", "export", "pack")[: 3 if objective == "pretrain" else 2]:
                trial = self.full_disk(objective, phase, reference)
                self.trials.append({**trial, "kind": "full disk"})
                log(f"  {objective:<10} {trial['fault']:<28} failed {trial['killed_exit']:>4}  "
                    f"resumed {trial['resume_exit']:>3}  {trial['outcome']}  {trial['error_line'][:1]}")
            for damage in ("weights", "truncated streams"):
                trial = self.corrupted(objective, damage, reference)
                self.trials.append({**trial, "kind": "corrupted"})
                log(f"  {objective:<10} {trial['fault']:<28} resumed {trial['resume_exit']:>3}  {trial['outcome']}  "
                    f"fell back: {trial['fell_back_and_said_so']}")

    def table(self) -> dict:
        counts: dict[str, Counter] = {}
        for trial in self.trials:
            counts.setdefault(f"{trial['objective']}: {trial['kind']}", Counter())[trial["outcome"]] += 1
        return {row: {key: c[key] for key in ("bitwise", "refused cleanly", "other")} for row, c in counts.items()}


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# Fault campaign (issue 28)", "",
        f"`{results['command']}` on {machine['cpu_model']}, {machine['affinity']} cores (load average "
        f"{', '.join(f'{x:.1f}' for x in machine['load_average'])} at the end), {results['date']}, "
        f"{results['seconds']:.0f} s.", "",
        "Each trial kills a small run with SIGKILL at one moment (or fills the disk with `RLIMIT_FSIZE`, or corrupts "
        "its newest checkpoint), then runs the same command again with `--resume` (a push: the same push, then a "
        "pull into an empty cache). *bitwise*: exit 0 and the exported weights (pulled files) equal the "
        "uninterrupted run's bit for bit; *refused cleanly*: exit 2 with one line of error; *other*: anything else.",
        "", "| trials | bitwise | refused cleanly | other |", "|---|---|---|---|"]
    for row, counts in results["table"].items():
        lines.append(f"| {row} | {counts['bitwise']} | {counts['refused cleanly']} | {counts['other']} |")
    total = Counter()
    for counts in results["table"].values():
        total.update(counts)
    lines.append(f"| **all** | **{total['bitwise']}** | **{total['refused cleanly']}** | **{total['other']}** |")
    lines += ["", "Every trial (fault → exit code of the faulted run, of the resume → outcome):", "",
              "| objective | fault | faulted run | resume | outcome |", "|---|---|---|---|---|"]
    for trial in results["trials"]:
        faulted = {-signal.SIGKILL: "SIGKILL"}.get(trial["killed_exit"], str(trial["killed_exit"]))
        lines.append(f"| {trial['objective']} | {trial['fault']} | {faulted} | {trial['resume_exit']} | "
                     f"{trial['outcome']} |")
    lines += ["", "The full-disk trials' error lines:", ""]
    lines += [f"- {trial['error_line'][0]}" for trial in results["trials"] if trial.get("error_line")]
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs of the pretraining run (default: 30)")
    parser.add_argument("--finetune-kills", type=int, default=30, help="SIGKILLs of the fine-tuning run (default: 30)")
    parser.add_argument("--no-extras", dest="extras", action="store_false",
                        help="skip the full-disk and corrupted-checkpoint trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help=f"steps of each run (default: {PRETRAIN_STEPS} pretraining, "
                                                   f"{FINETUNE_STEPS} fine-tuning; a checkpoint every {SAVE_EVERY})")
    parser.add_argument("--only", action="append", metavar="FAULT", help="these faults (repeatable), not a random draw")
    parser.add_argument("--work", help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--output", default=str(HERE / "results" / "faults.json"))
    args = parser.parse_args()
    from _machine import machine

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bytezoo-faults-"))
    started = time.monotonic()
    steps = {"pretrain": args.steps, "finetune": args.steps} if args.steps else None
    campaign = Campaign(work, args.seed, steps, args.only)
    try:
        campaign.run({"pretrain": args.kills, "finetune": args.finetune_kills}, args.extras)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/bench_faults.py " + " ".join(sys.argv[1:])
    results = {"command": command.strip(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "seconds": time.monotonic() - started, "machine": machine(), "table": campaign.table(),
               "trials": campaign.trials}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(results))
    print(markdown(results).split("Every trial")[0])
    others = sum(counts["other"] for counts in results["table"].values())
    return 1 if others else 0


if __name__ == "__main__":
    sys.exit(main())
