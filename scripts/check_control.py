"""Serving control on a GPU: per-request settings over the OpenAI API and the
``vllm_flexprefill_`` series on ``/metrics``, dummy-weight Llama-3.1-8B served with
``vllm serve --attention-backend FLEXPREFILL`` (eager prefill, to start fast).

Three servers, the capped settings of ``bench_e2e.py`` with ``dense_threshold`` 4096:

* ``plain``: without the request-settings hook; times the first token of three fresh
  64K prompts (median);
* ``hooked``: with ``--logits-processors ...RequestSettings``; the same timing
  (requests without an entry must not slow down: within 3%), then a request whose
  entry is bad (HTTP 400 naming the field, and the server still answers), then
  ``/metrics`` before and after a burst of long prompts (the series move);
* ``stats``: hooked, with ``VLLM_FLEXPREFILL_STATS`` and a 200K-token step budget:
  while a first 64K prompt runs, three more queue (about 64K tokens each: one without
  an entry, one with other settings, one ``"dense"``) and are scheduled in one step:
  the statistics lines show both sparse requests in one layer call, each with its own
  settings, and the dense one absent.

Usage: python scripts/check_control.py --out DIR [--checks plain hooked stats]
(all three by default; writes DIR/check_control.json; exits non-zero when a check fails)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from common import (
    CAPPED_BUDGET,
    CAPPED_SETTINGS,
    COMPILATION_CONFIG,
    LLAMA_8B_MODEL,
    flexprefill_env,
    random_prompts,
    start_server,
)

from vllm_flexprefill import stats

PORT = 8013
URL = f"http://127.0.0.1:{PORT}"
HOOK = "vllm_flexprefill.request_settings:RequestSettings"
TTFT_LENGTH = 65536
# per concurrent request: prompt length, its flexprefill entry (None: none)
ASKED = [
    (64000, None),
    (64100, json.dumps({"gamma": 0.8, "max_budget": 512})),
    (64200, "dense"),
]
# the stats server's step budget: the three asked prompts fit one step
STATS_STEP_TOKENS = 200_000


def serve(out: Path, name: str, hooked: bool, stats_file: Path | None = None):
    """A server of the capped settings, with the hook or not; with statistics (and
    a step budget that fits the asked prompts) when ``stats_file`` is given."""
    settings = CAPPED_SETTINGS.format(max_budget=CAPPED_BUDGET)
    settings += "dense_threshold: 4096\n"
    env = flexprefill_env(out / "control.yaml", settings, stats_file)
    args = [LLAMA_8B_MODEL, "--load-format", "dummy", "--skip-tokenizer-init"]
    args += ["--attention-backend", "FLEXPREFILL", "--max-model-len", "70000"]
    args += ["-cc", json.dumps(COMPILATION_CONFIG)]
    args += ["--logits-processors", HOOK] if hooked else []
    if stats_file is not None:
        args += ["--max-num-batched-tokens", str(STATS_STEP_TOKENS)]
    return start_server(args, env, out / f"serve_{name}.log", PORT)


def complete(ids: list[int], entry: str | None = None) -> requests.Response:
    body = {"model": LLAMA_8B_MODEL, "prompt": ids, "max_tokens": 1}
    if entry is not None:
        body["vllm_xargs"] = {"flexprefill": entry}
    return requests.post(f"{URL}/v1/completions", json=body, timeout=600)


def time_to_first_token(seed: int) -> float:
    """Median seconds of three fresh 64K-token completions of one token (after a
    warm-up prompt that lets the density guard measure every layer)."""
    complete(random_prompts([20000], seed=seed)[0]["prompt_token_ids"])
    times = []
    for prompt in random_prompts([TTFT_LENGTH] * 3, seed=seed + 1):
        t0 = time.perf_counter()
        assert complete(prompt["prompt_token_ids"]).status_code == 200
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flexprefill_series() -> dict[str, float]:
    text = requests.get(f"{URL}/metrics", timeout=10).text
    return {
        name: float(value)
        for name, value in (
            line.rsplit(" ", 1)
            for line in text.splitlines()
            if line.startswith("vllm_flexprefill_")
        )
    }


def check_plain(out: Path) -> dict:
    server = serve(out, "plain", hooked=False)
    try:
        return dict(ttft_s=time_to_first_token(seed=40))
    finally:
        server.terminate()
        server.wait(60)


def check_hooked(out: Path) -> dict:
    server = serve(out, "hooked", hooked=True)
    try:
        ttft = time_to_first_token(seed=40)
        bad = complete([1000] * 100, json.dumps({"gamma": 2}))
        healthy = requests.get(f"{URL}/health", timeout=10).status_code == 200
        after_bad = complete([1000] * 100).status_code
        before = flexprefill_series()
        with ThreadPoolExecutor(4) as pool:
            prompts = random_prompts([16384] * 4, seed=50)
            list(pool.map(lambda p: complete(p["prompt_token_ids"]), prompts))
        time.sleep(2.5)  # the snapshots are written once a second
        after = flexprefill_series()
    finally:
        server.terminate()
        server.wait(60)
    moved = {
        name: after[name] - before.get(name, 0.0)
        for name in after
        if after[name] != before.get(name, 0.0)
    }
    return dict(
        ttft_s=ttft,
        bad_entry=dict(status=bad.status_code, message=bad.text[:500]),
        healthy_after=healthy and after_bad == 200,
        series=after,
        moved=moved,
    )


def check_stats(out: Path) -> dict:
    stats_file = out / "control_stats.jsonl"
    server = serve(out, "stats", hooked=True, stats_file=stats_file)
    try:
        first, *prompts = random_prompts([64300] + [n for n, _ in ASKED], seed=60)
        with ThreadPoolExecutor(len(ASKED) + 1) as pool:
            running = pool.submit(complete, first["prompt_token_ids"])
            time.sleep(0.5)  # the asked prompts queue behind it
            replies = list(
                pool.map(
                    lambda pair: complete(pair[0]["prompt_token_ids"], pair[1][1]),
                    zip(prompts, ASKED, strict=True),
                )
            )
            replies.append(running.result())
    finally:
        server.terminate()
        server.wait(60)
    lines = stats.read(stats_file)
    # per request length: the settings each line ran it with
    seen: dict[int, list[dict]] = {}
    shared = 0
    for line in lines:
        lengths = [kv for _, kv in line["requests"]]
        shared = max(shared, len(lengths))
        for kv, settings in zip(lengths, line["settings"], strict=True):
            seen.setdefault(kv, []).append(settings)
    return dict(
        statuses=[r.status_code for r in replies],
        layer_calls=len(lines),
        most_requests_in_one_call=shared,
        settings_seen={n: s[:1] for n, s in seen.items()},
        lengths_seen=sorted(seen),
    )


def verdicts(result: dict) -> dict[str, bool]:
    """Each acceptance point of the checks that ran, passed or not."""
    passed = {}
    if "hooked" in result:
        hooked = result["hooked"]
        if "plain" in result:
            passed["ttft_within_3_percent"] = (
                hooked["ttft_s"] <= 1.03 * result["plain"]["ttft_s"]
            )
        passed["bad_entry_400_naming_gamma"] = (
            hooked["bad_entry"]["status"] == 400
            and "gamma" in hooked["bad_entry"]["message"]
        )
        passed["healthy_after_bad_entry"] = hooked["healthy_after"]
        passed["metrics_moved"] = any(
            name.startswith("vllm_flexprefill_prefill_tokens_total")
            for name in hooked["moved"]
        )
    if "stats" in result:
        seen = result["stats"]
        asked = seen["settings_seen"].get(ASKED[1][0], [{}])[0]
        passed["all_requests_answered"] = seen["statuses"] == [200] * (len(ASKED) + 1)
        passed["requests_share_a_batch"] = seen["most_requests_in_one_call"] >= 2
        passed["own_settings_applied"] = (
            asked.get("gamma") == 0.8 and asked.get("max_budget") == 512
        )
        passed["dense_request_not_sparse"] = ASKED[2][0] not in seen["lengths_seen"]
    return passed


CHECKS = {"plain": check_plain, "hooked": check_hooked, "stats": check_stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {name: CHECKS[name](out) for name in args.checks}
    result["passed"] = verdicts(result)
    (out / "check_control.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    sys.exit(0 if all(result["passed"].values()) else 1)


if __name__ == "__main__":
    main()
