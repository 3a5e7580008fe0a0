"""Configuration: shipped presets load, bad files fail with one readable message."""

import pytest

from vllm_flexprefill.config import ConfigError, FlexPrefillConfig, load_config, preset_names

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
        assert (config.gamma, config.tau, config.min_budget, config.block_size) == (gamma, 0.1, 1024, 128)
    assert load_config("default.yaml") == load_config("default")


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(source) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    message = str(info.value)
    assert "pydantic" not in message and "Traceback" not in message and "errors.pydantic.dev" not in message
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
        ("layers:\n  - {first: 2, last: 5, gamma: 7}\n", "layers[0].gamma", "(0, 1]"),
    ],
)
def test_out_of_range_values_name_file_field_and_allowed_values(tmp_path, text, field, allowed):
    path = write(tmp_path, text)
    message = error_of(path)
    assert str(path) in message and f"{field}:" in message and allowed in message


def test_unknown_keys_are_named_with_the_allowed_ones(tmp_path):
    message = error_of(write(tmp_path, "gama: 0.9\n"))
    assert "unknown field 'gama'" in message and "gamma, tau, block_size" in message


def test_inverted_budgets_are_refused(tmp_path):
    message = error_of(write(tmp_path, "min_budget: 4096\nmax_budget: 1024\n"))
    assert "max_budget (1024) is below min_budget (4096)" in message


def test_inverted_budgets_from_a_layer_override_are_refused_at_load(tmp_path):
    text = "max_budget: 2048\nlayers:\n  - {first: 3, last: 4, min_budget: 4096}\n"
    message = error_of(write(tmp_path, text))
    assert "layer 3" in message and "max_budget (2048) is below min_budget (4096)" in message


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
    assert [config.for_layer(i).gamma for i in range(5)] == [0.95, 0.95, 0.99, 0.95, 0.9]
    assert config.for_layer(2).block_size == 64 and config.for_layer(3).block_size == 128
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
