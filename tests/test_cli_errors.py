"""One error model: every user-facing error is a ByteZooError, and `bytezoo` prints it as one line with exit code 2
(`--debug` or BYTEZOO_DEBUG=1: the traceback too). The commands' own tests check their messages; this file checks
the model itself and the commands without a test file of their own here (hub naming, data, convert, pretrain)."""
from __future__ import annotations

import pytest

from bytezoo.cli import main
from bytezoo.errors import ByteZooError


def run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exited:  # argparse's errors exit from the parser
        code = exited.code
    return code, capsys.readouterr().err.strip()


def user_error_classes():
    from bytezoo.data.errors import DatasetError
    from bytezoo.data.formats import SourceError
    from bytezoo.errors import InvalidArgumentError
    from bytezoo.hub.errors import HubError, IntegrityError, NotFoundError
    from bytezoo.pretrain.trainer import NonFiniteLossError, PretrainConfigError
    from bytezoo.training.checkpoint import ResumeError
    from bytezoo.training.launch import LaunchError
    from bytezoo.transfer.classifier import ClassifierFormatError, ClassifierNotFoundError
    from bytezoo.transfer.experiment import OutputFolderError
    from bytezoo.transfer.metrics import SingleClassError
    from bytezoo.transfer.pipeline import PipelineError
    from bytezoo.zoo.configuration_utils import ConfigError
    from bytezoo.zoo.convert import ConversionError
    from bytezoo.zoo.modeling_utils import CheckpointError

    # (class, the built-in kind callers already catch it as)
    return [
        (HubError, Exception), (NotFoundError, LookupError), (IntegrityError, Exception), (SourceError, ValueError),
        (DatasetError, ValueError), (ConversionError, ValueError), (CheckpointError, ValueError),
        (ConfigError, ValueError), (ResumeError, ValueError), (LaunchError, RuntimeError),
        (NonFiniteLossError, RuntimeError), (PretrainConfigError, ValueError), (SingleClassError, ValueError),
        (ClassifierFormatError, ValueError), (ClassifierNotFoundError, FileNotFoundError), (PipelineError, ValueError),
        (OutputFolderError, ValueError), (InvalidArgumentError, ValueError),
    ]


def test_every_user_facing_error_is_a_bytezoo_error_and_keeps_its_builtin_kind():
    for cls, kind in user_error_classes():
        assert issubclass(cls, ByteZooError) and issubclass(cls, kind), cls
    import bytezoo.data
    from bytezoo.data import labelled
    from bytezoo.data.errors import ChecksumMismatchError, DatasetError, UnsafeArchiveError

    # one DatasetError: what the labelled-set reader raises is the data layer's, as for downloads and archives
    assert labelled.DatasetError is bytezoo.data.DatasetError is DatasetError
    assert issubclass(ChecksumMismatchError, DatasetError) and issubclass(UnsafeArchiveError, DatasetError)


def test_option_errors_are_one_line_naming_help(capsys):
    code, error = run(capsys, "transfer", "--model", "m", "--train", "t.csv")
    assert code == 2 and error == "bytezoo transfer: error: the following arguments are required: --output (see bytezoo transfer --help)"
    code, error = run(capsys, "nope")
    assert code == 2 and len(error.splitlines()) == 1 and error.startswith("bytezoo: error: argument COMMAND: invalid choice: 'nope'")
    code, error = run(capsys, "hub", "push", "--tag")
    assert code == 2 and len(error.splitlines()) == 1 and error.startswith("bytezoo hub push: error:")


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "mlstm"}')
    return folder


def test_hub_push_refuses_an_at_sign_in_the_repository_name(tmp_path, model_dir, capsys):
    hub = tmp_path / "hub"
    code, error = run(capsys, "hub", "push", str(model_dir), f"{hub}/x@v1")
    assert code == 2 and len(error.splitlines()) == 1
    assert "a repository name may not contain '@'" in error and f"push to '{hub}/x' with --tag v1" in error
    assert not hub.exists()  # no repository 'x@v1' was created
    code, error = run(capsys, "hub", "push", str(model_dir), f"{hub}/x", "--tag", "bad tag")
    assert code == 2 and error.startswith("bytezoo hub push: error: invalid tag 'bad tag'") and len(error.splitlines()) == 1
    code, error = run(capsys, "hub", "pull", f"{hub}/x@no tag")
    assert code == 2 and "invalid hub reference" in error and len(error.splitlines()) == 1


def test_data_and_convert_errors_are_one_line(tmp_path, capsys):
    code, error = run(capsys, "data", "verify", str(tmp_path))
    assert code == 2 and error.startswith("bytezoo data verify: error:") and "not a packed corpus" in error
    assert len(error.splitlines()) == 1
    code, error = run(capsys, "data", "pack", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "p"), "--no-progress")
    assert code == 2 and error.startswith("bytezoo data pack: error: no data at") and len(error.splitlines()) == 1
    code, error = run(capsys, "convert", "openai", str(tmp_path / "nothing"), str(tmp_path / "out"))
    assert code == 2 and error.startswith("bytezoo convert openai: error:") and len(error.splitlines()) == 1
    code, error = run(capsys, "convert", "nvidia", str(tmp_path / "nothing.pt"), str(tmp_path / "out"))
    assert code == 2 and error.startswith("bytezoo convert nvidia: error:") and len(error.splitlines()) == 1


def test_pretrain_option_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text " * 50)
    argv = ["pretrain", "--data", str(corpus), "--output", str(tmp_path / "o"), "--max-steps", "1"]
    for extra, message in ((["--warmup", "-1"], "warmup must be >= 0"),
                           (["--model-config", "hidden_size=0"], "--model-config of mlstm-256: MLSTMConfig.hidden_size must be >= 1")):
        code, error = run(capsys, *argv, *extra)
        assert code == 2 and len(error.splitlines()) == 1 and message in error, error
    code, error = run(capsys, "--debug", *argv, "--warmup", "-1")  # --debug before the subcommand, too
    assert code == 2 and error.startswith("Traceback") and "PretrainConfigError" in error
    assert error.splitlines()[-1].startswith("bytezoo pretrain: error: warmup must be >= 0")
