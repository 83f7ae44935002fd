"""Model cards: a README.md for each version, written from whatever run summaries the directory holds.

Inputs, all optional: ``config.json`` (architecture), ``*.safetensors`` headers (parameter counts, read without
loading tensors), tokenizer files, ``training_summary.json`` (written by pretraining and fine-tuning; pretraining's
validation BPC beside standard compressors becomes a table), ``report.json`` (written by ``bytezoo transfer`` and by
``bytezoo finetune --test``; its comparison of methods at the same label counts becomes a table) and
``classifier.json`` (written by sentiment transfer). Unknown keys are shown too, so a summary that grows new fields
needs no change here. The card carries no timestamps, so pushing the same files again gives the same version. It
reads these documents as they are written and imports none of the stages that write them.

String values pass through :func:`~bytezoo.redaction.redact_text`, and keys that look like secrets are left
out, so a training summary that recorded ``s3://key:secret@bucket`` does not leak into a card. Every value read from
the folder's files (label names, keys, model types) is escaped for Markdown and HTML (``<script>``, ``[link](…)``,
``**``, a backtick closing a code span, a ``|`` ending a table cell: :mod:`bytezoo.hub.markdown`), so it shows as
written and never as markup; tags in the metadata block keep only letters, digits, ``.``, ``_`` and ``-``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from bytezoo.redaction import redact_text, redact_url
from bytezoo.report_tables import comparison_cells

from .markdown import code, literal, sentence, table
from .safety import count_parameters

GENERATED_MARKER = "<!-- bytezoo-hub: generated model card; delete this line to keep your edits on the next push -->"
SUMMARY_FILES = ("config.json", "training_summary.json", "report.json", "classifier.json")  # what a card reads

_SECRET_KEY_RE = re.compile(r"secret|token|password|passwd|credential|api[_-]?key|access[_-]?key|auth", re.I)
_ARCHITECTURE_KEYS = (
    ("model_type", "model type"),
    ("num_layers", "layers"),
    ("hidden_size", "hidden size"),
    ("embedding_size", "embedding size"),
    ("vocab_size", "vocabulary"),
    ("multiplicative_size", "multiplicative size"),
    ("weight_norm", "weight norm"),
    ("torch_dtype", "dtype"),
    ("dtype", "dtype"),
)
# Headline training facts and the names a training summary may give them, first match wins.
_TRAINING_HEADLINES = (
    ("Training data", ("data", "dataset", "train_data", "data_path", "corpus")),
    ("Characters seen", ("characters_seen", "chars_seen", "bytes_seen", "train_bytes", "tokens_seen")),
    ("Optimizer steps", ("steps", "optimizer_steps", "global_step", "step")),
    ("Validation BPC", ("val_bpc", "valid_bpc", "validation_bpc", "best_val_bpc", "eval_bpc")),
    ("Throughput (characters/s)", ("chars_per_second", "throughput", "bytes_per_second", "tokens_per_second")),
)
_TRANSFER_HEADLINES = (  # keys of bytezoo.transfer's report.json, flattened
    ("Task", ("task",)),
    ("Metric", ("metric",)),
    ("Test accuracy", ("accuracy.test", "test_accuracy")),
    ("Dev accuracy", ("accuracy.dev", "dev_accuracy")),
    ("Train accuracy", ("accuracy.train", "train_accuracy")),
    ("Top-unit classifier, test", ("top_unit_classifier.test_accuracy",)),
    ("TF-IDF baseline, test", ("baselines.tfidf.test_accuracy",)),
)
_MODEL_DESCRIPTIONS = {
    "mlstm": "a byte-level multiplicative LSTM language model (Krause et al. 2016; Radford et al. 2017)",
    "byte_lstm": "a byte-level LSTM language model",
}
_MAX_OTHER_ROWS = 60
_TAG_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]")


def is_generated_card(text: str) -> bool:
    """Whether a README.md was written by :func:`make_model_card` (and may be regenerated on the next push)."""
    return GENERATED_MARKER in text


def make_model_card(
    name: str,
    files: Mapping[str, int],
    json_documents: Mapping[str, Any],
    safetensors_headers: Mapping[str, dict],
    url: str | None = None,
    *,
    hugging_face_repo: str | None = None,
    code_files: tuple[str, ...] = (),
) -> str:
    """Render a model card.

    ``files`` maps each shared path to its size; ``json_documents`` maps JSON file paths to their parsed content;
    ``safetensors_headers`` maps safetensors paths to their headers; ``url`` is where the version is pushed.

    For a Hugging Face model repository (``hugging_face_repo="user/name"``) the card is the one the Hub expects: the
    metadata block comes first (``library_name: transformers``, and the ``custom_code`` tag when ``code_files``, the
    model's code for ``trust_remote_code``, are committed beside the weights), and it says how to load the model with
    transformers as well as with bytezoo.
    """
    config, summary, report, classifier = (_as_dict(json_documents.get(path)) for path in SUMMARY_FILES)
    has_model = "config.json" in files
    has_classifier = "classifier.safetensors" in files or bool(classifier)
    model_type = str(config.get("model_type", "")) if config else ""
    tokenizer_files = sorted(path for path in files
                             if PurePosixPath(path).name.startswith(("tokenizer", "special_tokens")))

    lines = _front_matter(name, model_type, has_model, has_classifier, hugging_face_repo, code_files)
    lines += [_contents_sentence(model_type, has_model, has_classifier), ""]
    lines += _architecture_section(config) + _parameters_section(safetensors_headers)
    if tokenizer_files:
        lines += ["## Tokenizer", "", "Bytes in, bytes out: " + ", ".join(map(code, tokenizer_files)) + ".", ""]
    lines += _training_section(summary) + _transfer_section(report, classifier)
    lines += ["## How to load", ""]
    if hugging_face_repo is not None and has_model:
        lines += _transformers_instructions(hugging_face_repo, tokenizer_files, bool(code_files))
    lines += _loading_instructions(url, has_model, has_classifier, tokenizer_files,
                                   default_ref="main" if hugging_face_repo else "latest")
    lines += _files_section(files, hugging_face_repo, code_files)
    return "\n".join(lines)


def _front_matter(name, model_type, has_model, has_classifier, hugging_face_repo, code_files) -> list[str]:
    """The metadata block and the title (on the Hugging Face Hub the block must come first)."""
    tags = ["bytezoo", "byte-level", _TAG_UNSAFE_RE.sub("", model_type)]
    tags += ["sentiment-analysis"] if has_classifier else []
    if hugging_face_repo is None:
        lines = [GENERATED_MARKER, "---", "library_name: bytezoo"]
        lines += ["tags:"] + [f"- {tag}" for tag in tags if tag] + ["---"]
    else:
        tags += ["custom_code"] if code_files else []
        lines = ["---", f"library_name: {'transformers' if has_model else 'bytezoo'}"]
        lines += ["tags:"] + [f"- {tag}" for tag in tags if tag] + ["---", GENERATED_MARKER]
    return lines + ["", f"# {literal(name)}", ""]


def _contents_sentence(model_type: str, has_model: bool, has_classifier: bool) -> str:
    if has_classifier and not has_model:
        return "This version holds a sentiment classifier on byte-level language-model features."
    description = _MODEL_DESCRIPTIONS.get(model_type, f"a byte-level {code(model_type)} language model" if model_type
                                          else "files shared through the bytezoo hub")
    return f"This version holds {description}" + (
        ", with a sentiment classifier trained on its features." if has_classifier else ".")


def _architecture_section(config: Mapping[str, Any]) -> list[str]:
    if not config:
        return []
    rows = [(label, config[key]) for key, label in _ARCHITECTURE_KEYS if key in config]
    if "architectures" in config:
        rows.insert(0, ("class", ", ".join(map(str, config["architectures"] or []))))
    return ["## Architecture", ""] + table(("", "value"), rows) + [""]


def _parameters_section(safetensors_headers: Mapping[str, dict]) -> list[str]:
    """Each safetensors file's parameter count, tensors and dtypes, read from its header (no tensor is loaded)."""
    if not safetensors_headers:
        return []
    rows, total = [], 0
    for path, header in sorted(safetensors_headers.items()):
        count = count_parameters(header)
        total += count
        dtypes = sorted({entry["dtype"] for key, entry in header.items() if key != "__metadata__"})
        tensors = sum(1 for key in header if key != "__metadata__")
        rows.append((code(path), _format_value("parameters", count), tensors, ", ".join(dtypes)))
    lines = ["## Parameters", ""] + table(("file", "parameters", "tensors", "dtypes"), rows)
    if len(rows) > 1:
        lines += ["", f"Total: {_format_value('parameters', total)} parameters."]
    return lines + [""]


def _training_section(summary: Mapping[str, Any]) -> list[str]:
    """training_summary.json: its headline facts, the compressor comparison, then every other field."""
    if not summary:
        return []
    flat = _flatten(summary)
    headlines, used = _headlines(flat, _TRAINING_HEADLINES)
    lines = ["## Training", ""] + headlines + [""]
    compression = _compression_table(summary)
    if compression:  # shown as a table: its many leaves would crowd the table of other fields
        lines += compression
        used |= {key for key in flat if key.startswith("val_compression.")}
    other = _other_fields(flat, used)
    return lines + (table(("recorded in training_summary.json", "value"), other) + [""] if other else [])


def _transfer_section(report: Mapping[str, Any], classifier: Mapping[str, Any]) -> list[str]:
    """report.json (headline results, the top units, the comparison of methods, every other field) and
    classifier.json."""
    if not report and not classifier:
        return []
    lines = ["## Transfer results", ""]
    if report:
        flat = _flatten(report)
        headlines, used = _headlines(flat, _TRANSFER_HEADLINES, skip_none=True)
        lines += headlines
        units = [u.get("unit") for u in report.get("top_units") or [] if isinstance(u, dict)]
        if units:
            lines.append(f"- **Top units:** {literal(', '.join(map(str, units[:8])))}")
        lines += [""]
        comparison = _comparison_table(report)
        if comparison:  # shown as a table: the same figures as fields would repeat it
            lines += comparison
            used |= {key for key in flat if key.startswith("comparison.")}
        lines += table(("report.json", "value"), _other_fields(flat, used)) + [""]
    if classifier:
        lines += table(("classifier.json", "value"), _other_fields(_flatten(classifier), set())) + [""]
    return lines


def _headlines(flat: Mapping[str, Any], headlines, skip_none: bool = False) -> tuple[list[str], set[str]]:
    """One bullet per headline found under one of its names (the first found wins), and the keys shown."""
    lines, used = [], set()
    for label, aliases in headlines:
        key = next((alias for alias in aliases if alias in flat and not (skip_none and flat[alias] is None)), None)
        if key is not None:
            used.add(key)
            lines.append(f"- **{label}:** {literal(_format_value(key, flat[key]))}")
    return lines, used


def _other_fields(flat: Mapping[str, Any], used: set[str]) -> list[tuple]:
    rows = [(code(key), _format_value(key, value)) for key, value in flat.items() if key not in used]
    return rows[:_MAX_OTHER_ROWS]


def _files_section(files: Mapping[str, int], hugging_face_repo: str | None, code_files: tuple[str, ...]) -> list[str]:
    rows = [(code(path), f"{size:,}") for path, size in sorted(files.items())]
    lines = ["## Files", ""] + table(("file", "bytes"), rows)
    if hugging_face_repo is None:
        note = ("Every file's sha256 is in this version's manifest; `bytezoo hub pull` checks them all. The hub shares "
                "only data formats (safetensors, JSON, text, images): nothing in this version runs code when loaded.")
    else:
        note = ("Every file's sha256 is in `bytezoo-manifest.json`; `bytezoo hub pull` and `bytezoo.from_pretrained` "
                "check them all and load only data formats (safetensors, JSON, text, images).")
        if code_files:
            note += (f" The Python files ({', '.join(map(code, code_files))}) are the model's code, for "
                     "`trust_remote_code=True` where bytezoo is not installed; bytezoo never downloads them.")
    return lines + ["", note, ""]


def read_json_documents(directory: Path, paths) -> dict[str, Any]:
    """Parse the summary JSON files among ``paths`` (those a card uses); unreadable ones are skipped."""
    documents = {}
    for path in paths:
        if path in SUMMARY_FILES:
            try:
                documents[path] = json.loads((directory / path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
    return documents


def _comparison_table(report: Mapping[str, Any]) -> list[str]:
    """report.json's ``comparison`` (every method's test score at the same label counts) as a Markdown table with its
    caption, the cells the commands print (:func:`bytezoo.report_tables.comparison_cells`); ``[]`` when the report has
    none, compares nothing, or has a shape this version does not know (a card must still be written)."""
    comparison = report.get("comparison")
    cells = comparison_cells(comparison)
    if cells is None:
        return []
    header = ("method", *(f"{n:,} labels" for n in cells["columns"]))
    rows = [(label, *values) for label, values in cells["rows"]]
    # A bold lead-in, not a heading: the table of report.json's other fields follows in the same section.
    lines = ["**Compared at the same numbers of labels.** " + sentence(cells["caption"], ":"), ""]
    lines += table(header, rows) + [""]
    notes = [sentence(text) for text in (cells["footnote"], comparison.get("note")) if isinstance(text, str) and text]
    return lines + ([" ".join(notes), ""] if notes else [])


def _compression_table(summary: Mapping[str, Any]) -> list[str]:
    """The pretraining summary's validation bits per byte beside gzip, bz2, xz and zstd on the same held-out bytes
    (``val_compression``, written by :mod:`bytezoo.pretrain.compression`) as a Markdown table; ``[]`` without it."""
    compression = summary.get("val_compression")
    if not isinstance(compression, dict):
        return []
    compressors = compression.get("compressors")
    if not isinstance(compressors, dict) or not compressors:
        skipped = compression.get("skipped")
        return [f"Standard compressors on the held-out bytes: skipped ({literal(str(skipped))}).", ""] \
            if skipped else []
    rows = []
    if _is_number(summary.get("val_bpc")):
        rows.append(("this model (validation BPC)", _format_value("bpc", float(summary["val_bpc"])), ""))
    for name, entry in compressors.items():
        if not isinstance(entry, dict):
            continue
        bits = entry.get("bits_per_byte")
        size = entry.get("compressed_bytes")
        rows.append((f"{name} {entry.get('setting', '')}".strip(),
                     _format_value("bpc", float(bits)) if _is_number(bits) else "n/a",
                     f"{size:,}" if _is_count(size) else ""))
    raw = compression.get("raw_bytes")
    where = f"the same {raw:,} held-out bytes" if _is_count(raw) else "the same held-out bytes"
    lines = [f"**Compared with standard compressors.** Bits per byte on {where} (for a compressor, 8 × compressed "
             "size / raw size):", ""]
    lines += table(("", "bits per byte", "compressed bytes"), rows) + [""]
    note = compression.get("note")
    return lines + ([sentence(str(note)), ""] if note else [])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def _transformers_instructions(repo_id: str, tokenizer_files, has_code: bool) -> list[str]:
    remote = ", trust_remote_code=True" if has_code else ""
    imports = "from transformers import AutoModelForCausalLM" + (", AutoTokenizer" if tokenizer_files else "")
    snippet = ["```python", imports, "",
               f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", revision="main"{remote})  # or a tag']
    if tokenizer_files:
        snippet.append(f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", revision="main"{remote})')
    return snippet + ["```", ""]


def _loading_instructions(url, has_model, has_classifier, tokenizer_files, default_ref="latest") -> list[str]:
    where = redact_url(url) if url else "URL"
    other = "@<tag> / @<commit>" if default_ref == "main" else "@<tag> / @<version>"
    lines = ["```bash", f"bytezoo hub pull {where}@{default_ref} ./checkpoint   # or {other}", "```", ""]
    snippet = ["```python"]
    if has_model:
        snippet += ["import bytezoo", ""]
        snippet.append(f'model = bytezoo.from_pretrained("{where}")  # pulls and verifies once, then loads from the '
                       'cache')
        if tokenizer_files:
            snippet += ["", "from transformers import AutoTokenizer", "",
                        f'tokenizer = AutoTokenizer.from_pretrained(bytezoo.hub.resolve("{where}"))']
    if has_classifier:
        snippet += ([""] if has_model else []) + [
            "from bytezoo.transfer import SentimentPipeline",
            "",
            f'sentiment = SentimentPipeline.from_pretrained("{where}")',
        ]
    if not has_model and not has_classifier:
        snippet += ["import bytezoo", "", f'path = bytezoo.hub.pull("{where}")  # a local directory with the files']
    return lines + snippet + ["```", ""]


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of nested dicts as ``a.b.c`` keys; short lists of scalars are kept; secrets are dropped."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if _SECRET_KEY_RE.search(str(key)):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, list):
            if len(value) <= 8 and all(isinstance(item, (str, int, float, bool)) or item is None for item in value):
                flat[name] = ", ".join(map(str, value))
        else:
            flat[name] = value
    return flat


def _format_value(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):  # counts in the millions get separators and a short form; indices stay plain
        if abs(value) >= 10**6 or key == "parameters":
            return f"{value:,}" + (f" ({_human(value)})" if abs(value) >= 10**6 else "")
        return str(value)
    if isinstance(value, float):
        if "bpc" in key.lower() or "loss" in key.lower():
            return f"{value:.4f}"
        if abs(value) >= 10**6:
            return f"{value:,.0f} ({_human(value)})"
        return f"{value:.4g}"
    return redact_text(str(value))


def _human(count: float) -> str:
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= threshold:
            return f"{count / threshold:.2f}{suffix}"
    return str(count)
