#!/usr/bin/env bash
# On the GPU machine (after the vLLM bundle stages): install this checkout into the image's
# Python without touching the network, and print what runs there. Source it.
source /root/vllm-env.sh
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v "^$" | tail -3
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton, vllm; print('torch', torch.__version__, 'triton', triton.__version__, 'vllm', vllm.__version__)"
