"""run.py, the README's two set-up commands: the tested environment is what the suite runs in, the constraints files
fit pyproject.toml's ranges, and the bad cases (a constraints file that does not fit, no network for --latest) end in
a clear line without touching the tested environment. pip is replaced by a recorder here: nothing is installed."""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_py():
    spec = importlib.util.spec_from_file_location("bytezoo_run_py", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def declared_requirements() -> dict[str, Requirement]:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return {re.sub(r"[-_.]+", "-", Requirement(r).name).lower(): Requirement(r) for r in requirements}


@pytest.mark.parametrize("name", ["cpu.txt", "gpu.txt"])
def test_constraints_fit_the_ranges_in_pyproject(run_py, name):
    pins = run_py.read_constraints(ROOT / "constraints" / name)
    declared = declared_requirements()
    checked = 0
    for package, line in pins.items():
        pinned = Requirement(line)
        assert len(pinned.specifier) == 1 and next(iter(pinned.specifier)).operator == "==", f"{name}: {line} is not a pin"
        if package in declared:
            pin_version = Version(next(iter(pinned.specifier)).version)
            assert declared[package].specifier.contains(pin_version, prereleases=True), (
                f"{name} pins {line}, outside pyproject.toml's {declared[package]}"
            )
            checked += 1
    assert checked >= 5


def test_the_cpu_freeze_pins_every_dependency(run_py):
    pins = run_py.read_constraints(ROOT / "constraints" / "cpu.txt")
    missing = [name for name, req in declared_requirements().items()
               if name not in pins and (req.marker is None or req.marker.evaluate())]
    assert missing == [], f"constraints/cpu.txt lacks {missing}: refresh it with `python3 run.py lock`"
    assert pins["torch"].endswith("+cpu"), "the CPU freeze must hold a CPU build of torch, never a CUDA one"


def test_the_gpu_stack_is_the_one_the_gpu_machines_hold(run_py):
    pins = run_py.read_constraints(ROOT / "constraints" / "gpu.txt")
    assert {pins[n] for n in ("torch", "transformers", "accelerate", "triton")} == {
        "torch==2.11.0", "transformers==5.17.0", "accelerate==1.15.0", "triton==3.6.0"}


@pytest.mark.skipif(not os.environ.get("BYTEZOO_CONSTRAINTS"), reason="not run by `run.py test` in its tested .venv")
def test_the_suite_runs_on_exactly_the_tested_versions(run_py):
    pins = run_py.read_constraints(Path(os.environ["BYTEZOO_CONSTRAINTS"]))
    wrong = {}
    for name, line in pins.items():
        want = line.split("==", 1)[1]
        try:
            have = version(name)
        except PackageNotFoundError:
            continue  # a pin for a package that only another platform's marker installs
        if Version(have) != Version(want):
            wrong[name] = (have, want)
    assert wrong == {}, f"installed != {os.environ['BYTEZOO_CONSTRAINTS']}: {wrong}"


def test_oldest_pins_the_lower_bounds(run_py):
    assert run_py.lower_bounds(("transformers", "accelerate")) == ["transformers==5.17", "accelerate==1.15"]


class PipRecorder:
    """Stands in for run.py's pip(): records each call and fails the ones ``fails`` picks."""

    def __init__(self, fails, output: str = ""):
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.fails, self.output = fails, output

    def __call__(self, env, *args, capture=False):
        self.calls.append((env.name, args))
        code = 1 if self.fails(args) else 0
        return CompletedProcess(args, code, stdout=self.output if code else "")


@pytest.fixture
def sandbox(run_py, monkeypatch, tmp_path):
    """run.py with its environments under tmp_path, no venv creation, torch present, no GPU."""
    envs = {name: run_py.Environment(name, tmp_path / f"venv-{name}") for name in ("main", "latest", "oldest")}
    for env in envs.values():
        env.bin.mkdir(parents=True)
        env.python.write_text("")  # "exists": no venv is created
    monkeypatch.setattr(run_py, "ENVIRONMENTS", envs)
    monkeypatch.setattr(run_py, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(run_py, "installed_torch", lambda env: "2.13.0+cpu")
    monkeypatch.setattr(run_py, "create", lambda env, inherit_site_packages: pytest.fail("no venv should be created"))
    return envs


def test_constraints_that_do_not_fit_warn_by_name_then_use_the_ranges(run_py, sandbox, monkeypatch, capsys):
    error = "ERROR: No matching distribution found for numpy==2.4.6"
    pip = PipRecorder(fails=lambda args: "-c" in args, output=f"some pip chatter\n{error}\n")
    monkeypatch.setattr(run_py, "pip", pip)
    run_py.ensure(sandbox["main"])
    out = capsys.readouterr().out
    assert "WARNING: constraints/cpu.txt does not fit Python" in out and error in out
    assert "NOT the tested one" in out
    installs = [args for _, args in pip.calls if "-e" in args]
    assert "-c" in installs[0] and "-c" not in installs[1]  # first with the file, then the ranges
    assert sandbox["main"].stamp.is_file() and not sandbox["main"].applied_constraints.exists()


def test_fitting_constraints_are_recorded_for_the_suite(run_py, sandbox, monkeypatch):
    monkeypatch.setattr(run_py, "pip", PipRecorder(fails=lambda args: False))
    run_py.ensure(sandbox["main"])
    assert sandbox["main"].applied_constraints.read_text() == str(ROOT / "constraints" / "cpu.txt")


def test_a_changed_constraints_file_reinstalls(run_py, sandbox, monkeypatch, tmp_path):
    pip = PipRecorder(fails=lambda args: False)
    monkeypatch.setattr(run_py, "pip", pip)
    constraints = tmp_path / "cpu.txt"
    constraints.write_text("numpy==2.4.6\n")
    monkeypatch.setattr(run_py, "CPU_CONSTRAINTS", constraints)
    run_py.ensure(sandbox["main"])
    first = len(pip.calls)
    run_py.ensure(sandbox["main"])
    assert len(pip.calls) == first  # unchanged: nothing to do
    constraints.write_text("numpy==2.4.7\n")
    run_py.ensure(sandbox["main"])
    assert len(pip.calls) > first


@pytest.mark.parametrize("name", ["latest", "oldest"])
def test_without_network_the_other_environments_stop_with_one_line_and_leave_main_alone(run_py, sandbox, monkeypatch,
                                                                                        name):
    pip = PipRecorder(fails=lambda args: True, output="ERROR: Could not find a version (network unreachable)\n")
    monkeypatch.setattr(run_py, "pip", pip)
    main_files = sorted(p.name for p in sandbox["main"].path.rglob("*"))
    with pytest.raises(run_py.SetupError, match=rf"could not install into venv-{name} .*venv-main, the tested "
                                                r"environment, is untouched"):
        run_py.ensure(sandbox[name])
    assert {env for env, _ in pip.calls} == {name}
    assert sorted(p.name for p in sandbox["main"].path.rglob("*")) == main_files
    assert not sandbox[name].stamp.exists()  # the next run tries again


def test_latest_upgrades_everything_but_holds_torch(run_py, sandbox, monkeypatch):
    pip = PipRecorder(fails=lambda args: False)
    monkeypatch.setattr(run_py, "pip", pip)
    held = []
    real_ensure_pip = pip.__call__

    def record_hold(env, *args, capture=False):
        if "-c" in args:
            held.append(Path(args[args.index("-c") + 1]).read_text())
        return real_ensure_pip(env, *args, capture=capture)

    monkeypatch.setattr(run_py, "pip", record_hold)
    run_py.ensure(sandbox["latest"])
    install = next(args for _, args in pip.calls if "-e" in args)
    assert "--upgrade" in install and "eager" in install
    assert held == ["torch==2.13.0+cpu\n"]


def test_one_of_latest_and_oldest(run_py):
    with pytest.raises(run_py.SetupError, match="not both"):
        run_py.main(["test", "--latest", "--oldest"])
