"""Start-up: ``import bytezoo`` and every ``--help`` import none of the heavy libraries, ``python -m bytezoo`` is the
``bytezoo`` command, and the Auto classes know bytezoo's models whatever the order of imports. Each case needs a
fresh interpreter. (Times are measured in benchmarks/bench_startup.py, not here.)"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "accelerate", "sklearn", "matplotlib", "fsspec", "safetensors")
BYTEZOO = Path(sys.executable).with_name("bytezoo")


def run_python(code: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def heavy_modules_after(code: str) -> list[str]:
    out = run_python(textwrap.dedent(code) + f"\nimport sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_import_bytezoo_imports_no_heavy_library():
    assert heavy_modules_after("import bytezoo; bytezoo.__version__; dir(bytezoo)") == []


@pytest.mark.slow
@pytest.mark.parametrize("subcommand", [[], ["pretrain"], ["transfer"], ["classify"], ["generate"], ["hub", "push"],
                                        ["models"], ["convert", "openai"], ["data", "list"], ["demo"]])
def test_help_imports_no_heavy_library(subcommand):
    code = f"""
    import contextlib, io
    from bytezoo.cli import main
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        main({[*subcommand, "--help"]!r})
    assert "usage:" in out.getvalue(), out.getvalue()
    """
    assert heavy_modules_after(code) == []


@pytest.mark.slow
def test_python_m_bytezoo_is_the_bytezoo_command():
    runs = [subprocess.run(command, capture_output=True, text=True, timeout=120)
            for command in ([str(BYTEZOO), "--help"], [sys.executable, "-m", "bytezoo", "--help"])]
    assert runs[0].returncode == runs[1].returncode == 0
    assert runs[0].stdout.replace("bytezoo", "X") == runs[1].stdout.replace("__main__.py", "X").replace("bytezoo", "X")
    version = subprocess.run([sys.executable, "-m", "bytezoo", "--version"], capture_output=True, text=True, timeout=120)
    assert version.stdout.startswith("bytezoo ")


SAVE_CHECKPOINT = """
import bytezoo
model = bytezoo.create_model("mlstm-256", hidden_size=8, embedding_size=4)
model.save_pretrained({path!r})
bytezoo.ByteTokenizer().save_pretrained({path!r})
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("startup-checkpoint"))
    run_python(SAVE_CHECKPOINT.format(path=path))
    return path


LOAD_WITH_AUTO = """
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
assert type(AutoConfig.from_pretrained({path!r})).__name__ == "MLSTMConfig"
model = AutoModelForCausalLM.from_pretrained({path!r})
assert type(model).__module__ == "bytezoo.zoo.mlstm.modeling_mlstm", type(model).__module__
assert type(AutoTokenizer.from_pretrained({path!r})).__name__ == "ByteTokenizer"
print("loaded")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "before",
    [
        "import bytezoo",  # the usual order
        "import transformers, torch; from transformers import PreTrainedModel, GenerationMixin; import bytezoo",
        "from transformers import AutoModelForCausalLM, AutoTokenizer, AutoConfig; import bytezoo",
        "import bytezoo; from transformers import pipeline",  # pipelines load every Auto module at once
        "import bytezoo; from transformers import PreTrainedModel",  # configuration_auto loads inside modeling_utils
    ],
)
def test_auto_classes_know_bytezoo_whatever_the_import_order(before, checkpoint):
    assert "loaded" in run_python(before + "\n" + LOAD_WITH_AUTO.format(path=checkpoint)).stdout


@pytest.mark.slow
def test_a_checkpoint_saved_before_any_auto_class_loaded_carries_its_code(tmp_path):
    """save_pretrained right after create_model (transformers' Auto modules never imported) still writes the
    model's code and `auto_map`, so trust_remote_code can load it."""
    run_python("import sys\n" + SAVE_CHECKPOINT.format(path=str(tmp_path))
               + "\nassert 'transformers.models.auto.modeling_auto' not in sys.modules, 'the case under test did not arise'")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_mlstm.MLSTMConfig", "AutoModel": "modeling_mlstm.MLSTMModel",
                                  "AutoModelForCausalLM": "modeling_mlstm.MLSTMForCausalLM"}
    assert (tmp_path / "modeling_mlstm.py").is_file() and (tmp_path / "configuration_mlstm.py").is_file()
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"]["AutoTokenizer"][0].endswith("ByteTokenizer")
