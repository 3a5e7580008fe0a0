"""FlexPrefill's accuracy cost on a CPU, without vLLM: SmolLM2-135M-Instruct under
transformers (float32), dense attention against the PyTorch FlexPrefill reference
(``vllm_flexprefill.hf``), on the texts of ``common.texts`` (the ones
``fidelity_gpu.py`` measures through vLLM and the Triton kernels; the printed digest
identifies the token ids). Prints the perplexity change and the next-token top-1
agreement per configuration, for the whole text and per quarter of its positions; a
configuration is a preset name, a YAML path, ``key=value,...`` settings or a JSON
object of settings. ``--text argparse`` reads Python's own ``argparse`` source instead
(the text of ``tests/test_fidelity.py``; it differs between Python versions);
``--text-file PATH`` reads your own text (UTF-8), which must hold ``--tokens`` tokens.

Usage: python scripts/fidelity_cpu.py --text code --tokens 4096 default "gamma=0.95" \
           '{"layers": [{"first": 0, "last": 1, "dense_threshold": 1000000}]}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import ids_digest, texts

from vllm_flexprefill import FlexPrefillConfig, hf, load_config
from vllm_flexprefill.config import as_config
from vllm_flexprefill.models import CACHE, convert_smollm2


def parse_config(spec: str) -> FlexPrefillConfig:
    """A preset name, a YAML path, ``key=value,...`` or a JSON object of settings; the
    model-wide ``dense_threshold`` is 0 (per-layer overrides keep theirs)."""
    if spec.startswith("{"):
        return as_config({"dense_threshold": 0, **json.loads(spec)}, spec)
    if "=" not in spec:
        return load_config(spec).with_overrides({"dense_threshold": 0}, spec)
    pairs = (item.split("=", 1) for item in spec.split(","))
    settings = {key: json.loads(value) for key, value in pairs}
    return as_config({"dense_threshold": 0, **settings}, spec)


def next_token_stats(
    model, ids: torch.Tensor, implementation: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: log-probability of the true next token, and the argmax token."""
    model.set_attn_implementation(implementation)
    with torch.no_grad():
        logprobs = model(ids).logits[0, :-1].float().log_softmax(-1)
    return logprobs.gather(1, ids[0, 1:, None])[:, 0], logprobs.argmax(-1)


def cost(dense_lp, sparse_lp, dense_top, sparse_top) -> tuple[float, float]:
    """Relative perplexity change and top-1 agreement over the given positions."""
    change = (dense_lp.mean() - sparse_lp.mean()).exp().item() - 1
    return change, (sparse_top == dense_top).float().mean().item()


def density(selections) -> float:
    """Selected over causal block pairs, over every layer and head."""
    return torch.cat([s.density for s in selections]).mean().item()


def text_ids(
    tokenizer, text: str, tokens: int, max_len: int, text_file: Path | None = None
) -> tuple[str, list[int]]:
    """The name and the first ``tokens`` token ids of ``text_file`` if given, else of
    ``text`` (``code``, ``prose`` or ``argparse``)."""
    if text_file is not None:
        if tokens > max_len:
            raise SystemExit(f"--tokens {tokens}: the model takes at most {max_len}")
        ids = tokenizer(text_file.read_text(encoding="utf-8")).input_ids
        if len(ids) < tokens:
            raise SystemExit(
                f"--text-file {text_file}: {len(ids)} tokens, "
                f"fewer than --tokens {tokens}"
            )
        return text_file.name, ids[:tokens]
    if text == "argparse":
        source = Path(argparse.__file__).read_text()
        return "argparse", tokenizer(source).input_ids[:tokens]
    named = texts(tokenizer, [tokens], max_len).items()
    return next((name, ids) for name, ids in named if name.startswith(text))


def print_cost(spec: str, model, ids, dense_lp, dense_top) -> None:
    """The cost of one configuration against dense attention (``dense_lp``,
    ``dense_top``: ``next_token_stats`` of ``ids [1, tokens]``), over the whole text
    and per quarter."""
    selections = []
    implementation = hf.register(parse_config(spec), selections)
    sparse_lp, sparse_top = next_token_stats(model, ids, implementation)
    per_position = (dense_lp, sparse_lp, dense_top, sparse_top)
    change, agreement = cost(*per_position)
    print(
        f"{spec}: perplexity {100 * change:+.2f}%, "
        f"top-1 agreement {100 * agreement:.2f}%, density {density(selections):.3f}",
        flush=True,
    )
    by_quarter = zip(*(x.chunk(4) for x in per_position), strict=True)
    quarters = [cost(*parts) for parts in by_quarter]
    cells = " | ".join(f"{100 * c:+.2f}%, {100 * a:.1f}%" for c, a in quarters)
    print(f"  by position (quarters of the text): {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "configs", nargs="+", help="preset name, YAML path, or key=value,... settings"
    )
    parser.add_argument("--text", choices=["code", "prose", "argparse"], default="code")
    parser.add_argument(
        "--text-file", type=Path, help="your own text (UTF-8) instead of --text"
    )
    parser.add_argument("--tokens", type=int, default=4096)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = convert_smollm2(CACHE / "smollm2")
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa"
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    max_len = model.config.max_position_embeddings
    name, ids = text_ids(tokenizer, args.text, args.tokens, max_len, args.text_file)
    print(f"{name} ({len(ids)} tokens, ids {ids_digest(ids)})", flush=True)
    ids = torch.tensor([ids])
    dense_lp, dense_top = next_token_stats(model, ids, "sdpa")
    print(f"dense perplexity {(-dense_lp.mean()).exp():.4f}", flush=True)
    for spec in args.configs:
        print_cost(spec, model, ids, dense_lp, dense_top)


if __name__ == "__main__":
    main()
