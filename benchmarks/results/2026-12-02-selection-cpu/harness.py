"""Fidelity of candidate selection modes (copy of scripts/fidelity_cpu.py's logic).

Usage: python harness.py --text prose --tokens 4096 'paper:gamma=0.9' \
    'multiprobe:gamma=0.9,probes=4' ...
A spec is MODE:key=val,...; keys that are FlexPrefillConfig fields go to the config
(dense_threshold=0, max_density=1 always), the rest are passed to the mode function.
Appends one JSON line per spec to results.jsonl.
"""
import argparse, inspect, json, sys, time
from pathlib import Path

import torch
torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "scripts"))
sys.path.insert(0, str(HERE))
from common import ids_digest, texts  # noqa
from vllm_flexprefill import FlexPrefillConfig
from vllm_flexprefill import reference as R
from vllm_flexprefill.blocks import ChunkGeometry
from vllm_flexprefill.config import SETTINGS
from vllm_flexprefill.models import CACHE, convert_smollm2
import candidates as C
from fastattn import block_sparse_attention_fast

STATE = {"sel": 0, "causal": 0, "search_s": 0.0, "per_layer": []}


def parse(spec):
    mode, _, rest = spec.partition(":")
    cfg = {"dense_threshold": 0, "max_density": 1.0}
    opts = {}
    for item in filter(None, rest.split(",")):
        key, val = item.split("=", 1)
        val = json.loads(val) if val[0] in "0123456789-[{tf" else val
        (cfg if key in SETTINGS else opts)[key] = val
    return mode, FlexPrefillConfig(**cfg), opts


def register(mode, config, opts):
    from transformers import AttentionInterface
    fn = C.MODES[mode]
    # modes that declare ``value`` also get the layer's values ([kv_len, kv_heads, d])
    wants_value = "value" in inspect.signature(fn).parameters

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        outs = []
        for qq, kk, vv in zip(query, key, value):
            q, k, v = qq.transpose(0, 1), kk.transpose(0, 1), vv.transpose(0, 1)
            geo = ChunkGeometry(q.shape[0], k.shape[0], config.block_size)
            causal = geo.causal_block_mask()
            with torch.no_grad():
                t = time.perf_counter()
                extra = {"value": v} if wants_value else {}
                mask = fn(q, k, geo, config, scale, **opts, **extra) & causal
                STATE["search_s"] += time.perf_counter() - t
                sel = int(mask.sum()); tot = q.shape[1] * geo.num_causal_pairs
                STATE["sel"] += sel; STATE["causal"] += tot
                STATE["per_layer"].append(round(sel / tot, 3))
                out = block_sparse_attention_fast(q, k, v, mask, geo, scale)
            outs.append(out)
        return torch.stack(outs).to(query.dtype), None

    AttentionInterface.register("explore", attention)
    return "explore"


def stats(model, ids, impl):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        lp = model(ids).logits[0, :-1].float().log_softmax(-1)
    return lp.gather(1, ids[0, 1:, None])[:, 0], lp.argmax(-1)


def cost(dlp, slp, dtop, stop):
    return (dlp.mean() - slp.mean()).exp().item() - 1, (stop == dtop).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--text", default="prose")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--out", default=str(HERE / "results.jsonl"))
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = convert_smollm2(CACHE / "smollm2")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    tok = AutoTokenizer.from_pretrained(path)
    name, ids = next((n, i) for n, i in texts(tok, [a.tokens], model.config.max_position_embeddings).items() if n.startswith(a.text))
    print(f"{name} {len(ids)} tokens {ids_digest(ids)}", flush=True)
    ids = torch.tensor([ids])
    cache = Path(f"/tmp/selection-cache/dense_{a.text}_{a.tokens}.pt")
    cache.parent.mkdir(parents=True, exist_ok=True)
    if cache.exists():
        dlp, dtop = torch.load(cache)
    else:
        dlp, dtop = stats(model, ids, "sdpa"); torch.save((dlp, dtop), cache)
    print(f"dense ppl {(-dlp.mean()).exp():.4f}", flush=True)
    for spec in a.specs:
        mode, cfg, opts = parse(spec)
        STATE.update(sel=0, causal=0, search_s=0.0, per_layer=[])
        t = time.perf_counter()
        slp, stop = stats(model, ids, register(mode, cfg, opts))
        sec = time.perf_counter() - t
        ch, ag = cost(dlp, slp, dtop, stop)
        quarters = [cost(*p) for p in zip(*(x.chunk(4) for x in (dlp, slp, dtop, stop)))]
        dens = STATE["sel"] / STATE["causal"]
        rec = dict(text=a.text, tokens=a.tokens, spec=spec, ppl_change=round(100 * ch, 3),
                   top1=round(100 * ag, 2), density=round(dens, 4), seconds=round(sec, 1),
                   search_s=round(STATE["search_s"], 1),
                   quarters=[(round(100 * c, 2), round(100 * g, 1)) for c, g in quarters],
                   per_layer=STATE["per_layer"])
        print(f"{a.text} {a.tokens} {spec}: ppl {100*ch:+.2f}% top1 {100*ag:.2f}% density {dens:.3f} "
              f"{sec:.0f}s (search {STATE['search_s']:.0f}s) quarters "
              + " | ".join(f"{100*c:+.2f}%,{100*g:.1f}%" for c, g in quarters), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
