"""The measurement scripts report what ran: a failed engine worker is reported as
failed, never as an earlier run's numbers; the CPU fidelity script measures every
layer's selection unless told otherwise, and refuses a bad configuration before any
work; an engine process never inherits the caller's config file."""

import argparse
import json
import subprocess
import sys

import bench_breakeven
import bench_e2e
import common
import fidelity_cpu
import pytest

from vllm_flexprefill import load_config
from vllm_flexprefill.plugin import CONFIG_ENV


def test_a_failed_worker_reports_no_result_even_over_an_earlier_one(
    tmp_path, monkeypatch
):
    target = tmp_path / "e2e_FLEXPREFILL_default_auto.json"
    target.write_text('{"ttft_s": {"8192": 1.0}}')  # an earlier run's
    monkeypatch.setattr(
        subprocess, "run", lambda command, **_: subprocess.CompletedProcess(command, 1)
    )
    assert bench_e2e.run_worker("FLEXPREFILL", "bench", target, {}) == {}
    assert not target.exists()


def test_a_failed_engine_is_a_row_of_the_table():
    meta = dict(
        gpu="H200", date="2026-12-06", git="abc", command="python bench_e2e.py run",
        kv_cache_dtype="auto", eager=False, repeats=3, lengths=[8192],
        failed=["FLEXPREFILL default"],
    )  # fmt: skip
    dense = dict(
        name="FLASH_ATTN", backend="FLASH_ATTN", ttft_s={"8192": 1.0},
        decode_tokens_per_s=100.0,
    )  # fmt: skip
    table = bench_e2e.markdown([dense], meta)
    assert "| FLEXPREFILL default | failed | failed (its worker wrote no result) |" in (
        table
    )


def test_the_capped_budget_follows_the_longest_prompt():
    """~5% density at the longest prompt: a 131072-token prompt runs in the longer
    context, at 128K's budget."""
    budget = bench_e2e.CAPPED_BUDGET
    assert bench_e2e.capped_budget([8192, 32768]) == budget
    assert bench_e2e.capped_budget([8192, 131072]) == budget
    assert bench_e2e.engine_context([8192, 131072])[0] == bench_e2e.LONG_MAX_MODEL_LEN
    assert bench_e2e.capped_budget([262080]) == 2 * budget


def test_table_labels_name_lengths_exactly():
    assert [common.length_label(n) for n in (131072, 32768, 512, 130048, 32763)] == [
        "128K", "32K", "512", "127K", "32763",
    ]  # fmt: skip


def test_breakeven_crossovers_interpolate_and_its_tables_render(tmp_path):
    """The crossover lies between the measured densities (None: at or over the budget
    from the first point; 1: never gets there); the tables and the plot come out for
    both kernels and for fp8's portable one alone (after a GPU run: no second
    chance)."""
    points = [(d, 10 * d) for d in bench_breakeven.DENSITIES]
    assert bench_breakeven.crossover(points, 4.5) == pytest.approx(0.45)
    assert bench_breakeven.crossover(points, 0.1) is None
    assert bench_breakeven.crossover(points, 11.0) == 1.0
    curve = [dict(density=d, attention_ms=t, tflops=500.0) for d, t in points]
    search = dict(ms=1.2, gpu_ms=0.5, density=0.1)
    for kernels, dtype in ((bench_breakeven.KERNELS, "bf16"), (["portable"], "fp8")):
        row = dict(
            shape="32K prompt", kv_len=32768, fa3_ms=9.0,
            fa3_quarter_heads_ms="refused",
            search=dict(planted=search, diffuse=dict(search, density=1.0)),
            curves=dict.fromkeys(kernels, curve),
        )  # fmt: skip
        meta = dict(date="d", gpu="g", git="r", command="c", kv_cache_dtype=dtype)
        table = bench_breakeven.markdown([row], meta)
        assert f"d 128, {dtype}; the search's settings: default (128-token" in table
        assert (
            "| 32K prompt | " + " | ".join(["0.78 / 0.85 / 0.90"] * len(kernels)) + " |"
            in table
        )
        assert table.count("Attention ms (TF/s) by density") == len(kernels)
        bench_breakeven.plot([row], tmp_path / f"{dtype}.png")


def test_breakeven_search_time_follows_the_selected_density():
    """rerank's search scores twice a row's count of candidates: its time at a density
    lies on the line through its two measurements (flat beyond them), and a search
    that grows with the density crosses FA3 sooner than one that does not."""
    searches = dict(
        planted=dict(ms=2.0, gpu_ms=1.0, density=0.1),
        diffuse=dict(ms=10.0, gpu_ms=None, density=0.9),
    )
    at = bench_breakeven.search_ms_at
    assert at(searches, 0.5) == pytest.approx(6.0)
    assert at(searches, 0.05) == 2.0 and at(searches, 1.0) == 10.0
    # no GPU time measured for the diffuse inputs: its eager time stands in
    assert at(searches, 0.5, "gpu_ms") == pytest.approx(5.5)
    same = dict(planted=dict(ms=2.0, density=1.0), diffuse=dict(ms=3.0, density=1.0))
    assert at(same, 0.3) == 3.0
    curve = [
        dict(density=d, attention_ms=10 * d, tflops=1.0)
        for d in bench_breakeven.DENSITIES
    ]
    row = dict(fa3_ms=8.0, search=searches, curves={"hopper": curve})
    crossing = bench_breakeven.crossovers(row)["hopper"]
    # 10 d + 2 + 10 (d - 0.1) = 8 at d = 0.35, where a constant 2 ms would say 0.6
    assert crossing["whole_layer"] == pytest.approx(0.35)
    assert crossing["per_head"] == pytest.approx(0.8)


def test_breakeven_derives_a_run_anew_from_its_measurements(tmp_path, monkeypatch):
    """``--from-json``: a stored run's crossovers and tables come out again on the
    CPU, from its measurements alone, its meta kept and the derivation named."""
    curve = [
        dict(density=d, attention_ms=10 * d, tflops=1.0)
        for d in bench_breakeven.DENSITIES
    ]
    search = dict(ms=1.0, gpu_ms=1.0, density=0.1)
    row = dict(
        shape="16K prompt", q_len=16384, kv_len=16384, fa3_ms=6.0,
        fa3_quarter_heads_ms=1.5, search=dict(planted=search),
        curves={"hopper": curve, "portable": curve},
        crossovers={"hopper": "stale"},
    )  # fmt: skip
    meta = dict(date="d", gpu="g", git="r", command="measured")  # run 43's: no dtype
    run = tmp_path / "run.json"
    run.write_text(json.dumps(dict(meta=meta, rows=[row])))
    out = tmp_path / "out"
    monkeypatch.setattr(
        sys, "argv", ["bench_breakeven.py", "--from-json", str(run), "--out", str(out)]
    )
    bench_breakeven.main()
    derived = json.loads((out / "breakeven.json").read_text())
    assert derived["meta"]["command"] == "measured"
    assert derived["meta"]["derived"]["source"] == str(run)
    assert derived["rows"][0]["crossovers"]["hopper"]["whole_layer"] == (
        pytest.approx(0.5)
    )
    table = (out / "breakeven.md").read_text()
    assert "Command: `measured`" in table and "derived anew" in table
    assert "| 16K prompt | 0.50 / 0.50 / 0.60 | 0.50 / 0.50 / 0.60 |" in table


def test_breakeven_times_the_search_and_blocks_of_its_config():
    """``bench_breakeven.py --config SPEC``: the search's settings and the blocks' size
    (rerank at 64-token blocks costs another break-even), every layer searched, every
    selection kept however dense."""
    spec = 'selection="rerank",rerank_budget="head",block_size=64,max_density=0.5'
    config = bench_breakeven.search_config(spec)
    assert config.selection == "rerank" and config.block_size == 64
    assert config.dense_threshold == 0
    # the search's own density, never a dense rebuild's
    assert config.max_density == 1
    preset = bench_breakeven.search_config("default")  # max_density: auto in the file
    assert preset.block_size == 128 and preset.max_density == 1
    meta = dict(
        date="d", gpu="g", git="r", command="c", kv_cache_dtype="bf16", config=spec,
        block_size=64,
    )  # fmt: skip
    row = dict(
        shape="32K prompt", kv_len=32768, fa3_ms=10.0, fa3_quarter_heads_ms=2.5,
        search=dict(planted=dict(ms=6.0, gpu_ms=5.0, density=0.2)),
        curves={"hopper": [
            dict(density=d, attention_ms=12 * d, tflops=400.0)
            for d in bench_breakeven.DENSITIES
        ]},
    )  # fmt: skip
    table = bench_breakeven.markdown([row], meta)
    assert f"settings: {spec} (64-token blocks)" in table


def test_breakeven_rows_for_the_table_follow_its_rule():
    """Each range's lowest eager crossover, rounded down to 0.05, never above a longer
    range's; a shape where sparse never pays is 0; fp8's run has no Hopper column."""

    def row(kv_len, hopper, portable):
        """A shape whose attention reaches FA3's 1 ms at each given density (None:
        from the first density on), searches free; "absent": the kernel not run."""

        def curve(crossing):
            return [
                dict(density=d, attention_ms=2.0 if crossing is None else d / crossing)
                for d in bench_breakeven.DENSITIES
            ]

        crossings = {"hopper": hopper, "portable": portable}
        return dict(
            kv_len=kv_len,
            fa3_ms=1.0,
            search=dict(planted=dict(ms=0.0, gpu_ms=0.0, density=0.1)),
            curves={k: curve(v) for k, v in crossings.items() if v != "absent"},
        )

    rows = [
        row(16384, 0.49, 0.37),
        row(32768, 0.84, 0.57),
        row(32768, 0.79, None),  # the last chunk of 32K: never pays on the portable
        row(65536, 0.97, 0.66),
        row(131072, 0.89, 0.61),
        row(131072, 0.98, 0.66),
    ]
    assert bench_breakeven.table_row(rows) == (
        (0.45, 0.0),
        (0.75, 0.0),
        (0.85, 0.6),
        (0.85, 0.6),
    )
    fp8 = [row(16384, "absent", 0.27), row(262144, "absent", 0.5)]
    assert bench_breakeven.table_row(fp8) == (
        (1.0, 0.25),
        (1.0, 0.5),
        (1.0, 0.5),
        (1.0, 0.5),
    )


def test_the_capped_engine_takes_a_budget_and_a_max_density(tmp_path, monkeypatch):
    """``bench_e2e.py run --capped-budget N --capped-max-density D``: the capped
    engine's config file carries both (a controlled density, to time the guard's
    break-even end to end); bad values are refused naming the setting."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    env = bench_e2e.engine_env(4915, tmp_path, 1.0)
    config = load_config(env[CONFIG_ENV])
    assert (config.max_budget, config.max_density, config.tau) == (4915, 1.0, 0.0)
    default = load_config(bench_e2e.engine_env(4915, tmp_path)[CONFIG_ENV])
    assert default.max_density == "auto"
    assert bench_e2e.density_setting("auto") == "auto"
    assert bench_e2e.density_setting("0.7") == 0.7
    for bad in ("1.5", "0", "dense"):
        with pytest.raises(argparse.ArgumentTypeError, match="^max_density: "):
            bench_e2e.density_setting(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="tokens >= 1"):
        bench_e2e.positive_tokens("0")


def test_the_dense_engine_on_128_token_pages_runs_its_own_engine(tmp_path, monkeypatch):
    """``--engines dense128``: FLASH_ATTN on 128-token KV pages (FLEXPREFILL's default)
    is its own engine, asked for the pages by name, and the table divides it, like
    every engine, by FLASH_ATTN on vLLM's default pages."""
    commands = []

    def engine(command, **_):
        commands.append(command)
        target = command[command.index("--out") + 1]
        with open(target, "w") as f:
            f.write('{"ttft_s": {"8192": 0.8}, "decode_tokens_per_s": 100.0}')
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", engine)
    args = argparse.Namespace(
        lengths=[8192], kv_cache_dtype="auto", eager=False, capped_budget=None,
        capped_max_density=None,
    )  # fmt: skip
    result = bench_e2e.run_engine(*bench_e2e.ENGINES["dense128"], args, tmp_path, True)
    (command,) = commands
    assert command[command.index("--block-size") + 1] == "128"
    assert command[command.index("--backend") + 1] == "FLASH_ATTN"
    dense = bench_e2e.run_engine(*bench_e2e.ENGINES["dense"], args, tmp_path, True)
    assert "--block-size" not in commands[1]
    dense["ttft_s"] = {"8192": 1.0}
    meta = dict(
        gpu="H100", date="2026-12-06", git="abc", command="run", kv_cache_dtype="auto",
        eager=False, repeats=3, lengths=[8192],
    )  # fmt: skip
    table = bench_e2e.markdown([result, dense], meta)
    assert "| FLASH_ATTN 128-token pages | 0.800 1.25x | 100 (1.000x) |" in table
    assert "| FLASH_ATTN | 1.000 | 100 (1.000x) |" in table


def test_fidelity_cpu_measures_every_layer_unless_told():
    for spec in ("default", "gamma=0.95", '{"gamma": 0.95}'):
        config = fidelity_cpu.parse_config(spec)
        assert (config.dense_threshold, config.max_density) == (0, 1.0)
    assert fidelity_cpu.parse_config("gamma=0.9,max_density=0.6").max_density == 0.6


@pytest.mark.parametrize(
    "spec", ["selection=rerank", "gamma=0.9,", "no-such-preset", "gama=0.9"]
)
def test_fidelity_cpu_names_a_bad_configuration(spec):
    with pytest.raises(SystemExit, match=f"configuration '{spec}'"):
        fidelity_cpu.parse_config(spec)


def test_an_engine_process_never_inherits_the_caller_s_config(monkeypatch, tmp_path):
    monkeypatch.setenv(CONFIG_ENV, "/home/me/my.yaml")
    assert CONFIG_ENV not in common.flexprefill_env()
    own = common.flexprefill_env(tmp_path / "flex.yaml", "gamma: 0.95\n")
    assert own[CONFIG_ENV] == str(tmp_path / "flex.yaml")
