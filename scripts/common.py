"""What more than one script of ``scripts/`` needs: the benchmarked Llama-3.1-8B
layer and its planted inputs, the kernels' view of a layer, the timers, the run
metadata, the vLLM engine settings (the capped FlexPrefill settings, the engine and
its sampling, a worker's or server's environment, a ``vllm serve`` process), random
prompts and the fidelity texts.

Every script imports it as ``from common import ...``; that works because
``python scripts/NAME.py`` (run from the repository root) puts ``scripts/`` on
``sys.path``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import triton

import vllm_flexprefill
from vllm_flexprefill import FlexPrefillConfig, load_config
from vllm_flexprefill.config import as_config
from vllm_flexprefill.kernels import KVSource
from vllm_flexprefill.plugin import CONFIG_ENV
from vllm_flexprefill.stats import STATS_ENV
from vllm_flexprefill.synthetic import fp8_quantised, paged_copy, planted_qkv

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LayerShape:
    """One attention layer's query heads, KV heads and head dim."""

    num_q_heads: int
    num_kv_heads: int
    head_dim: int


# The benchmarked layers: Llama-3.1-8B's, and Gemma-2-9B's (head dim 256).
LAYERS = {
    "llama-3.1-8b": LayerShape(32, 8, 128),
    "gemma-2-9b": LayerShape(16, 8, 256),
}
# Llama-3.1-8B's layer and FlexPrefill's block size.
_LLAMA_8B = LAYERS["llama-3.1-8b"]
HQ, HKV, D = _LLAMA_8B.num_q_heads, _LLAMA_8B.num_kv_heads, _LLAMA_8B.head_dim
B = 128
SCALE = D**-0.5

# The vLLM engines: the Llama-3.1-8B config (run with dummy weights); prefill
# eager, decode in full CUDA graphs (compiling would only add start-up time).
LLAMA_8B_MODEL = str(REPO / "scripts" / "models" / "llama-3.1-8b")
COMPILATION_CONFIG = {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
# the capped engine: the default preset with tau 0 and max_budget
CAPPED_SETTINGS = "tau: 0.0\nmax_budget: {max_budget}\n"
CAPPED_BUDGET = 1664  # tokens: ~5% density at 128K


def paper_config(gamma: float = 0.9) -> FlexPrefillConfig:
    """The paper's settings (τ 0.1, 1024-token minimum budget), sparse at every
    length."""
    return FlexPrefillConfig(
        gamma=gamma, tau=0.1, block_size=B, min_budget=1024, dense_threshold=0
    )


def vsgrid_config(
    gamma: float, selection: str = "vsgrid", block_size: int = B
) -> FlexPrefillConfig:
    """``selection: vsgrid`` (or ``rerank``) without a minimum budget, sparse at every
    length, on blocks of ``block_size`` tokens."""
    overrides = {"selection": selection, "min_budget": 1, "block_size": block_size}
    return paper_config(gamma).with_overrides(overrides)


def config_spec(spec: str, base: dict) -> FlexPrefillConfig:
    """A configuration given on a command line: a preset name, a YAML path,
    ``key=value,...`` or a JSON object of settings, with ``base``'s settings under it
    (the preset's or file's own values above them; the settings given above both).
    Raises SystemExit naming the configuration."""
    try:
        if spec.startswith("{"):
            return as_config({**base, **json.loads(spec)}, spec)
        if "=" not in spec or Path(spec).is_file():
            return load_config(spec).with_overrides(base, spec)
        pairs = (item.split("=", 1) for item in spec.split(","))
        settings = {key: json.loads(value) for key, value in pairs}
        return as_config({**base, **settings}, spec)
    except (ValueError, json.JSONDecodeError) as error:
        raise SystemExit(
            f"configuration {spec!r}: {error}; allowed: a preset name, a YAML path, "
            'key=value,... with JSON values (strings quoted: selection="rerank") or a '
            "JSON object of settings"
        ) from None


def planted(
    n: int, seed: int, shape: LayerShape = LAYERS["llama-3.1-8b"]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Planted ``q [n, Hq, D]``, ``k, v [n, Hkv, D]`` of one layer (bf16, on the
    GPU)."""
    q, k, v, _ = planted_qkv(
        n,
        shape.num_q_heads,
        shape.num_kv_heads,
        shape.head_dim,
        B,
        seed=seed,
        dtype=torch.bfloat16,
        device="cuda",
    )
    return q, k, v


# The fewest timed calls behind a median, however long a call takes (``do_bench``
# repeats for ``rep`` ms: FA3 dense at 128K, ~200 ms a call, would be timed once).
MIN_RUNS = 10


def bench(fn, warmup: int = 50, rep: int = 300) -> float:
    """Median milliseconds of ``fn()`` (``triton.testing.do_bench``; the warm-up and
    the repetitions in ms, and at least :data:`MIN_RUNS` timed calls)."""
    fn()  # compilation and allocator warm-up outside the estimate
    start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
    start.record()
    fn()
    end.record()
    end.synchronize()
    once = start.elapsed_time(end)
    return triton.testing.do_bench(
        fn,
        warmup=max(warmup, 2 * once),
        rep=max(rep, MIN_RUNS * once),
        return_mode="median",
    )


def graph_ms(fn, **bench_options) -> float | None:
    """Median milliseconds of ``fn()`` replayed from a CUDA graph: its GPU time alone,
    without the host's launch cost (which on a slow host exceeds the GPU time of a
    search below ~128K tokens). None, with the reason printed, where ``fn`` cannot be
    captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # allocator and memoised state warmed outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as error:
        print(f"graph capture failed: {error}", flush=True)
        return None
    return bench(graph.replay, **bench_options)


def interleaved(fns: dict, rounds: int, **bench_options) -> dict:
    """Median milliseconds of each of ``fns`` ({name: fn}) over ``rounds`` timings
    (:func:`bench` with ``bench_options``), in the given order and reversed every
    other round. The H200 is power-capped, and a timing that follows a light one runs
    faster than one that follows a heavy one (run 23: 128K attention 20.5 ms after the
    search, 21.7 after a total), so a fixed order favours whatever comes second."""
    times = {name: [] for name in fns}
    for i in range(rounds):
        for name in list(fns) if i % 2 == 0 else list(fns)[::-1]:
            times[name].append(bench(fns[name], **bench_options))
    return {name: statistics.median(t) for name, t in times.items()}


def fa3_ms(
    q,
    k,
    v,
    q_lens: list[int],
    kv_lens: list[int],
    block_table=None,
    scales: tuple | None = None,
) -> float:
    """Median milliseconds of FA3's causal varlen attention over packed requests:
    ``q [sum q_lens, Hq, D]``; ``k, v [sum kv_lens, Hkv, D]``, or with ``block_table
    [R, pages]`` int32 a paged cache ``[num_pages, page_size, Hkv, D]`` as vLLM runs
    it; fp8 ones with their per-tensor ``scales`` (q, k, v) and a bf16 output, as
    vLLM's fp8 KV cache runs it. Softmax scale ``D**-0.5``."""
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    def offsets(lens):
        return torch.tensor(
            [0, *itertools.accumulate(lens)], dtype=torch.int32, device="cuda"
        )

    keys = (
        dict(cu_seqlens_k=offsets(kv_lens))
        if block_table is None
        else dict(
            seqused_k=torch.tensor(kv_lens, dtype=torch.int32, device="cuda"),
            block_table=block_table,
        )
    )
    if scales is not None:
        descale = (len(q_lens), k.shape[-2])
        names = ("q_descale", "k_descale", "v_descale")
        keys |= {name: s.expand(descale) for name, s in zip(names, scales, strict=True)}
    cu_q, out = (
        offsets(q_lens),
        torch.empty(q.shape, dtype=torch.bfloat16, device="cuda"),
    )
    return bench(
        lambda: flash_attn_varlen_func(
            q,
            k,
            v,
            max(q_lens),
            cu_q,
            max(kv_lens),
            softmax_scale=q.shape[-1] ** -0.5,
            causal=True,
            out=out,
            fa_version=3,
            **keys,
        )
    )


class Layer:
    """One layer's inputs as the kernels and FA3 take them: bf16, or fp8 with
    per-tensor scales (``fp8``); packed K/V or, with ``page``, a paged copy."""

    def __init__(self, q, k, v, kv_lens: list[int], fp8: bool):
        self.kv_lens, self.fp8 = kv_lens, fp8
        if fp8:
            (q, q_scale), (k, k_scale), (v, v_scale) = map(fp8_quantised, (q, k, v))
            self.scales = (q_scale, k_scale, v_scale)
        else:
            self.scales = (None, None, None)
        self.q, self.k, self.v = q, k, v

    @property
    def q_scale(self):
        return self.scales[0]

    def kv(self, page: int | None = None) -> KVSource:
        if page is None:
            return KVSource(self.k, self.v, None, *self.scales[1:])
        return paged_copy(self.k, self.v, self.kv_lens, page, 0, *self.scales[1:])

    def fa3_ms(self, q_lens: list[int], kv: KVSource | None = None) -> float:
        """FA3 on this layer's packed keys and values, or on ``kv``'s pages (a paged
        copy from :meth:`kv`), as the sparse rows it is compared with read them."""
        scales = self.scales if self.fp8 else None
        if kv is None or kv.block_table is None:
            return fa3_ms(self.q, self.k, self.v, q_lens, self.kv_lens, scales=scales)
        return fa3_ms(
            self.q, kv.key, kv.value, q_lens, self.kv_lens, kv.block_table, scales
        )


def length_label(tokens: int) -> str:
    """A token count for tables: ``32K`` for whole multiples of 1024, else the
    number."""
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else str(tokens)


def computed_flops(result, head_dim: int, block_size: int = B) -> float:
    """FLOPs of the selected block pairs (``4*b*b*D`` each for blocks of ``b``
    tokens, a diagonal block as half)."""
    pairs = result.kv_count.sum().item() - 0.5 * result.kv_count.numel()
    return 4.0 * block_size * block_size * head_dim * pairs


def attempt(fn) -> list[dict]:
    """The rows ``fn()`` returns (one or a list), printed; none where it fails."""
    try:
        found = fn()
    except Exception:  # keep measuring the other rows; the failure is in the log
        traceback.print_exc()
        return []
    found = found if isinstance(found, list) else [found]
    for row in found:
        print(json.dumps(row), flush=True)
    return found


def run_meta(**extra) -> dict:
    """The ``meta`` of a results file: date, GPU (where CUDA is), git revision
    (``$GIT_REV``, else the checkout's), command line, the imported package's folder
    (the installed wheel, or the checkout), torch and triton versions, then
    ``extra``."""
    return dict(
        date=time.strftime("%Y-%m-%d"),
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        git=os.environ.get("GIT_REV") or git_revision(),
        command="python " + " ".join(sys.argv),
        package=str(Path(vllm_flexprefill.__file__).parent),
        torch=torch.__version__,
        triton=triton.__version__,
        **extra,
    )


def git_revision() -> str:
    """``git rev-parse --short HEAD`` of this checkout, ``-dirty`` appended where
    tracked files differ from it, or ``unknown`` (no git, no checkout)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = head and git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return (head + ("-dirty" if dirty else "")) or "unknown"


def make_llm(
    backend: str,
    max_model_len: int | None,
    compiled: bool,
    model: str = LLAMA_8B_MODEL,
    kv_cache_dtype: str = "auto",
    **options,
):
    """The engine, dummy weights; ``compiled``: vLLM's default compilation and CUDA
    graphs, else eager prefill with decode-only CUDA graphs (starts faster);
    ``max_model_len`` None: the model's; ``kv_cache_dtype``: vLLM's (fp8); ``options``:
    more of vLLM's engine arguments."""
    from vllm import LLM

    extra = {} if compiled else dict(compilation_config=COMPILATION_CONFIG)
    return LLM(
        model=model,
        load_format="dummy",
        skip_tokenizer_init=True,
        attention_backend=backend,
        max_model_len=max_model_len,
        seed=0,
        kv_cache_dtype=kv_cache_dtype,
        **extra,
        **options,
    )


def sampling(max_tokens: int, **options):
    """vLLM sampling of ``max_tokens`` new token ids, whatever the model emits."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens, ignore_eos=True, detokenize=False, **options
    )


def flexprefill_env(
    config: Path | None = None, settings: str = "", stats_file: Path | None = None
) -> dict[str, str]:
    """The environment of an engine process (a worker, ``vllm serve``): this
    process's without ``$VLLM_FLEXPREFILL_STATS`` and ``$VLLM_FLEXPREFILL_CONFIG``
    (an engine labelled with a preset runs that preset, whatever the caller's shell
    names); with ``config``, that file (written with ``settings``, FlexPrefill YAML)
    as its config; with ``stats_file``, that file as its statistics file."""
    env = {k: v for k, v in os.environ.items() if k not in (STATS_ENV, CONFIG_ENV)}
    if config is not None:
        config.write_text(settings)
        env[CONFIG_ENV] = str(config)
    if stats_file is not None:
        env[STATS_ENV] = str(stats_file)
    return env


def start_server(args: list[str], env: dict, log: Path, port: int) -> subprocess.Popen:
    """``vllm serve ARGS`` on ``port``, logging to ``log``, once it answers."""
    import requests

    # Run outside the checkout, so the installed package is imported, not the source
    # folder.
    server = subprocess.Popen(
        ["vllm", "serve", *args, "--port", str(port)],
        env=env,
        cwd=log.parent,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 600
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {server.returncode}; see {log}")
        try:
            models = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            if models.status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(2)
    server.kill()
    raise RuntimeError(f"vllm serve did not become healthy in time; see {log}")


def random_prompts(
    lengths: list[int], seed: int, vocab_size: int = 120000
) -> list[dict]:
    """vLLM token-id prompts of the given lengths, random ids in [1000, 120000) and
    below ``vocab_size`` (an id past a model's vocabulary fails a device-side assert
    in its embedding: vLLM checks none with ``skip_tokenizer_init``)."""
    gen = torch.Generator().manual_seed(seed)
    top = min(120000, vocab_size)
    return [
        {"prompt_token_ids": torch.randint(1000, top, (n,), generator=gen).tolist()}
        for n in lengths
    ]


# The fidelity texts: real long texts, identical on every machine with this
# project's pinned dependencies installed (no downloads), so that
# ``fidelity_gpu.py`` (through vLLM) and ``fidelity_cpu.py`` (transformers and the
# PyTorch reference) measure the same token ids.
CODE_MODULES = ["vllm.v1.core.sched.scheduler", "vllm.entrypoints.llm"]
PROSE_PACKAGES = ["vllm", "torch"]
LICENCE_SUFFIXES = ("", ".txt", ".md")


def code_text() -> str:
    """The source of two vLLM 0.24.0 modules (code, comments, docstrings)."""
    return "\n\n".join(
        Path(importlib.util.find_spec(name).origin).read_text() for name in CODE_MODULES
    )


def prose_text() -> str:
    """The long descriptions (READMEs) and licence texts of vLLM 0.24.0 and torch
    2.11.0."""
    parts = []
    for name in PROSE_PACKAGES:
        meta = importlib.metadata.metadata(name)
        parts.append(meta.get_payload() or meta.get("Description") or "")
        for file in importlib.metadata.files(name) or []:
            licence = file.name.upper().startswith(("LICENSE", "COPYING"))
            if licence and file.suffix in LICENCE_SUFFIXES:
                parts.append(Path(file.locate()).read_text(errors="ignore"))
    return "\n\n".join(p for p in parts if p.strip())


def texts(tokenizer, lengths: list[int], max_model_len: int) -> dict[str, list[int]]:
    """``{"code 4K": ids, ...}``: each text cut to each length in tokens (at most
    ``max_model_len - 1``: vLLM refuses a prompt that fills the whole context)."""
    out = {}
    for kind, text in (("code", code_text()), ("prose", prose_text())):
        ids = tokenizer(text).input_ids
        for n in lengths:
            n = min(n, max_model_len - 1)
            if len(ids) >= n:
                out[f"{kind} {round(n / 1024)}K"] = ids[:n]
    return out


def ids_digest(ids: list[int]) -> str:
    """Identifies a text's token ids across runs and machines (both fidelity
    scripts report it)."""
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
