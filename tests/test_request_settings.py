"""Per-request settings: the ``flexprefill`` extra argument's forms and mistakes, the
logits processor's slot bookkeeping, and vLLM's validation of a request through it."""

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CPU-platform tests (vLLM config on a CPU)"
)

from vllm import SamplingParams  # noqa: E402
from vllm.engine.arg_utils import EngineArgs  # noqa: E402
from vllm.v1.sample.logits_processor import (  # noqa: E402
    BatchUpdate,
    MoveDirectionality,
)

from vllm_flexprefill import FlexPrefillConfig, load_config  # noqa: E402
from vllm_flexprefill.config import ConfigError  # noqa: E402
from vllm_flexprefill.request_settings import (  # noqa: E402
    HOOK,
    RequestSetting,
    RequestSettings,
    batch_settings,
    enabled,
    parse,
)

MODEL = str(Path(__file__).parent / "data" / "tiny-llama")
PROCESSOR = "vllm_flexprefill.request_settings:RequestSettings"


def test_the_engines_that_read_requests_settings_are_told_apart():
    """What the backend's start-up log line (settings not read) keys on, in each
    spelling vLLM's ``logits_processors`` takes."""
    assert HOOK == PROCESSOR
    spellings = [PROCESSOR, RequestSettings]
    assert all(enabled(["other.module:Processor", hook]) for hook in spellings)
    assert not any(enabled(none) for none in (None, [], ["other.module:Processor"]))


@pytest.fixture(autouse=True)
def no_processor_left_behind():
    """The processor registers itself for this process's builders: unregister it."""
    yield
    RequestSettings.current = None


def test_the_forms_a_request_may_use():
    assert parse(None) is None and parse({"other": 1}) is None
    assert parse({"flexprefill": "dense"}) == RequestSetting(dense=True)
    assert parse({"flexprefill": '{"gamma": 0.95, "tau": 0}'}) == RequestSetting(
        changes=(("gamma", 0.95), ("tau", 0))
    )
    # offline, a mapping
    assert parse({"flexprefill": {"gamma": 0.95, "tau": 0}}) == parse(
        {"flexprefill": '{"tau": 0, "gamma": 0.95}'}
    )
    # a preset: its settings, the server's block grid
    preset = parse({"flexprefill": "llama-3.1-8b-instruct"})
    server = FlexPrefillConfig(block_size=64, gamma=0.8, min_budget=256)
    applied = preset.config_over(server)
    assert applied.gamma == load_config("llama-3.1-8b-instruct").gamma == 0.95
    assert applied.block_size == 64 and applied.min_budget == 1024
    # the server's settings for what the request leaves alone
    applied = parse({"flexprefill": {"tau": 0.0}}).config_over(server)
    assert (applied.tau, applied.gamma, applied.block_size) == (0.0, 0.8, 64)
    assert RequestSetting(dense=True).config_over(server) is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"gamma": 1.5}, r"gamma: .*got 1.5.*allowed"),
        ('{"tau": "high"}', r"tau: .*'high'"),
        ({"block_size": 64}, r"flexprefill.block_size: cannot be set per request"),
        ({"layers": []}, r"flexprefill.layers: cannot be set per request"),
        ({"gama": 0.9}, r"flexprefill.gama: cannot be set per request .*unknown"),
        ({"min_budget": 4096, "max_budget": 1024}, r"max_budget \(1024\) is below"),
        (
            {"rerank_budget": "head"},
            r"flexprefill.rerank_budget: 'head' needs selection 'rerank' in the same "
            r"request .*allowed alone: 'row'",
        ),
        (
            {"selection": "paper", "rerank_budget": "head"},
            r"rerank_budget 'head' needs selection 'rerank' \(got selection 'paper'",
        ),
        ({"rerank_budget": "heads"}, r"rerank_budget: .*'heads'"),
        ("sparse", r"'sparse' is neither 'dense', a preset .*default.* nor a JSON"),
        ('{"gamma": 0.9', r"not a JSON object of settings"),
        (
            0.9,
            r"flexprefill must be 'dense', a preset name or a mapping of .*; got float",
        ),
    ],
)
def test_mistakes_name_the_field_and_what_is_allowed(value, expected):
    with pytest.raises(ValueError, match=expected):
        parse({"flexprefill": value})


@pytest.mark.parametrize(
    "value, expected",
    [
        ('{"gamma": 0.5, "gamma": 0.99}', "flexprefill: field 'gamma' given twice"),
        (
            '{"gamma": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "flexprefill: not a JSON object of settings (nested too deeply)",
        ),
        (
            '{"min_budget": ' + "9" * 5000 + "}",
            "flexprefill: not a JSON object of settings (Exceeds",
        ),
    ],
)
def test_json_that_would_lose_a_setting_or_crash_is_refused(value, expected):
    """A repeated key kept only its last value; deep nesting raised RecursionError
    (HTTP 500, not 400)."""
    with pytest.raises(ConfigError) as info:
        parse({"flexprefill": value})
    assert str(info.value).startswith(expected)


@pytest.mark.parametrize("key", ["flex_prefill", "FlexPrefill", "flexprefill "])
def test_a_misspelt_extra_argument_is_refused_not_ignored(key):
    with pytest.raises(ConfigError) as info:
        parse({key: "dense"})
    assert str(info.value).startswith(f"extra argument {key!r} is not 'flexprefill'")
    assert parse({"other_processor": 1}) is None  # other keys pass


def test_an_asked_budget_wins_over_the_layers_other_budget():
    """Checked alone, ``max_budget`` 512 is fine; over a layer whose ``min_budget`` is
    1024 the minimum follows it down (and an asked minimum lifts a lower maximum), so
    the request runs with what it asked, never the layer's settings instead."""
    server = FlexPrefillConfig(min_budget=1024, max_budget=4096)
    capped = parse({"flexprefill": {"max_budget": 512}}).config_over(server)
    assert (capped.min_budget, capped.max_budget) == (512, 512)
    roomy = parse({"flexprefill": {"min_budget": 8192}}).config_over(server)
    assert (roomy.min_budget, roomy.max_budget) == (8192, 8192)
    inside = parse({"flexprefill": {"max_budget": 2048}}).config_over(server)
    assert (inside.min_budget, inside.max_budget) == (1024, 2048)
    uncapped = FlexPrefillConfig(min_budget=1024, max_budget=None)
    assert (
        parse({"flexprefill": {"min_budget": 8192}}).config_over(uncapped).max_budget
        is None
    )


SERVERS = [
    FlexPrefillConfig(),
    FlexPrefillConfig(selection="vsgrid", min_budget=4096, max_budget=8192),
    FlexPrefillConfig(selection="rerank", block_size=64, min_budget=1),
    FlexPrefillConfig(selection="rerank", rerank_budget="head", max_budget=2048),
]
ACCEPTED = [
    {"gamma": 0.95},
    {"selection": "paper"},
    {"selection": "vsgrid", "max_budget": 512},
    {"selection": "rerank"},
    {"selection": "rerank", "rerank_budget": "head"},
    {"rerank_budget": "row"},
    {"min_budget": 16384},
    "llama-3.1-8b-instruct",
]


@pytest.mark.parametrize("server", SERVERS, ids=lambda c: f"{c.selection}")
def test_every_accepted_request_runs_over_every_layers_settings(server):
    """What the front end accepts merges onto any layer's settings without error
    (a failure there would stop the engine step, not one request), and runs as
    asked: a request that leaves rerank drops the layer's head-wide budget, one
    that asks for it gets it."""
    for value in ACCEPTED:
        applied = parse({"flexprefill": value}).config_over(server)
        asked = value if isinstance(value, dict) else {}
        for name, setting in asked.items():
            assert getattr(applied, name) == setting, (value, server)
        if applied.selection != "rerank":
            assert applied.rerank_budget == "row"
        elif "rerank_budget" not in asked:
            assert applied.rerank_budget == server.rerank_budget


def added(index, extra_args):
    return (index, SamplingParams(extra_args=extra_args), [1, 2], [])


def test_the_processor_follows_requests_through_the_persistent_batch():
    processor = RequestSettings(None, torch.device("cpu"), False)
    assert RequestSettings.current is processor
    dense, sharper = {"flexprefill": "dense"}, {"flexprefill": {"gamma": 0.99}}
    processor.update_state(
        BatchUpdate(4, [], [added(0, dense), added(1, None), added(2, sharper)], [])
    )
    want_dense, want_sharper = parse(dense), parse(sharper)
    assert batch_settings(4) == (want_dense, None, want_sharper, None)
    # request 0 finishes; condense moves slot 2 into it; a new request takes slot 2
    processor.update_state(
        BatchUpdate(
            3,
            [0],
            [],
            [(2, 0, MoveDirectionality.UNIDIRECTIONAL)],
        )
    )
    assert batch_settings(3) == (want_sharper, None, None)
    processor.update_state(BatchUpdate(3, [], [added(2, dense)], []))
    # a reorder swaps slots 0 and 1
    processor.update_state(BatchUpdate(3, [], [], [(0, 1, MoveDirectionality.SWAP)]))
    assert batch_settings(3) == (None, want_sharper, want_dense)
    processor.update_state(None)  # no change this step
    assert batch_settings(3) == (None, want_sharper, want_dense)
    logits = torch.randn(3, 10)
    assert processor.apply(logits) is logits and processor.is_argmax_invariant()


def test_vllm_refuses_a_bad_setting_at_the_front_end_with_its_message():
    """The check vLLM's input processor runs on every request (a ``ValueError`` there
    is the OpenAI server's HTTP 400)."""
    model = (
        EngineArgs(
            model=MODEL,
            skip_tokenizer_init=True,
            load_format="dummy",
            logits_processors=[PROCESSOR],
        )
        .create_engine_config()
        .model_config
    )
    good = SamplingParams(extra_args={"flexprefill": '{"gamma": 0.95}'})
    good._validate_logits_processors(model)
    bad = SamplingParams(extra_args={"flexprefill": '{"gamma": 2}'})
    with pytest.raises(ValueError, match=r"(?s)flexprefill: .*gamma: .*got 2;"):
        bad._validate_logits_processors(model)
