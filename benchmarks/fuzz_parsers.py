"""A longer fuzz run of every parser of untrusted input: the targets and strategies of tests/test_fuzz_parsers.py, with
many more examples each, a time limit per input (hypothesis' deadline, and an alarm at 5x it for an input that never
returns) and a bound on memory growth. Each parser
either loads an input or raises its declared error naming the file; anything else is a finding. Issue 25's attack
classes have their own campaigns: hostile names (manifest paths, tag documents, shard names, weight maps: accepted
names must all be writable inside their folder), lying sizes (a blob longer or shorter than its entry: never more
than the entry + 1 bytes read), deep JSON (every JSON parser, up to 200,000 levels), huge records (a small record
limit: no longer record comes out) and credentials planted in every URL field (never in anything redacted). Writes
benchmarks/results/fuzz.json and fuzz.md: parser, inputs tried, seconds, peak memory growth, findings.

    .venv/bin/python benchmarks/fuzz_parsers.py [--examples 2000] [--deadline 2.0] [--memory-mb 512]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fuzz_targets as targets  # noqa: E402
import test_fuzz_parsers as cases  # noqa: E402  (the strategies)

from _machine import cpu_model, machine# noqa: E402

RESULTS = Path(__file__).parent / "results"


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Hang(Exception):
    """An input ran past the hard time limit (hypothesis' deadline is only checked once an input returns)."""


def in_scratch(target, hard_limit: float):
    def on_alarm(signum, frame):
        raise Hang(f"still running after {hard_limit:.0f} s")

    def call(*args):
        parent, folder = cases.scratch()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, hard_limit)
        try:
            target(*args, folder)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            shutil.rmtree(parent, ignore_errors=True)
    return call


def campaigns():
    """(parser, strategy of argument tuples, target)."""
    dict_keys = st.sampled_from(["hidden_size", "num_layers", "vocab_size", "embedding_size", "weight_norm", "kernel",
                                 "forget_bias", "use_cache", "architectures", "dtype", "auto_map", "zzz"])
    yield "hub manifest and tag", st.tuples(cases.manifest_like()), targets.manifest
    yield "hub reference (URL@version/@tag)", st.tuples(st.text(max_size=60)), targets.hub_reference
    yield "safetensors header (hub check)", st.tuples(cases.safetensors_like()), targets.safetensors_file
    for model_type in ("mlstm", "byte_lstm"):
        yield (f"config.json + weights ({model_type}, from_pretrained)",
               st.tuples(st.just(model_type), st.dictionaries(dict_keys, cases.json_values, max_size=5),
                         st.none() | cases.safetensors_like()), targets.checkpoint)
    yield ("classifier.json + classifier.safetensors",
           st.tuples(st.binary(max_size=120) | st.fixed_dictionaries({
               "format": st.just("bytezoo-transfer-classifier"), "format_version": cases.json_values,
               "task": st.sampled_from(["binary", "multiclass", "multilabel"]) | cases.json_values,
               "classes": cases.json_values, "n_features": cases.json_values, "C": cases.json_values,
               "params": cases.json_values, "dev_scores": cases.json_values}).map(lambda d: json.dumps(d).encode()),
               cases.safetensors_like()), targets.classifier)
    for fmt in ("csv", "tsv", "jsonl"):
        for compression in sorted(targets.COMPRESSORS):
            yield (f"dataset reader .{fmt}{compression}",
                   st.tuples(st.binary(max_size=300) | st.text(max_size=300).map(str.encode), st.just(fmt),
                             st.just(compression), st.booleans()), targets.dataset)
    yield ("archive members (zip, tar.gz)",
           st.tuples(st.lists(st.text(max_size=16) | st.sampled_from(["../x", "/etc/x", "a/../../b", "C:\\x"]),
                              min_size=1, max_size=5), st.sampled_from(["zip", "tar"])), targets.archive)
    yield "packed-corpus index", st.tuples(st.binary(max_size=200)), targets.packed_index
    # issue 25: hostile names, lying sizes, deep JSON, huge records, credentials planted in every URL field
    names = cases.hostile_name
    yield "hostile names: manifest paths", st.tuples(st.lists(names, min_size=1, max_size=5)), targets.manifest_paths
    yield ("hostile names: tag documents", st.tuples(st.sampled_from(["v1", "latest"]) | names,
                                                     st.sampled_from(["v1", "latest"]) | names | cases.json_values),
           targets.tag_document)
    yield ("hostile names: packed-corpus shard names", st.tuples(st.lists(names | cases.json_values, min_size=1,
                                                                           max_size=4)), targets.packed_index_names)
    yield ("hostile names: safetensors weight maps",
           st.tuples(st.dictionaries(st.text(max_size=6), names | cases.json_values, max_size=4) | cases.json_values),
           targets.weight_map)
    yield "lying sizes: blob vs manifest entry", st.tuples(st.integers(0, 1 << 16), st.integers(0, 1 << 16)), \
        targets.lying_blob
    yield ("deep JSON: every JSON parser", st.tuples(st.integers(1, 200_000), st.sampled_from(["list", "dict"])),
           targets.deep_json)
    for fmt in ("csv", "jsonl"):
        yield (f"huge records: .{fmt}(.gz) past a small limit",
               st.tuples(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode), st.just(fmt),
                         st.sampled_from(["", ".gz"]), st.integers(1, 256)), targets.records_with_a_limit)
    yield "credentials planted in every URL field", st.tuples(cases.credential_parts), targets.planted_credentials


def run_campaign(name, strategy, target, examples: int, deadline: float, memory_mb: float) -> dict:
    count = [0]
    call = in_scratch(target, hard_limit=5 * deadline)
    rss_before = max_rss_mb()

    @settings(max_examples=examples, deadline=timedelta(seconds=deadline), database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def prop(args):
        count[0] += 1
        call(*args)

    start, finding = time.perf_counter(), None
    try:
        prop()
    except BaseException as error:  # noqa: BLE001  (a finding, whatever it is)
        finding = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300] if str(error).strip() else ''}"
    growth = max_rss_mb() - rss_before
    if finding is None and growth > memory_mb:
        finding = f"peak memory grew by {growth:.0f} MB (bound {memory_mb:.0f} MB)"
    return {"parser": name, "inputs": count[0], "seconds": round(time.perf_counter() - start, 1),
            "peak_memory_growth_mb": round(growth, 1), "finding": finding}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="inputs per parser (default: 2000)")
    parser.add_argument("--deadline", type=float, default=2.0, help="seconds allowed per input (default: 2)")
    parser.add_argument("--memory-mb", type=float, default=512, help="bound on peak memory growth per parser")
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no "Loading weights" bar per input
    for model_type in ("mlstm", "byte_lstm"):  # warm imports and the tiny checkpoints: the deadline is for parsing
        targets.tiny_checkpoint(model_type)
    import bytezoo.data.packed, bytezoo.hub.safety, bytezoo.transfer.classifier, bytezoo.data.labelled  # noqa: E401,F401
    rows = []
    for name, strategy, target in campaigns():
        row = run_campaign(name, strategy, target, args.examples, args.deadline, args.memory_mb)
        rows.append(row)
        print(f"{name:<45} {row['inputs']:>6} inputs {row['seconds']:>7.1f} s  {row['finding'] or 'no finding'}",
              flush=True)
    result = {"benchmark": "fuzz-parsers", "machine": machine(), "cpu": cpu_model(), "python": platform.python_version(),
              "examples_per_parser": args.examples, "deadline_seconds": args.deadline, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fuzz.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Fuzzing the parsers of untrusted input (`fuzz_parsers.py --examples {args.examples}`)", "",
             f"{result['cpu']}, Python {result['python']}; deadline {args.deadline} s per input; hypothesis strategies "
             "from tests/test_fuzz_parsers.py.", "", "| parser | inputs | seconds | peak memory growth | finding |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['parser']} | {r['inputs']:,} | {r['seconds']} | {r['peak_memory_growth_mb']} MB | "
              f"{r['finding'] or 'none'} |" for r in rows]
    (RESULTS / "fuzz.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
