"""Each model folder stands alone for ``trust_remote_code``, so the shared recurrent-LM contract is copied into it by
``python -m bytezoo.zoo.copies``. The copies must be exactly what the generator writes, and every family must use its
own copy (not a private variant of the plumbing)."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from bytezoo.zoo import copies

FAMILIES = copies.family_folders()


def test_there_is_a_copy_for_every_family_and_the_kernel_reference():
    names = {folder.name for folder in FAMILIES}
    assert {"mlstm", "lstm"} <= names
    planned = {copy.relative_to(copies.PACKAGE).as_posix() for _, copy in copies.planned_copies()}
    assert {f"zoo/{name}/recurrent_lm.py" for name in names} | {"zoo/mlstm/mlstm_ref.py"} == planned


def test_every_copy_is_byte_identical_to_what_the_generator_writes():
    result = subprocess.run([sys.executable, "-m", "bytezoo.zoo.copies", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_names_a_stale_copy(tmp_path, monkeypatch):
    source = tmp_path / "bytezoo" / "zoo" / "recurrent_lm.py"
    copy = tmp_path / "bytezoo" / "zoo" / "toy" / "recurrent_lm.py"
    copy.parent.mkdir(parents=True)
    source.write_text("X = 1\n")
    monkeypatch.setattr(copies, "PACKAGE", tmp_path / "bytezoo")
    monkeypatch.setattr(copies, "planned_copies", lambda: [(source, copy)])
    assert copies.stale_copies() == [copy]  # missing
    assert copies.write_copies() == [copy] and copies.stale_copies() == []
    copy.write_text(copy.read_text() + "# an edit by hand\n")
    assert copies.main(["--check"]) == 1


@pytest.mark.parametrize("folder", FAMILIES, ids=lambda f: f.name)
def test_the_model_file_takes_its_plumbing_from_its_own_copy(folder):
    """No family re-defines the contract: the causal LM and the body come from the copied ``recurrent_lm``."""
    modeling = next(folder.glob("modeling_*.py"))
    tree = ast.parse(modeling.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
                and node.module == "recurrent_lm" for alias in node.names}
    assert {"RecurrentForCausalLM", "RecurrentModel", "RecurrentPreTrainedModel"} <= imported
    model_classes = [node for node in tree.body if isinstance(node, ast.ClassDef)
                     and any(getattr(base, "id", "").endswith(("PreTrainedModel", "Model", "ForCausalLM")) for base in node.bases)]
    assert len(model_classes) >= 3  # the family's PreTrainedModel, body and causal LM
    defined = {item.name for cls in model_classes for item in cls.body if isinstance(item, ast.FunctionDef)}
    plumbing = {"prepare_inputs_for_generation", "_update_model_kwargs_for_generation", "_reorder_cache",
                "_expand_inputs_for_generation", "forward"}
    assert not defined & plumbing, f"{modeling.name} re-defines {sorted(defined & plumbing)}: change recurrent_lm.py"
