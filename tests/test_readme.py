"""The README works as written: its Python examples run, and its shell commands, run as
their Python equivalents, do what it says (on the CPU: the serve command's arguments
select FLEXPREFILL, each documented ``--additional-config`` resolves, the model command
writes the checkpoint folder it prints)."""

import json
import re
import shlex
from pathlib import Path

from vllm.engine.arg_utils import EngineArgs
from vllm.entrypoints.openai.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.v1.attention.backends.registry import AttentionBackendEnum
from vllm.v1.sample.logits_processor import (
    _load_logitsprocs_by_fqcns as load_processors,
)

from vllm_flexprefill import models
from vllm_flexprefill.plugin import resolve_config
from vllm_flexprefill.request_settings import RequestSettings

PROCESSOR = "vllm_flexprefill.request_settings:RequestSettings"

README = Path(__file__).resolve().parents[1] / "README.md"
TINY_MODEL = Path(__file__).parent / "data" / "tiny-llama"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def shell_commands() -> list[str]:
    """Every command line of the README's shell blocks (comments left out)."""
    lines = [line.strip() for block in blocks("bash") for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_functional_api_example_runs():
    (example,) = [b for b in blocks("python") if "flex_prefill_attention(" in b]
    scope = {}
    exec(compile(example, "README.md", "exec"), scope)
    assert scope["out"].shape == scope["q"].shape
    assert len(scope["stats"]) == 2 and scope["stats"][1].block_mask.shape == (
        32,
        9,
        24,
    )
    # as its comments say: sparse, each head by its own pattern
    for request in scope["stats"]:
        assert set(request.pattern) == {"vertical_slash", "query_aware"}
        assert 0.2 < request.density.mean() < 0.7


def test_the_serve_commands_select_flexprefill():
    """The quickstart's, and the per-request settings' with its logits processor."""
    served = [c for c in shell_commands() if c.startswith("vllm serve")]
    assert len(served) == 2
    for serve in served:
        _, _, model, *options = shlex.split(serve)
        assert model == "$MODEL"  # the folder the model command printed
        parser = make_arg_parser(FlexibleArgumentParser())
        argv = ["--model", str(TINY_MODEL), *options, "--dtype", "half"]
        config = EngineArgs.from_cli_args(
            parser.parse_args(argv)
        ).create_engine_config()
        assert config.attention_config.backend is AttentionBackendEnum.CUSTOM
        if "--logits-processors" in options:
            assert config.model_config.logits_processors == [PROCESSOR]
            assert load_processors(config.model_config.logits_processors) == [
                RequestSettings
            ]
        else:
            assert config.model_config.served_model_name == "smollm2"


def test_every_documented_additional_config_resolves():
    documented = re.findall(r"--additional-config '(\{.*?\})'", README.read_text())
    assert len(documented) >= 2
    for text in documented:
        assert resolve_config(json.loads(text)).describe()


def test_the_model_command_writes_the_folder_it_prints(capsys):
    (command,) = [c for c in shell_commands() if "vllm_flexprefill.models" in c]
    argv = shlex.split(command.split("$(", 1)[1].rstrip(")"))
    assert argv[:3] == ["python", "-m", "vllm_flexprefill.models"]
    out = (
        models.CACHE / "smollm2"
    )  # the README's ./smollm2, shared with the other tests
    models.main([*argv[3:-1], str(out)])
    printed = Path(capsys.readouterr().out.strip())
    assert printed == out and (printed / "config.json").exists()
