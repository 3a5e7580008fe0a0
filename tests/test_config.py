"""Configuration: shipped presets load, bad files fail with one readable message."""

import itertools
from functools import partial
from typing import get_args

import pytest

from vllm_flexprefill.break_even import BREAK_EVEN, RANGES, break_even_density
from vllm_flexprefill.config import (
    ALLOWED,
    SETTINGS,
    ConfigError,
    FlexPrefillConfig,
    as_config,
    load_config,
    preset_names,
)

PAPER_GAMMA = {
    "default": 0.9,
    "llama-3.1-8b-instruct": 0.95,
    "glm-4-9b-chat": 0.95,
    "yi-9b-200k": 0.9,
    "qwen2-7b-instruct": 0.9,
}


def test_every_preset_loads_with_the_paper_settings():
    assert set(preset_names()) == set(PAPER_GAMMA)
    for name, gamma in PAPER_GAMMA.items():
        config = load_config(name)
        assert (config.gamma, config.tau, config.min_budget, config.block_size) == (
            gamma,
            0.1,
            1024,
            128,
        )
    assert load_config("default.yaml") == load_config("default")


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(source) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    message = str(info.value)
    assert (
        "pydantic" not in message
        and "Traceback" not in message
        and "errors.pydantic.dev" not in message
    )
    return message


@pytest.mark.parametrize(
    "text, field, allowed",
    [
        ("gamma: 1.5\n", "gamma", "(0, 1]"),
        ("gamma: 0\n", "gamma", "(0, 1]"),
        ("tau: 0.9\n", "tau", "[0, 0.84]"),
        ("block_size: 96\n", "block_size", "64 or 128"),
        ("min_budget: 0\n", "min_budget", ">= 1"),
        ("min_budget: 12.5\n", "min_budget", "whole number"),
        ("dense_threshold: -1\n", "dense_threshold", ">= 0"),
        ("max_density: 0\n", "max_density", "(0, 1]"),
        ("max_density: 1.5\n", "max_density", "(0, 1]"),
        ("layers:\n  - {first: 2, last: 5, gamma: 7}\n", "layers[0].gamma", "(0, 1]"),
    ],
)
def test_out_of_range_values_name_file_field_and_allowed_values(
    tmp_path, text, field, allowed
):
    path = write(tmp_path, text)
    message = error_of(path)
    assert str(path) in message and f"{field}:" in message and allowed in message


def test_allowed_values_are_spelled_out_from_the_limits():
    assert {name: ALLOWED[name] for name in SETTINGS} == {
        "gamma": "a number in (0, 1]",
        "tau": (
            "a number in [0, 0.84] (the Jensen-Shannon distance is at most "
            "sqrt(ln 2) = 0.833)"
        ),
        "block_size": "64 or 128",
        "selection": (
            "paper, vsgrid or rerank (paper: the chunk's last query block picks each "
            "head's blocks; vsgrid: probes spread over the chunk estimate each query "
            "block's; rerank: vsgrid's candidates ranked by sampled queries of each "
            "query block)"
        ),
        "rerank_budget": (
            "row or head (selection rerank only; row: each query block keeps as many "
            "blocks as vsgrid's; head: each head keeps as many in all, spent over its "
            "query blocks where the sampled queries' shares are largest)"
        ),
        "min_budget": "a whole number of tokens >= 1",
        "max_budget": "null, or a whole number of tokens >= min_budget",
        "dense_threshold": "a whole number of tokens >= 0",
        "max_density": (
            "auto, or a number in (0, 1] (the fraction of causal blocks above which "
            "a selection runs dense; auto: where the sparse path stops paying, by "
            "context length, attention kernel, selection mode and block size; 1: "
            "never)"
        ),
    }
    assert (ALLOWED["first"], ALLOWED["last"]) == (
        "a layer index >= 0",
        "a layer index >= first",
    )


# Per setting: a value on the edge of its limits, and values past them or of
# the wrong type.
EDGES = {
    "gamma": (1, [0, 1.01, "x", "0.95", True]),
    "tau": (0.84, [-0.01, 0.85, "0.1", False]),
    "block_size": (64, [96, "64"]),
    "selection": ("vsgrid", ["grid", 1]),
    "rerank_budget": ("row", ["column", 1]),
    "min_budget": (1, [0, 2.5, "8", True]),
    "max_budget": (1, [0, 2.5]),
    "dense_threshold": (0, [-1, 2.5]),
    "max_density": (1, [0, -0.1, 1.5, "dense", "Auto", True, "0.5"]),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_a_layer_override_has_the_limits_of_the_setting(name):
    # so that max_budget 1 fits
    base = load_config("default").with_overrides({"min_budget": 1}, "base")
    edge, bad_values = EDGES[name]
    in_layer = [{"first": 0, "last": 0, name: edge}]
    assert base.with_overrides({"layers": in_layer}, "src").for_layer(
        0
    ) == base.with_overrides({name: edge}, "src")
    for bad in bad_values:
        with pytest.raises(ConfigError) as top:
            base.with_overrides({name: bad}, "src")
        with pytest.raises(ConfigError) as layer:
            base.with_overrides({"layers": [{"first": 0, "last": 0, name: bad}]}, "src")
        assert f"allowed: {ALLOWED[name]})" in str(top.value)
        assert str(layer.value) == str(top.value).replace(
            f"  - {name}:", f"  - layers[0].{name}:"
        )


MAX_DENSITY_ALLOWED = (
    "allowed: auto, or a number in (0, 1] (the fraction of causal blocks above which "
    "a selection runs dense; auto: where the sparse path stops paying, by context "
    "length, attention kernel, selection mode and block size; 1: never)"
)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("0", "Input should be greater than 0 (got 0; "),
        ("-0.1", "Input should be greater than 0 (got -0.1; "),
        ("1.5", "Input should be less than or equal to 1 (got 1.5; "),
        (".nan", "Input should be less than or equal to 1 (got nan; "),
        ("dense", "Input should be a valid number (got 'dense'; "),
        ("AUTO", "Input should be a valid number (got 'AUTO'; "),
        # YAML's yes/on are booleans: not 1 (which would turn the guard off)
        ("yes", "Input should be a valid number (got True; "),
    ],
)
def test_max_density_out_of_range_is_one_line_naming_field_value_and_limits(
    tmp_path, text, problem
):
    path = write(tmp_path, f"max_density: {text}\n")
    assert error_of(path) == (
        f"{path}: invalid FlexPrefill config:\n"
        f"  - max_density: {problem}{MAX_DENSITY_ALLOWED})"
    )
    in_layer = write(
        tmp_path, f"layers:\n  - {{first: 1, last: 2, max_density: {text}}}\n"
    )
    assert error_of(in_layer) == (
        f"{in_layer}: invalid FlexPrefill config:\n"
        f"  - layers[0].max_density: {problem}{MAX_DENSITY_ALLOWED})"
    )


def test_max_density_is_set_per_layer(tmp_path):
    text = (
        "max_density: 0.5\nlayers:\n  - {first: 1, last: 2, max_density: 1}\n"
        "  - {first: 2, last: 3, max_density: 0.25}\n"
    )
    config = load_config(write(tmp_path, text))
    assert [config.for_layer(i).max_density for i in range(5)] == [
        0.5,
        1.0,
        0.25,
        0.25,
        0.5,
    ]
    assert config.for_layer(None).max_density == 0.5
    assert "max_density=0.5" in config.describe()


def test_presets_and_the_default_config_run_dense_above_the_break_even():
    for name in preset_names():
        assert load_config(name).max_density == "auto", name
    config = FlexPrefillConfig()
    assert config.max_density == "auto"
    for kv_len in (1, 16384, 16385, 32768, 65537, 1 << 20):
        for hopper in (False, True):
            limit = break_even_density(kv_len, hopper)
            assert config.density_limit(kv_len, hopper) == limit
            # of every head's causal block pairs, all heads together
            assert config.max_selected(4, 10, kv_len, hopper) == 40 * limit
    assert FlexPrefillConfig(max_density=0.5).max_selected(4, 10, 1 << 20, True) == 20
    assert FlexPrefillConfig(max_density=1).max_selected(3, 7, 100, False) == 21
    assert "max_density=auto" in config.describe()


def test_the_break_even_never_falls_with_the_length_and_is_the_kernel_s():
    """The guard starts a longer bucket on a sparse shorter one's density: safe only
    if the limit never falls with the length. The Hopper kernel's rate is the higher
    one, so is its break-even wherever its sparse path pays at all; for every search
    and block size, sparse at the longest lengths."""
    lengths = [1 << b for b in range(8, 22)]
    for (search, block_size), crossovers in BREAK_EVEN.items():
        assert len(crossovers) == len(RANGES)
        at = partial(break_even_density, selection=search, block_size=block_size)
        for hopper in (False, True):
            limits = [at(n, hopper) for n in lengths]
            assert limits == sorted(limits) and limits[0] >= 0
            assert 0 < limits[-1] < 1
        assert all(at(n, True) > at(n, False) or at(n, True) == 0 for n in lengths)
        # the ranges' ends: a length belongs to the first range that holds it
        for end, (hopper, portable) in zip(RANGES[:-1], crossovers, strict=False):
            assert at(end, True) == hopper and at(end, False) == portable


def test_auto_follows_the_search_s_cost_and_the_blocks_size():
    """rerank's search costs far more than the paper's, and the kernels compute a
    64-token block more slowly than a 128-token one: ``auto`` runs such configs dense
    from lower densities, at every length; vsgrid's search costs the paper's."""
    lengths = [1 << b for b in range(8, 22)]
    selections = get_args(FlexPrefillConfig.model_fields["selection"].annotation)
    for selection in selections:
        for block_size in (64, 128):
            config = FlexPrefillConfig(selection=selection, block_size=block_size)
            for n, hopper in itertools.product(lengths, (False, True)):
                limit = config.density_limit(n, hopper)
                assert limit == break_even_density(n, hopper, selection, block_size)
                paper = break_even_density(n, hopper, "paper", block_size)
                if selection == "rerank":
                    assert limit < paper
                else:
                    assert limit == paper
                assert limit <= break_even_density(n, hopper, selection, 128)


def test_unknown_keys_are_named_with_the_allowed_ones(tmp_path):
    message = error_of(write(tmp_path, "gama: 0.9\n"))
    assert "unknown field 'gama'" in message and "gamma, tau, block_size" in message


def test_inverted_budgets_are_refused(tmp_path):
    message = error_of(write(tmp_path, "min_budget: 4096\nmax_budget: 1024\n"))
    assert "max_budget (1024) is below min_budget (4096)" in message


def test_inverted_budgets_from_a_layer_override_are_refused_at_load(tmp_path):
    text = "max_budget: 2048\nlayers:\n  - {first: 3, last: 4, min_budget: 4096}\n"
    message = error_of(write(tmp_path, text))
    assert (
        "layer 3" in message
        and "max_budget (2048) is below min_budget (4096)" in message
    )


def test_a_head_wide_rerank_budget_needs_rerank_selection_in_every_layer(tmp_path):
    head = "selection: rerank\nrerank_budget: head\n"
    assert load_config(write(tmp_path, head)).rerank_budget == "head"
    path = write(tmp_path, "selection: vsgrid\nrerank_budget: head\n")
    assert error_of(path) == (
        f"{path}: invalid FlexPrefill config:\n  - rerank_budget 'head' needs "
        "selection 'rerank' (got selection 'vsgrid'; allowed with it: 'row')"
    )
    layer = write(
        tmp_path, head + "layers:\n  - {first: 2, last: 3, selection: paper}\n"
    )
    assert error_of(layer) == (
        f"{layer}: invalid FlexPrefill config:\n  - layer 2: rerank_budget 'head' "
        "needs selection 'rerank' (got selection 'paper'; allowed with it: 'row')"
    )


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "gamma: 0.9\ntau: [0.1\n")
    message = error_of(path)
    assert str(path) in message and "not valid YAML at line" in message


def test_a_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    assert "must be a YAML mapping" in error_of(write(tmp_path, "- 0.9\n"))


def test_missing_file_lists_the_presets():
    message = error_of("no-such-config.yaml")
    assert "not found" in message and "llama-3.1-8b-instruct" in message


def test_layer_overrides_apply_in_order_to_their_range(tmp_path):
    text = (
        "gamma: 0.9\nlayers:\n  - {first: 0, last: 3, gamma: 0.95}\n"
        "  - {first: 2, last: 2, gamma: 0.99, block_size: 64}\n"
    )
    config = load_config(write(tmp_path, text))
    assert [config.for_layer(i).gamma for i in range(5)] == [
        0.95,
        0.95,
        0.99,
        0.95,
        0.9,
    ]
    assert (
        config.for_layer(2).block_size == 64 and config.for_layer(3).block_size == 128
    )
    assert config.for_layer(None).layers == ()


def test_overrides_from_a_mapping_are_validated():
    config = load_config("default").with_overrides({"gamma": 0.95}, "additional_config")
    assert config.gamma == 0.95
    with pytest.raises(ConfigError, match="(?s)additional_config: .*tau: .*0.84"):
        load_config("default").with_overrides({"tau": 2.0}, "additional_config")


def test_routing_by_threshold_and_chunk_length():
    config = FlexPrefillConfig(dense_threshold=4096, block_size=128)
    assert config.runs_sparse(q_len=4096, kv_len=4096)
    assert not config.runs_sparse(q_len=4095, kv_len=4095)
    assert config.runs_sparse(q_len=128, kv_len=8192)
    assert not config.runs_sparse(q_len=127, kv_len=8192)


# ---------------------------------------------------------------- as_config


def config_error(make) -> str:
    with pytest.raises(ConfigError) as info:
        make()
    return str(info.value)


@pytest.mark.parametrize(
    "update, expected",
    [
        ({"gamma": 5}, "gamma: Input should be less than or equal to 1 (got 5; "),
        ({"gama": 0.9}, "unknown field 'gama'; allowed fields: gamma, tau"),
        ({"min_budget": 4096, "max_budget": 1024}, "max_budget (1024) is below"),
        ({"dense_threshold": -1}, "dense_threshold: Input should be greater than"),
        ({"block_size": 96}, "block_size: Input should be 64 or 128 (got 96; "),
        ({"max_density": 2}, "max_density: Input should be less than or equal to 1"),
    ],
)
def test_as_config_validates_a_config_that_model_copy_left_unchecked(update, expected):
    unchecked = load_config("default").model_copy(update=update)
    message = config_error(lambda: as_config(unchecked, "config"))
    assert message.startswith("config: invalid FlexPrefill config:")
    assert expected in message and "allowed" in message


def test_as_config_checks_layer_overrides_that_model_copy_changed(tmp_path):
    config = load_config(write(tmp_path, "layers:\n  - {first: 0, last: 1}\n"))
    layer = config.layers[0].model_copy(update={"gamma": 3})
    message = config_error(
        lambda: as_config(config.model_copy(update={"layers": [layer]}))
    )
    assert "layers[0].gamma: " in message
    assert "got 3; allowed: a number in (0, 1]" in message
    assert as_config(config) == config


def test_as_config_takes_every_form_of_a_config(tmp_path):
    default = load_config("default")
    assert as_config(None) == default and as_config(default) == default
    assert as_config("llama-3.1-8b-instruct").gamma == 0.95
    assert as_config(write(tmp_path, "gamma: 0.8\n")).gamma == 0.8
    assert as_config({"gamma": 0.85, "layers": [{"first": 0, "last": 0}]}).gamma == 0.85
    message = config_error(lambda: as_config({"tau": 2.0}, "flex"))
    assert message.startswith("flex: invalid FlexPrefill config:")
    assert "tau: " in message


@pytest.mark.parametrize(
    "settings, expected",
    [
        # keys that start like a type name pydantic may add to a path
        ({"interval": 3}, "unknown field 'interval'; allowed fields: gamma, tau"),
        ({"nonesuch": 1}, "unknown field 'nonesuch'; allowed fields: gamma, tau"),
        (
            {"layers": [{"first": 0, "last": 1, "interval": 2}]},
            "unknown field 'layers[0].interval'; allowed fields: gamma, tau",
        ),
        (
            {"layers": [5]},
            "layers[0]: Input should be a valid dictionary or instance of "
            "LayerOverride (got 5; allowed: an override {first: int, last: int, "
            "<field>: value, ...})",
        ),
    ],
)
def test_an_unknown_key_or_entry_is_named_in_full(settings, expected):
    assert expected in config_error(lambda: as_config(settings))


def test_as_config_refuses_other_types_naming_the_argument():
    assert config_error(lambda: as_config(3)) == (
        "config must be a FlexPrefillConfig, a preset name or YAML path, or a "
        "mapping of settings; got int 3"
    )


def test_with_overrides_needs_a_mapping_and_names_its_source():
    config = load_config("default").with_overrides({"dense_threshold": 2048})
    assert config.dense_threshold == 2048
    message = config_error(lambda: config.with_overrides({"gamma": 2}))
    assert message.startswith("overrides: invalid FlexPrefill config:")
    assert config_error(lambda: config.with_overrides([("gamma", 0.9)])) == (
        "overrides must be a mapping of FlexPrefill settings (gamma, tau, block_size, "
        "selection, rerank_budget, min_budget, max_budget, dense_threshold, "
        "max_density, layers); "
        "got list [('gamma', 0.9)]"
    )


def test_with_overrides_keeps_the_layer_overrides(tmp_path):
    config = load_config(
        write(tmp_path, "layers:\n  - {first: 0, last: 1, tau: 0.2}\n")
    )
    derived = config.with_overrides({"gamma": 0.8})
    assert (derived.for_layer(0).tau, derived.for_layer(0).gamma) == (0.2, 0.8)
    assert derived.for_layer(2).tau == 0.1


def test_a_bare_preset_name_means_the_preset_even_with_a_file_of_that_name(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "gamma: 0.5\n", name="default")
    assert load_config("default").gamma == 0.9
    assert load_config("./default").gamma == 0.5
    assert load_config(tmp_path / "default").gamma == 0.5
    message = error_of("./llama-3.1-8b-instruct")
    assert "'./llama-3.1-8b-instruct' not found" in message and "presets: " in message


def test_an_inverted_layer_range_is_one_message_naming_last(tmp_path):
    expected = (
        "layers[0].last: Input should be at least first (3) "
        "(got 1; allowed: a layer index >= first)"
    )
    path = write(tmp_path, "layers: [{first: 3, last: 1}]\n")
    assert error_of(path) == f"{path}: invalid FlexPrefill config:\n  - {expected}"
    message = config_error(lambda: as_config({"layers": [{"first": 3, "last": 1}]}))
    assert message == f"config: invalid FlexPrefill config:\n  - {expected}"
    assert message.count("allowed") == 1


@pytest.mark.parametrize(
    "text, where",
    [
        ("gamma: 0.5\ntau: 0.2\ngamma: 0.99\n", "line 3, column 1"),
        ("layers:\n  - {first: 0, last: 1, gamma: 0.5, gamma: 0.99}\n", "line 2"),
    ],
)
def test_a_field_given_twice_is_refused_not_overwritten(tmp_path, text, where):
    """YAML's loader keeps the last value silently: the first would be ignored."""
    message = config_error(lambda: load_config(write(tmp_path, text)))
    assert f"not valid YAML at {where}" in message
    assert message.endswith("field 'gamma' given twice (each field once)")


def test_yaml_merge_keys_still_override(tmp_path):
    """A key an entry sets over one merged into it (``<<``) is no repeated field."""
    text = (
        "layers:\n"
        "  - &wide {first: 0, last: 1, gamma: 0.5}\n"
        "  - {<<: *wide, first: 2, last: 3}\n"
    )
    second = load_config(write(tmp_path, text)).layers[1]
    assert (second.first, second.last, second.gamma) == (2, 3, 0.5)


@pytest.mark.parametrize(
    "text, expected",
    [
        # a user's key that is exactly a type name pydantic may add to a path
        ("gamma: 0.95\nint: 3\n", "unknown field 'int'; allowed fields: gamma, tau"),
        (
            "layers:\n  - {first: 0, last: 3, str: paper}\n",
            "unknown field 'layers[0].str'; allowed fields: gamma, tau",
        ),
        (
            "0: 5\n",
            "0: a field name must be a string (got int 0; allowed fields: gamma, tau",
        ),
        (
            "layers:\n  - {first: 0, last: 3, 5: 1}\n",
            "layers[0].5: a field name must be a string (got int 5; allowed fields:",
        ),
    ],
)
def test_a_bad_field_name_is_named_as_given(tmp_path, text, expected):
    assert expected in config_error(lambda: load_config(write(tmp_path, text)))


@pytest.mark.parametrize(
    "name, expected",
    [
        (None, "a preset name or a YAML file's path (a string); got NoneType None"),
        (b"/x.yaml", "(a string); got bytes b'/x.yaml'"),
        ("a" * 5000, "not found: no such file, and not a shipped preset"),
        (".", "'.' not found: a folder, not a file, and not a shipped preset"),
    ],
)
def test_load_config_refuses_what_names_no_file_in_one_message(name, expected):
    assert expected in config_error(lambda: load_config(name))


def test_max_density_takes_numbers_as_the_other_fractions_do():
    """numpy numbers (a script's computed value) pass as they do for gamma."""
    import numpy as np

    for value in (np.float32(0.5), np.int64(1), 0.25, 1):
        assert as_config({"max_density": value, "gamma": value}).max_density == value
    assert as_config({"max_density": "auto"}).max_density == "auto"
