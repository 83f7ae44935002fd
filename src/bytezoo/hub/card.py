"""Model cards: a README.md for each version, written from whatever run summaries the directory holds.

Inputs, all optional: ``config.json`` (architecture), ``*.safetensors`` headers (parameter counts, read without
loading tensors), tokenizer files, ``training_summary.json`` (written by pretraining and fine-tuning; pretraining's
validation BPC beside standard compressors becomes a table), ``report.json`` (written by ``bytezoo transfer`` and by
``bytezoo finetune --test``; its comparison of methods at the same label counts becomes a table) and
``classifier.json`` (written by sentiment transfer). Unknown keys are shown too, so a summary that grows new fields
needs no change here. The card carries no timestamps, so pushing the same files again gives the same version.

String values pass through :func:`~bytezoo.redaction.redact_text`, and keys that look like secrets are left
out, so a training summary that recorded ``s3://key:secret@bucket`` does not leak into a card. Every value read from
the folder's files (label names, keys, model types) is escaped for Markdown and HTML (``<script>``, ``[link](…)``,
``**``, a backtick closing a code span, a ``|`` ending a table cell), so it shows as written and never as markup; tags
in the metadata block keep only letters, digits, ``.``, ``_`` and ``-``.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from bytezoo.redaction import redact_text, redact_url

from .safety import count_parameters

GENERATED_MARKER = "<!-- bytezoo-hub: generated model card; delete this line to keep your edits on the next push -->"

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
    config = _as_dict(json_documents.get("config.json"))
    summary = _as_dict(json_documents.get("training_summary.json"))
    report = _as_dict(json_documents.get("report.json"))
    classifier = _as_dict(json_documents.get("classifier.json"))
    has_model = "config.json" in files
    has_classifier = "classifier.safetensors" in files or bool(classifier)
    model_type = str(config.get("model_type", "")) if config else ""

    tags = ["bytezoo", "byte-level", _TAG_UNSAFE_RE.sub("", model_type)] + (["sentiment-analysis"] if has_classifier else [])
    if hugging_face_repo is None:
        lines = [GENERATED_MARKER, "---", "library_name: bytezoo"]
        lines += ["tags:"] + [f"- {tag}" for tag in tags if tag] + ["---", "", f"# {_clean(name)}", ""]
    else:  # the Hub reads the metadata block only at the very top
        tags += ["custom_code"] if code_files else []
        lines = ["---", f"library_name: {'transformers' if has_model else 'bytezoo'}"]
        lines += ["tags:"] + [f"- {tag}" for tag in tags if tag]
        lines += ["---", GENERATED_MARKER, "", f"# {_clean(name)}", ""]
    description = _MODEL_DESCRIPTIONS.get(model_type, f"a byte-level {_code(model_type)} language model" if model_type
                                          else "files shared through the bytezoo hub")
    if has_classifier and not has_model:
        sentence = "This version holds a sentiment classifier on byte-level language-model features"
    else:
        sentence = f"This version holds {description}"
        if has_classifier:
            sentence += ", with a sentiment classifier trained on its features"
    lines += [sentence + ".", ""]

    if config:
        rows = [(label, config[key]) for key, label in _ARCHITECTURE_KEYS if key in config]
        if "architectures" in config:
            rows.insert(0, ("class", ", ".join(map(str, config["architectures"] or []))))
        lines += ["## Architecture", ""] + _table(("", "value"), rows) + [""]

    if safetensors_headers:
        lines += ["## Parameters", ""]
        rows = []
        total = 0
        for path, header in sorted(safetensors_headers.items()):
            count = count_parameters(header)
            total += count
            dtypes = sorted({entry["dtype"] for key, entry in header.items() if key != "__metadata__"})
            tensors = sum(1 for key in header if key != "__metadata__")
            rows.append((_code(path), _format_value("parameters", count), tensors, ", ".join(dtypes)))
        lines += _table(("file", "parameters", "tensors", "dtypes"), rows)
        if len(rows) > 1:
            lines += ["", f"Total: {_format_value('parameters', total)} parameters."]
        lines += [""]

    tokenizer_files = sorted(path for path in files if PurePosixPath(path).name.startswith(("tokenizer", "special_tokens")))
    if tokenizer_files:
        lines += ["## Tokenizer", "", "Bytes in, bytes out: " + ", ".join(map(_code, tokenizer_files)) + ".", ""]

    if summary:
        lines += ["## Training", ""]
        flat = _flatten(summary)
        used = set()
        for label, aliases in _TRAINING_HEADLINES:
            key = next((alias for alias in aliases if alias in flat), None)
            if key is not None:
                used.add(key)
                lines.append(f"- **{label}:** {_clean(_format_value(key, flat[key]))}")
        lines += [""]
        compression = _compression_table(summary)
        if compression:  # shown as a table: its many leaves would crowd the table of other fields
            lines += compression
            used |= {key for key in flat if key.startswith("val_compression.")}
        other = [(_code(key), _format_value(key, value)) for key, value in flat.items() if key not in used]
        if other:
            lines += _table(("recorded in training_summary.json", "value"), other[:_MAX_OTHER_ROWS]) + [""]

    if report or classifier:
        lines += ["## Transfer results", ""]
        if report:
            flat = _flatten(report)
            used = set()
            for label, aliases in _TRANSFER_HEADLINES:
                key = next((alias for alias in aliases if flat.get(alias) is not None), None)
                if key is not None:
                    used.add(key)
                    lines.append(f"- **{label}:** {_clean(_format_value(key, flat[key]))}")
            units = [u.get("unit") for u in report.get("top_units") or [] if isinstance(u, dict)]
            if units:
                lines.append(f"- **Top units:** {_clean(', '.join(map(str, units[:8])))}")
            lines += [""]
            comparison = _comparison_table(report)
            if comparison:  # shown as a table: the same figures as fields would repeat it
                lines += comparison
                used |= {key for key in flat if key.startswith("comparison.")}
            rows = [(_code(key), _format_value(key, value)) for key, value in flat.items() if key not in used]
            lines += _table(("report.json", "value"), rows[:_MAX_OTHER_ROWS]) + [""]
        if classifier:
            rows = [(_code(key), _format_value(key, value)) for key, value in _flatten(classifier).items()]
            lines += _table(("classifier.json", "value"), rows[:_MAX_OTHER_ROWS]) + [""]

    lines += ["## How to load", ""]
    if hugging_face_repo is not None and has_model:
        lines += _transformers_instructions(hugging_face_repo, tokenizer_files, bool(code_files))
    lines += _loading_instructions(url, has_model, has_classifier, tokenizer_files,
                                   default_ref="main" if hugging_face_repo else "latest")

    lines += ["## Files", ""]
    lines += _table(("file", "bytes"), [(_code(path), f"{size:,}") for path, size in sorted(files.items())])
    if hugging_face_repo is None:
        lines += [
            "",
            "Every file's sha256 is in this version's manifest; `bytezoo hub pull` checks them all. The hub shares "
            "only data formats (safetensors, JSON, text, images): nothing in this version runs code when loaded.",
            "",
        ]
    else:
        lines += [
            "",
            "Every file's sha256 is in `bytezoo-manifest.json`; `bytezoo hub pull` and `bytezoo.from_pretrained` "
            "check them all and load only data formats (safetensors, JSON, text, images)."
            + (f" The Python files ({', '.join(map(_code, code_files))}) are the model's code, for "
               "`trust_remote_code=True` where bytezoo is not installed; bytezoo never downloads them."
               if code_files else ""),
            "",
        ]
    return "\n".join(lines)


def read_json_documents(directory: Path, paths) -> dict[str, Any]:
    """Parse the summary JSON files among ``paths`` (those a card uses); unreadable ones are skipped."""
    wanted = {"config.json", "training_summary.json", "report.json", "classifier.json"}
    documents = {}
    for path in paths:
        if path in wanted:
            try:
                documents[path] = json.loads((directory / path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
    return documents


def _comparison_table(report: Mapping[str, Any]) -> list[str]:
    """The report's ``comparison`` (transfer and fine-tuning reports: every method at the same label counts) as a
    Markdown table with its caption, through :func:`bytezoo.transfer.comparison.table_cells`, the cells the commands
    print; ``[]`` when the report has none, compares nothing, or has a shape this version does not know."""
    comparison = report.get("comparison")
    if not isinstance(comparison, dict):
        return []
    from bytezoo.transfer.comparison import table_cells

    try:
        cells = table_cells(comparison)
        if cells is None:
            return []
        header = ("method", *(f"{int(n):,} labels" for n in cells["columns"]))
        rows = [(label, *values) for label, values in cells["rows"]]
    except (KeyError, TypeError, ValueError, AttributeError):  # a report of another version: a card must still be written
        return []
    # A bold lead-in, not a heading: the table of report.json's other fields follows in the same section.
    lines = ["**Compared at the same numbers of labels.** " + _sentence(cells["caption"], ":"), ""]
    lines += _table(header, rows) + [""]
    notes = [_sentence(text) for text in (cells["footnote"], comparison.get("note")) if isinstance(text, str) and text]
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
        return [f"Standard compressors on the held-out bytes: skipped ({_clean(str(skipped))}).", ""] if skipped else []
    rows = []
    if _is_number(summary.get("val_bpc")):
        rows.append(("this model (validation BPC)", _format_value("bpc", float(summary["val_bpc"])), ""))
    for name, entry in compressors.items():
        if not isinstance(entry, dict):
            continue
        bits = entry.get("bits_per_byte")
        size = entry.get("compressed_bytes")
        rows.append((f"{name} {entry.get('setting', '')}".strip(), _format_value("bpc", float(bits)) if _is_number(bits) else "n/a",
                     f"{size:,}" if isinstance(size, int) and not isinstance(size, bool) else ""))
    raw = compression.get("raw_bytes")
    where = f"the same {raw:,} held-out bytes" if isinstance(raw, int) and not isinstance(raw, bool) else "the same held-out bytes"
    lines = [f"**Compared with standard compressors.** Bits per byte on {where} (for a compressor, 8 × compressed "
             "size / raw size):", ""]
    lines += _table(("", "bits per byte", "compressed bytes"), rows) + [""]
    note = compression.get("note")
    return lines + ([_sentence(str(note)), ""] if note else [])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def _sentence(text: str, end: str = ".") -> str:
    """``text`` as one line of Markdown starting with a capital and ending with ``end``."""
    text = _clean(text).rstrip(".:; ")
    return text[:1].upper() + text[1:] + end


def _transformers_instructions(repo_id: str, tokenizer_files, has_code: bool) -> list[str]:
    remote = ", trust_remote_code=True" if has_code else ""
    imports = "from transformers import AutoModelForCausalLM" + (", AutoTokenizer" if tokenizer_files else "")
    code = ["```python", imports, "", f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", revision="main"{remote})  # or a tag']
    if tokenizer_files:
        code.append(f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", revision="main"{remote})')
    return code + ["```", ""]


def _loading_instructions(url, has_model, has_classifier, tokenizer_files, default_ref="latest") -> list[str]:
    where = redact_url(url) if url else "URL"
    other = "@<tag> / @<commit>" if default_ref == "main" else "@<tag> / @<version>"
    lines = ["```bash", f"bytezoo hub pull {where}@{default_ref} ./checkpoint   # or {other}", "```", ""]
    code = ["```python"]
    if has_model:
        code += ["import bytezoo", ""]
        code.append(f'model = bytezoo.from_pretrained("{where}")  # pulls and verifies once, then loads from the cache')
        if tokenizer_files:
            code += ["", "from transformers import AutoTokenizer", "",
                     f'tokenizer = AutoTokenizer.from_pretrained(bytezoo.hub.resolve("{where}"))']
    if has_classifier:
        code += ([""] if has_model else []) + [
            "from bytezoo.transfer import SentimentPipeline",
            "",
            f'sentiment = SentimentPipeline.from_pretrained("{where}")',
        ]
    if not has_model and not has_classifier:
        code += ["import bytezoo", "", f'path = bytezoo.hub.pull("{where}")  # a local directory with the files']
    return lines + code + ["```", ""]


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


class _Markdown(str):
    """Text that is Markdown already (a code span made by :func:`_code`): table cells take it as it is."""


_MARKDOWN_SPECIAL_RE = re.compile(r"([\\`*_\[\]|~])")  # what starts markup mid-line (< > & are HTML-escaped)
_TAG_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]")


def _clean(text: str) -> str:
    """One line of text from a file, shown literally: HTML escaped (``<script>`` is text) and Markdown's special
    characters backslash-escaped (no emphasis, link, heading or table cell can start inside it)."""
    text = html.escape(" ".join(str(text).split())[:300], quote=False)
    return _MARKDOWN_SPECIAL_RE.sub(r"\\\1", text)


def _code(text: str) -> _Markdown:
    """``text`` as an inline code span (taken literally by Markdown renderers); a backtick in it, which would end the
    span, becomes a quote, and a ``|``, which would end a table cell, is escaped."""
    text = " ".join(str(text).split())[:300].replace("`", "'").replace("|", "\\|")
    return _Markdown(f"`{text}`")


def _table(header: tuple, rows: list[tuple]) -> list[str]:
    def cell(value) -> str:
        return value if isinstance(value, _Markdown) else _clean(str(value))

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return lines
