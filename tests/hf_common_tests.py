"""transformers' own common model tests (``ModelTesterMixin``, ``ConfigTester``), from the source distribution of the
transformers version that is installed, fetched once into the environment.

Why fetched, not vendored: ``tests/test_modeling_common.py`` alone is 360 KB of Apache-2.0 code that changes with every
transformers release; the copy that matches the installed transformers is the one worth running (``run.py test
--latest`` and ``--oldest`` get theirs). The package index is reachable wherever the suite installs itself (a developer's
machine, CI), so ``pip download --no-binary :all: --no-deps transformers==<installed>`` fetches the sdist once
(≈ 14 s) into ``<environment>/bytezoo-test-cache/`` (or ``$BYTEZOO_TRANSFORMERS_TESTS``); without an index the tests
skip, saying so.

The sdist ships the top-level ``tests/*.py`` only. ``test_modeling_common.py`` imports
``.generation.test_utils.GenerationTesterMixin`` and ``.exporters.test_export.ExportTesterMixin``, and
``test_configuration_common.py`` imports ``.utils.test_configuration_utils.config_common_kwargs``, none of which is in
it (they live only in transformers' git repository, which CI cannot reach). Those three modules are written here as
one-line re-exports of bytezoo's own: :mod:`hf_generation_mixin` (the generation checks, in our words),
:mod:`hf_export_mixin` (a marker: the export checks need no download and live in test_zoo_hf_conventions.py) and
:func:`config_common_kwargs` below.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
import typing
import warnings
from pathlib import Path

import pytest

PACKAGE = "transformers_common_tests"  # the importable name of the fetched tests
FILES = ("test_modeling_common.py", "test_configuration_common.py")
SHIMS = {
    "generation/test_utils.py": "from hf_generation_mixin import GenerationTesterMixin  # noqa: F401\n",
    "exporters/test_export.py": "from hf_export_mixin import ExportTesterMixin  # noqa: F401\n",
    "utils/test_configuration_utils.py": "from hf_common_tests import config_common_kwargs  # noqa: F401\n",
}


def cache_root() -> Path:
    import transformers

    base = Path(os.environ.get("BYTEZOO_TRANSFORMERS_TESTS") or Path(sys.prefix) / "bytezoo-test-cache")
    return base / f"transformers-{transformers.__version__}"


def _fetch(root: Path) -> None:
    """The sdist's tests/*.py into ``root/PACKAGE``, written under a temporary name and moved into place (two pytest
    workers may fetch at once: the second rename finds the folder there and its copy is dropped)."""
    import transformers

    version = transformers.__version__
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as work:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
                                 "--disable-pip-version-check", f"transformers=={version}", "-d", work],
                                capture_output=True, text=True, timeout=600)
        archives = list(Path(work).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            errors = " ".join(line for line in result.stderr.splitlines() if "ERROR" in line)[:300]
            pytest.skip(f"transformers' common tests: could not fetch the transformers=={version} sdist from the package "
                        f"index ({errors or 'no archive'}); they run where the index is reachable", allow_module_level=True)
        staging = Path(work) / PACKAGE
        staging.mkdir()
        with tarfile.open(archives[0]) as archive:
            for name in FILES:
                member = archive.getmember(f"transformers-{version}/tests/{name}")
                (staging / name).write_bytes(archive.extractfile(member).read())
            license_member = archive.getmember(f"transformers-{version}/LICENSE")
            (staging / "LICENSE").write_bytes(archive.extractfile(license_member).read())
        (staging / "__init__.py").write_text(f"# transformers {version}'s tests/ (Apache-2.0, see LICENSE), fetched by "
                                            "bytezoo's tests/hf_common_tests.py\n")
        for path, text in SHIMS.items():
            target = staging / path
            target.parent.mkdir(exist_ok=True)
            (target.parent / "__init__.py").touch()
            target.write_text(text)
        try:
            os.rename(staging, root / PACKAGE)
        except OSError:
            if not (root / PACKAGE / FILES[0]).is_file():
                raise


def common_tests():
    """``(test_modeling_common, test_configuration_common)`` of the installed transformers, fetched on first use."""
    root = cache_root()
    if not (root / PACKAGE / FILES[-1]).is_file() or not all((root / PACKAGE / path).is_file() for path in SHIMS):
        _fetch(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    with warnings.catch_warnings():  # its marks (flash_attn_test, ...) are registered in transformers' own pytest set-up
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        try:
            return (importlib.import_module(f"{PACKAGE}.test_modeling_common"),
                    importlib.import_module(f"{PACKAGE}.test_configuration_common"))
        except ModuleNotFoundError as error:  # another transformers release's tests import a file its sdist lacks
            if not (error.name or "").startswith(PACKAGE):
                raise
            pytest.skip(f"transformers {root.name}'s common tests import {error.name}, which neither its sdist nor "
                        "hf_common_tests.py provides", allow_module_level=True)


def _other_value(value, annotation):
    """A value of ``annotation``'s type that differs from the default ``value``; None where none is obvious."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = options[0]
    if kind is bool:
        return not value if isinstance(value, bool) else True
    if kind is int:
        return (value or 0) + 3 if isinstance(value, int) else 3
    if kind is float:
        return (value or 0.0) + 0.25 if isinstance(value, (int, float)) else 0.25
    return None


def _common_kwargs() -> dict:
    """A non-default value for every field ``PreTrainedConfig`` declares that a model may carry (what
    ``ConfigTester.check_config_arguments_init`` sets, then reads back): booleans flipped, numbers moved, the dtype
    set; label maps, token ids of a vocabulary and names of other models left out, as transformers' own table does."""
    from transformers import PreTrainedConfig

    from bytezoo.zoo.configuration_utils import declared_fields

    hints = declared_fields(PreTrainedConfig)
    skipped = {"id2label", "label2id", "architectures", "finetuning_task", "problem_type", "tokenizer_class", "prefix",
               "pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id", "task_specific_params",
               "transformers_version", "name_or_path", "dtype"}
    kwargs = {"dtype": "float16"}
    for field in dataclasses.fields(PreTrainedConfig):
        if field.name.startswith("_") or field.name in skipped:
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        value = _other_value(default, hints.get(field.name, type(default)))
        if value is not None:
            kwargs[field.name] = value
    return kwargs


config_common_kwargs = _common_kwargs()
