"""The backend inside real vLLM engines on a GPU (``pytest -m gpu``), dummy
Llama-3.1-8B, greedy, each engine in its own process (``scripts/bench_e2e.py worker``):

* a batch of 16 prompts of 1K-64K tokens completes through FLEXPREFILL, and the prompts
  under ``dense_threshold`` decode token for token as they do with FLASH_ATTN;
* a prompt that extends a cached 64K prompt hits the prefix cache and prefills only its
  8K new tokens, sparse, against the cached keys;
* the density guard: with the default preset, whose selections on dummy weights keep
  almost every block, the first long prompt probes every layer and later ones run
  them dense without searching; its bookkeeping (and the metrics it feeds) never
  synchronises with the host;
* with two GPUs (skipped on one), the batch under tensor parallelism 2: each rank
  searches its half of the heads, and the short prompts decode as FLASH_ATTN's;
* per-request settings through the request-settings hook: requests of one
  ``generate`` run with their own settings, and a bad entry is refused;
* vLLM's memory profiling pass (a layer call without metadata) peaks at the step's
  sparse-path scratch, so the KV cache is sized around it."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from vllm_flexprefill import FlexPrefillConfig, load_config, stats
from vllm_flexprefill.guard import DensityGuard, Mode

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# As `python scripts/NAME.py` has it: bench_e2e imports common.
sys.path.insert(0, str(SCRIPTS))
from bench_e2e import BATCH_LENGTHS  # noqa: E402
from helpers import tiny_llama_config  # noqa: E402

from vllm_flexprefill.backend import FlexPrefillBackend  # noqa: E402
from vllm_flexprefill.metrics import BuilderMetrics  # noqa: E402

pytestmark = pytest.mark.gpu


def run_worker(
    backend: str, task: str, out: Path, env: dict | None = None, gpus: int = 1
) -> None:
    """One engine of ``scripts/bench_e2e.py worker`` runs ``task``, writing ``out``;
    ``gpus``: its tensor-parallel size."""
    command = [sys.executable, str(SCRIPTS / "bench_e2e.py"), "worker"]
    command += ["--backend", backend, "--task", task, "--out", str(out)]
    command += ["--tensor-parallel-size", str(gpus)]
    subprocess.run(command, check=True, timeout=900, env=env)


def batch_tokens(
    backend: str, out: Path, env: dict | None = None, gpus: int = 1
) -> list[list[int]]:
    target = out / f"batch_{backend}_tp{gpus}.json"
    run_worker(backend, "batch", target, env, gpus)
    return json.loads(target.read_text())


def guard_off_env(tmp_path: Path) -> dict:
    """An engine's environment: a config sparse whatever the density (``max_density``
    1) and the statistics file ``tmp_path / "stats.jsonl"``."""
    config = tmp_path / "guard_off.yaml"
    config.write_text("max_density: 1.0\n")
    return dict(
        os.environ,
        VLLM_FLEXPREFILL_STATS=str(tmp_path / "stats.jsonl"),
        VLLM_FLEXPREFILL_CONFIG=str(config),
    )


def assert_batch_completes_and_short_prompts_match(sparse, dense) -> None:
    """The batch's 16 prompts each got 16 tokens, and the 8 under the default
    ``dense_threshold`` the same tokens as FLASH_ATTN's."""
    assert len(sparse) == 16 and all(len(tokens) == 16 for tokens in sparse)
    threshold = load_config("default").dense_threshold
    short = [i for i, n in enumerate(BATCH_LENGTHS) if n < threshold]
    assert len(short) == 8
    for i in short:
        assert sparse[i] == dense[i], (
            f"prompt {i} ({BATCH_LENGTHS[i]} tokens) differs from FLASH_ATTN"
        )


def test_mixed_batch_completes_and_short_prompts_match_flash_attention(tmp_path):
    sparse = batch_tokens("FLEXPREFILL", tmp_path)
    dense = batch_tokens("FLASH_ATTN", tmp_path)
    assert_batch_completes_and_short_prompts_match(sparse, dense)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_ranks_each_search_their_half_of_the_heads(tmp_path):
    """Tensor parallelism 2: the mixed batch completes with its long prompts sparse
    (``max_density`` 1), every layer call searched on both ranks over 16 of the 32
    query heads, and the short prompts decode as FLASH_ATTN's do on two GPUs."""
    env = guard_off_env(tmp_path)
    sparse = batch_tokens("FLEXPREFILL", tmp_path, env, gpus=2)
    dense = batch_tokens("FLASH_ATTN", tmp_path, gpus=2)
    assert_batch_completes_and_short_prompts_match(sparse, dense)
    calls = stats.read(env["VLLM_FLEXPREFILL_STATS"])
    assert calls and {call["ran"] for call in calls} == {"sparse"}
    assert len({call["layer"] for call in calls}) == 32
    assert {len(heads) for call in calls for heads in call["head_selected"]} == {16}
    # every layer call's line twice, once from each rank
    per_call = Counter((call["layer"], str(call["requests"])) for call in calls)
    assert all(lines % 2 == 0 for lines in per_call.values())


def test_a_prompt_extending_a_cached_one_prefills_only_its_new_tokens_sparse(tmp_path):
    target = tmp_path / "prefix.json"
    run_worker("FLEXPREFILL", "prefix", target, guard_off_env(tmp_path))
    result = json.loads(target.read_text())
    assert result["cached_tokens"] == 65536  # 512 full 128-token pages
    assert result["new_tokens"] == 4
    # The new chunk, attending the cached 64K.
    assert [[8192, 65536 + 8192]] in result["sparse_requests"]


def test_the_guard_runs_a_diffuse_model_dense_after_probing_it(tmp_path):
    target = tmp_path / "guard.json"
    env = dict(os.environ, VLLM_FLEXPREFILL_STATS=str(tmp_path / "stats.jsonl"))
    env.pop("VLLM_FLEXPREFILL_CONFIG", None)  # the default preset
    run_worker("FLEXPREFILL", "guard", target, env)
    first, _, third = json.loads(target.read_text())
    layers = {call["layer"] for call in first}
    assert len(layers) == 32
    # the first prompt's first chunk: every layer probes
    assert [call["reason"] for call in first[:32]] == [
        "probe: density not measured yet"
    ] * 32
    # the third prompt: every layer call ran dense, nearly all without a search
    assert {call["ran"] for call in third} == {"dense"}
    unsearched = [call for call in third if call["reason"].startswith("dense: ")]
    assert len(unsearched) >= 0.8 * len(third)
    assert all("above max_density auto (" in call["reason"] for call in unsearched)


def test_the_guard_never_synchronises_with_the_host(tmp_path):
    names = [f"model.layers.{i}.self_attn.attn" for i in range(4)]
    configs = dict.fromkeys(names, FlexPrefillConfig(max_density=0.6))
    metrics = BuilderMetrics(tmp_path)
    guard = DensityGuard(configs, torch.device("cuda"), metrics)
    counts = torch.full((32, 64), 50, dtype=torch.int32, device="cuda")
    patterns = torch.zeros(2, 32, dtype=torch.int8, device="cuda")  # vertical-slash
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(6):
            bucket = 15 + step % 2  # two key-length buckets
            guard.begin_step(names, bucket)
            for name in names:
                guard.record(name, bucket, counts, 32 * 64 * 100, patterns)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    guard.begin_step(names, 15)  # the readback queued last step has arrived
    assert len(guard.states) == 2 * len(names)
    assert all(g.density == pytest.approx(0.5) for g in guard.states.values())
    torch.cuda.synchronize()  # and the one it queued for the calls since
    assert set(guard.begin_step(names, 16).values()) == {Mode.SPARSE}
    # every recorded call's 64 (request, head) selections, vertical-slash
    assert metrics.counts.head_patterns["vertical_slash"] == 6 * 4 * 64


def test_requests_of_one_generate_run_with_their_own_settings(tmp_path):
    target = tmp_path / "settings.json"
    env = dict(os.environ, VLLM_FLEXPREFILL_STATS=str(tmp_path / "stats.jsonl"))
    env.pop("VLLM_FLEXPREFILL_CONFIG", None)  # the default preset
    run_worker("FLEXPREFILL", "settings", target, env)
    result = json.loads(target.read_text())
    ran = result["settings"]
    default = load_config("default")
    assert (ran["20000"]["gamma"], ran["20000"]["tau"]) == (default.gamma, default.tau)
    assert (ran["20100"]["gamma"], ran["20100"]["tau"]) == (0.95, 0.0)
    assert "20200" not in ran  # "dense": FlashAttention, never in a sparse plan
    assert "gamma" in result["error"]


def test_the_profiling_pass_peaks_at_the_step_scratch():
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.attention import Attention

    config = tiny_llama_config(attention_backend="FLEXPREFILL")
    with set_current_vllm_config(config):
        layer = Attention(
            4, 64, 0.125, 2, cache_config=config.cache_config,
            attn_backend=FlexPrefillBackend, prefix="model.layers.0.self_attn.attn",
        )  # fmt: skip
    q = torch.randn(256, 4 * 64, dtype=torch.float16, device="cuda")
    kv = torch.randn(256, 2 * 64, dtype=torch.float16, device="cuda")
    output = torch.empty_like(q)
    scratch = layer.impl.step_scratch
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    layer.impl.forward(layer, q, kv, kv, torch.empty(0), None, output)
    peak = torch.cuda.max_memory_allocated() - before
    assert output.eq(0).all()
    # at least the scratch of an empty KV cache, at most that of the whole context
    # (the allocator rounds a block up to 512 bytes)
    whole = scratch.max_requests * scratch.max_model_len
    assert scratch.bytes(0) <= peak < scratch.bytes(whole) + 512
    assert peak >= scratch.bytes(1 << 20)  # the GPU's free memory holds 1M tokens
