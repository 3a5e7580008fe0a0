"""vllm-flexprefill: FlexPrefill sparse prefill attention as a vLLM V1
attention backend.
"""

from pathlib import Path

from setuptools import setup

setup(
    name="vllm-flexprefill",
    version="0.1.0",
    description=(
        "FlexPrefill context-aware sparse attention (Lai et al., ICLR 2025) as a "
        "vLLM V1 attention backend with Triton kernels"
    ),
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Triton kernels live in the top-level `kernels/` folder but install as
    # `vllm_flexprefill.kernels` (a top-level `kernels` module would shadow the
    # Hugging Face `kernels` package); the YAML presets install as package data.
    packages=[
        "vllm_flexprefill",
        "vllm_flexprefill.kernels",
        "vllm_flexprefill.configs",
    ],
    package_dir={
        "vllm_flexprefill": "vllm_flexprefill",
        "vllm_flexprefill.kernels": "kernels",
        "vllm_flexprefill.configs": "configs",
    },
    package_data={"vllm_flexprefill.configs": ["*.yaml"]},
    install_requires=[
        "vllm==0.24.0",
        "torch==2.11.0",
        "triton==3.6.0",
        "pydantic>=2",
        "pyyaml",
    ],
    # `models`: converting the GGUF checkpoint of `python -m vllm_flexprefill.models`.
    extras_require={
        "models": ["gguf", "accelerate"],
        "test": ["pytest", "ruff==0.17.6", "gguf", "accelerate"],
    },
    entry_points={
        "vllm.general_plugins": ["flexprefill = vllm_flexprefill.plugin:register"]
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
    ],
)
