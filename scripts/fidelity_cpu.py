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
Every layer's selection is measured (``dense_threshold`` 0, the density guard off:
``max_density`` 1), unless a configuration's settings name those fields.

Usage: python scripts/fidelity_cpu.py --text code --tokens 4096 default "gamma=0.95" \
           '{"layers": [{"first": 0, "last": 1, "dense_threshold": 1000000}]}'
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import config_spec, ids_digest, texts

from vllm_flexprefill import FlexPrefillConfig, hf
from vllm_flexprefill.models import CACHE, convert_smollm2

# Every layer's selection is measured: no prompt is too short for the sparse path and
# the density guard (which would attend every block of a layer denser than
# max_density) is off, unless key=value or JSON settings name these fields
# (per-layer overrides keep theirs).
MEASURED = {"dense_threshold": 0, "max_density": 1.0}


def parse_config(spec: str) -> FlexPrefillConfig:
    """A configuration of :func:`common.config_spec`'s forms under :data:`MEASURED`."""
    return config_spec(spec, MEASURED)


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


def read_text(text_file: Path) -> str:
    """``--text-file``'s text; SystemExit naming the file if it cannot be read."""
    try:
        return text_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SystemExit(
            f"--text-file {text_file}: cannot read it as UTF-8 text ({error})"
        ) from None


def text_ids(
    tokenizer,
    text: str,
    tokens: int,
    max_len: int,
    own_text: tuple[str, str] | None = None,
) -> tuple[str, list[int]]:
    """The name and the first ``tokens`` token ids of ``own_text`` (its name, its
    text) if given, else of
    ``text`` (``code``, ``prose`` or ``argparse``); SystemExit if the text is shorter
    or ``tokens`` outside [2, ``max_len``]."""
    if not 2 <= tokens <= max_len:
        raise SystemExit(f"--tokens {tokens}: allowed 2 to {max_len} (the model's)")
    if own_text is not None:
        name, ids = own_text[0], tokenizer(own_text[1]).input_ids
    elif text == "argparse":
        name, ids = "argparse", tokenizer(Path(argparse.__file__).read_text()).input_ids
    else:
        name = f"{text} {round(tokens / 1024)}K"
        ids = dict(texts(tokenizer, [tokens], max_len + 1)).get(name, [])
    if len(ids) < tokens:
        raise SystemExit(f"{name}: {len(ids)} tokens, fewer than --tokens {tokens}")
    return name, ids[:tokens]


def print_cost(spec: str, config, model, ids, dense_lp, dense_top) -> None:
    """The cost of ``config`` (given as ``spec``) against dense attention (``dense_lp``,
    ``dense_top``: ``next_token_stats`` of ``ids [1, tokens]``), over the whole text
    and per quarter."""
    selections = []
    implementation = hf.register(config, selections)
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
    configs = [parse_config(spec) for spec in args.configs]  # refused before any work
    own_text = args.text_file and (args.text_file.name, read_text(args.text_file))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = convert_smollm2(CACHE / "smollm2")
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa"
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    max_len = model.config.max_position_embeddings
    name, ids = text_ids(tokenizer, args.text, args.tokens, max_len, own_text)
    print(f"{name} ({len(ids)} tokens, ids {ids_digest(ids)})", flush=True)
    ids = torch.tensor([ids])
    dense_lp, dense_top = next_token_stats(model, ids, "sdpa")
    print(f"dense perplexity {(-dense_lp.mean()).exp():.4f}", flush=True)
    for spec, config in zip(args.configs, configs, strict=True):
        print_cost(spec, config, model, ids, dense_lp, dense_top)


if __name__ == "__main__":
    main()
