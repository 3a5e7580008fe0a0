"""FlexPrefill configuration: a pydantic model, shipped YAML presets and readable
errors.

A configuration is a YAML mapping::

    gamma: 0.95            # attention mass each head must keep, in (0, 1]
    tau: 0.1               # JS-distance threshold: D < tau -> query-aware head
    block_size: 128        # sparse block size in tokens (64 or 128)
    selection: paper       # paper (last-block probe), vsgrid (per-segment probes) or
                           # rerank (vsgrid re-ranked by sampled queries)
    rerank_budget: row     # rerank only: row (each query block keeps vsgrid's count)
                           # or head (each head keeps its rows' counts in all)
    min_budget: 1024       # tokens; floor of the vertical and of the slash budget
                           # (vsgrid: of each query block's kept key blocks)
    max_budget: null       # tokens; cap of both budgets (null: no cap)
    dense_threshold: 16384 # sequences shorter than this many tokens run dense
    max_density: auto      # selections keeping more of the causal blocks run dense
                           # (auto: where the sparse path stops paying; 1: never)
    layers:                # optional per-layer overrides, applied in order
      - {first: 0, last: 1, gamma: 0.99}

Presets ship inside the package (``configs/*.yaml``) and load by name; any other
YAML file loads by path. :func:`as_config` takes any of the forms a config is given in
(a preset name, a path, a mapping, a :class:`FlexPrefillConfig`) and validates it. Every
error is a :class:`ConfigError` whose message names the file, the field and the allowed
values.
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import reprlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from .blocks import cdiv
from .break_even import break_even_density


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is meant for the user as is."""


_FRACTION = TypeAdapter(Annotated[float, Field(gt=0.0, le=1.0, strict=True)])


def _density(value: Any) -> float | Literal["auto"]:
    """``max_density``'s value: ``"auto"``, or a number in (0, 1] as the other
    fractions take it (strict: not a bool, not a numeric string)."""
    if isinstance(value, str) and value == "auto":
        return value
    try:
        return _FRACTION.validate_python(value)
    except ValidationError as err:
        raise ValueError(err.errors()[0]["msg"]) from None


# A density limit: "auto" or a number in (0, 1]; one validator, so that a bad value
# gets one message (a union type would give one per member).
Density = Annotated[
    float | Literal["auto"],
    PlainValidator(_density, json_schema_input_type=float | Literal["auto"]),
]


class _Settings(BaseModel):
    """The tunable fields shared by the whole-model config and the per-layer overrides.

    Their limits are written here only: the per-layer overrides take them over, and
    error messages spell them out (followed by the field's ``description``, if any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # numbers only (strict: a bool or a string is refused, as for the whole numbers)
    gamma: float = Field(0.9, gt=0.0, le=1.0, strict=True)
    tau: float = Field(
        0.1,
        ge=0.0,
        le=0.84,
        strict=True,
        description="the Jensen-Shannon distance is at most sqrt(ln 2) = 0.833",
    )
    block_size: Literal[64, 128] = 128
    selection: Literal["paper", "vsgrid", "rerank"] = Field(
        "paper",
        description="paper: the chunk's last query block picks each head's blocks; "
        "vsgrid: probes spread over the chunk estimate each query block's; "
        "rerank: vsgrid's candidates ranked by sampled queries of each query block",
    )
    rerank_budget: Literal["row", "head"] = Field(
        "row",
        description="selection rerank only; row: each query block keeps as many "
        "blocks as vsgrid's; head: each head keeps as many in all, spent over its "
        "query blocks where the sampled queries' shares are largest",
    )
    min_budget: int = Field(1024, ge=1, strict=True)
    max_budget: int | None = Field(None, ge=1, strict=True)
    dense_threshold: int = Field(16384, ge=0, strict=True)
    max_density: Density = Field(
        "auto",
        description="the fraction of causal blocks above which a selection runs "
        "dense; auto: where the sparse path stops paying, by context length, "
        "attention kernel, selection mode and block size; 1: never",
    )

    @model_validator(mode="after")
    def _budgets_ordered(self) -> _Settings:
        if self.max_budget is not None and self.max_budget < self.min_budget:
            raise ValueError(
                f"max_budget ({self.max_budget}) is below "
                f"min_budget ({self.min_budget}) "
                f"(allowed: {ALLOWED['max_budget']})"
            )
        return self

    @model_validator(mode="after")
    def _rerank_budget_with_rerank(self) -> _Settings:
        if self.rerank_budget != "row" and self.selection != "rerank":
            raise ValueError(
                f"rerank_budget {self.rerank_budget!r} needs selection 'rerank' "
                f"(got selection {self.selection!r}; allowed with it: 'row')"
            )
        return self


SETTINGS = tuple(_Settings.model_fields)  # their names, in order


def _optional(field: FieldInfo) -> tuple[Any, FieldInfo]:
    """``field`` as a create_model definition that may be left out (None), with the
    same limits."""
    return field.rebuild_annotation() | None, Field(None, description=field.description)


# LayerOverride's fields: the range, then every setting made optional (None: left out).
_LayerFields = create_model(
    "_LayerFields",
    first=(int, Field(ge=0, strict=True)),
    last=(int, Field(ge=0, strict=True)),
    **{name: _optional(field) for name, field in _Settings.model_fields.items()},
)


class LayerOverride(_LayerFields):
    """Settings that replace the model-wide ones on layers ``first..last``
    (inclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("last")
    @classmethod
    def _range_ordered(cls, last: int, info: ValidationInfo) -> int:
        first = info.data.get("first")  # absent when first itself is invalid
        if first is not None and last < first:
            raise ValueError(f"Input should be at least first ({first})")
        return last

    def settings(self) -> dict[str, Any]:
        """The fields this override sets (those not left out)."""
        return {
            k: v
            for k, v in self.model_dump(include=set(SETTINGS)).items()
            if k in self.model_fields_set
        }


def _allowed(field: FieldInfo, whole: str = "a whole number of tokens") -> str:
    """What ``field`` accepts, in words, from its type and limits ("64 or 128",
    "a number in (0, 1]", ``whole`` + " >= 1" for a whole number), then its
    description in brackets."""
    if get_origin(field.annotation) is Literal:
        *others, last = map(str, get_args(field.annotation))
        text = f"{', '.join(others)} or {last}"
    else:
        text = (whole if field.annotation is int else "a number") + _bounds(field)
    return f"{text} ({field.description})" if field.description else text


# The bounds pydantic keeps in a field's metadata (``Field(gt=...)`` -> ``Gt(gt=...)``),
# as signs.
_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _bounds(field: FieldInfo) -> str:
    """The limits of ``field`` in words: " in (0, 1]" between two, " >= 1" from one,
    "" without any."""
    limits = {
        key: f"{getattr(item, key):g}"
        for item in field.metadata
        for key in _SIGNS
        if hasattr(item, key)
    }
    low = (
        f"({limits['gt']}"
        if "gt" in limits
        else f"[{limits['ge']}"
        if "ge" in limits
        else None
    )
    high = (
        f"{limits['lt']})"
        if "lt" in limits
        else f"{limits['le']}]"
        if "le" in limits
        else None
    )
    if low and high:
        return f" in {low}, {high}"
    return "".join(f" {_SIGNS[key]} {value}" for key, value in limits.items())


# What each field accepts, in words, for error messages: written out where a rule spans
# fields, generated from the field's type and limits elsewhere.
_SPANNING = {
    "max_budget": "null, or a whole number of tokens >= min_budget",
    "max_density": "auto, or a number in (0, 1] "
    f"({_Settings.model_fields['max_density'].description})",
    "last": "a layer index >= first",
    "layers": "a list of overrides {first: int, last: int, <field>: value, ...}",
    "layers[]": "an override {first: int, last: int, <field>: value, ...}",
}
ALLOWED = {
    **{
        name: _allowed(field)
        for name, field in _Settings.model_fields.items()
        if name not in _SPANNING
    },
    "first": _allowed(LayerOverride.model_fields["first"], whole="a layer index"),
    **_SPANNING,
}


class FlexPrefillConfig(_Settings):
    """FlexPrefill hyper-parameters for a whole model, with optional per-layer
    overrides.

    Budgets are in tokens and become blocks by rounding up: a head keeps at least
    ``ceil(min_budget / block_size)`` vertical columns and as many slash diagonals.
    """

    layers: tuple[LayerOverride, ...] = ()

    @model_validator(mode="after")
    def _overrides_valid(self) -> FlexPrefillConfig:
        # Every stretch of layers between range boundaries gets one merged setting:
        # validate each of them now, not when that layer first runs.
        starts = sorted(
            {o.first for o in self.layers} | {o.last + 1 for o in self.layers}
        )
        for layer in starts:
            self.for_layer(layer)
        return self

    def for_layer(self, layer: int | None) -> FlexPrefillConfig:
        """The settings in force on ``layer`` (no per-layer overrides left inside)."""
        if layer is None or not self.layers:
            return self.model_copy(update={"layers": ()}) if self.layers else self
        merged = self.model_dump(include=set(SETTINGS))
        for override in self.layers:
            if override.first <= layer <= override.last:
                merged.update(override.settings())
        try:
            return FlexPrefillConfig(**merged)
        except ValidationError as err:
            raise ValueError(f"layer {layer}: {_first_message(err)}") from None

    def check_layer_count(self, num_layers: int) -> None:
        """Refuse a per-layer override that no layer of a ``num_layers``-layer model
        falls in (a ``last`` past the model's end is fine: "to the last layer")."""
        for i, override in enumerate(self.layers):
            if override.first >= num_layers:
                raise ConfigError(
                    f"layers[{i}].first: {override.first} is past the model's last "
                    f"layer ({num_layers - 1}), so the override would apply to no "
                    f"layer; allowed: a layer index in [0, {num_layers - 1}]"
                )

    @property
    def block_sizes(self) -> set[int]:
        """Every sparse block size some layer uses (the model's and its overrides')."""
        return {self.block_size} | {
            o.block_size for o in self.layers if o.block_size is not None
        }

    def with_overrides(
        self, overrides: Mapping[str, Any], source: str = "overrides"
    ) -> FlexPrefillConfig:
        """A validated copy with top-level ``overrides`` applied, e.g.
        ``load_config("default").with_overrides({"dense_threshold": 2048})``; errors
        name ``source``. (pydantic's ``model_copy(update=...)`` does not validate.)"""
        if not isinstance(overrides, Mapping):
            raise ConfigError(
                f"{source} must be a mapping of FlexPrefill settings "
                f"({', '.join(FIELDS)}); got {_shown(overrides)}"
            )
        return _validate(_given_fields(self) | dict(overrides), source)

    def runs_sparse(self, q_len: int, kv_len: int) -> bool:
        """Whether a chunk of ``q_len`` queries ending a ``kv_len``-token sequence takes
        the sparse path: the sequence reaches ``dense_threshold`` and the chunk holds at
        least one block of queries (a shorter chunk would pay the search for little)."""
        return kv_len >= self.dense_threshold and q_len >= self.block_size

    def budget_limits(self, num_k_blocks: int) -> tuple[int, int]:
        """``(min, max)`` budget in blocks for a sequence of ``num_k_blocks`` key
        blocks: ``min_budget`` and ``max_budget`` rounded up to whole blocks, both at
        most ``num_k_blocks`` (no ``max_budget``: every key block)."""
        B = self.block_size
        high = num_k_blocks
        if self.max_budget is not None:
            high = min(high, cdiv(self.max_budget, B))
        return min(cdiv(self.min_budget, B), high), high

    def density_limit(self, kv_len: int, hopper_kernel: bool) -> float:
        """The selected share of the causal blocks above which a request of ``kv_len``
        keys runs dense: ``max_density``, or with ``auto`` the measured break-even
        (``break_even.py``) of this config's search and block size and of the
        attention kernel that computes its blocks (``hopper_kernel``: the Hopper one,
        else the portable one)."""
        if self.max_density == "auto":
            return break_even_density(
                kv_len, hopper_kernel, self.selection, self.block_size
            )
        return self.max_density

    def max_selected(
        self, num_heads: int, causal_pairs: int, kv_len: int, hopper_kernel: bool
    ) -> float:
        """The most block pairs a request's heads may select together and still run
        sparse (``causal_pairs`` per head, ``kv_len`` keys): :meth:`density_limit` of
        the causal ones. Above it the search saves too little, and the request attends
        every causal block."""
        return self.density_limit(kv_len, hopper_kernel) * num_heads * causal_pairs

    def describe(self) -> str:
        """One line for logs."""
        text = ", ".join(f"{k}={getattr(self, k)}" for k in SETTINGS)
        return text + (f", {len(self.layers)} layer override(s)" if self.layers else "")


FIELDS = tuple(FlexPrefillConfig.model_fields)  # SETTINGS, then layers
OVERRIDE_FIELDS = SETTINGS + ("first", "last")  # a layers entry's, as listed


def as_config(value: Any, argument: str = "config") -> FlexPrefillConfig:
    """``value`` as a validated config: None -> the ``default`` preset; a
    :class:`FlexPrefillConfig` -> validated again (``model_copy(update=...)`` may have
    slipped in any value or name); a ``str`` or ``os.PathLike`` -> :func:`load_config`;
    a mapping -> its settings. Errors name ``argument``."""
    if value is None:
        return load_config("default")
    if isinstance(value, FlexPrefillConfig):
        return _validate(_given_fields(value), argument)
    if isinstance(value, str | os.PathLike):
        return load_config(value)
    if isinstance(value, Mapping):
        return _validate(dict(value), argument)
    raise ConfigError(
        f"{argument} must be a FlexPrefillConfig, a preset name or YAML path, or a "
        f"mapping of settings; got {_shown(value)}"
    )


def _given_fields(model: BaseModel) -> dict[str, Any]:
    """The fields ``model`` holds as given (each layer override's without its
    left-out ones), unknown names that ``model_copy(update=...)`` added included."""
    known = type(model).model_fields
    data = {
        name: value
        for name, value in vars(model).items()
        if name in model.model_fields_set or name not in known
    }
    if "layers" in data:
        data["layers"] = [
            _given_fields(o) if isinstance(o, BaseModel) else o for o in data["layers"]
        ]
    return data


def reads_as(key: Any, name: str) -> bool:
    """Whether a mapping key other than ``name`` itself reads as meant for it: ``name``
    in another case, with separators (``"flex_prefill"``), a suffix
    (``"flexprefill_config"``) or a typo."""
    if not isinstance(key, str) or key == name:
        return False
    folded = "".join(c for c in key.lower() if c.isalnum())
    return folded.startswith(name) or bool(
        difflib.get_close_matches(folded, [name], cutoff=0.8)
    )


def _shown(value: Any) -> str:
    """``value``'s type and a short repr, for messages: "int 3"."""
    return f"{type(value).__name__} {reprlib.repr(value)}"


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    root = importlib.resources.files("vllm_flexprefill.configs")
    return sorted(
        p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml")
    )


def load_config(name_or_path: str | os.PathLike = "default") -> FlexPrefillConfig:
    """Load a shipped preset or a YAML file. Raises :class:`ConfigError` with a
    readable message.

    A preset's bare name (``"default"``, ``"llama-3.1-8b-instruct"``, ...: no path
    separator, no suffix) always means the shipped preset, even where a file of that
    name exists in the working directory (write ``./default`` for the file). Anything
    else is a path; a preset's file name (``"default.yaml"``) that is no file here
    also names the preset."""
    if not isinstance(name_or_path, str | os.PathLike):
        raise ConfigError(
            f"FlexPrefill config must be a preset name or a YAML file's path (a "
            f"string); got {_shown(name_or_path)}"
        )
    text = os.fspath(name_or_path)
    if text in preset_names():
        return _load_preset(text)
    path = Path(text)
    try:
        found = path.is_file()
        directory = not found and path.is_dir()
    except (OSError, ValueError):  # a name too long for a path, a NUL byte
        found = directory = False
    if found:
        return _load_file(str(path.resolve()))
    if text.removesuffix(".yaml") in preset_names():
        return _load_preset(text.removesuffix(".yaml"))
    what = "a folder, not a file" if directory else "no such file"
    raise ConfigError(
        f"FlexPrefill config {reprlib.repr(text)} not found: {what}, and not a "
        f"shipped preset (presets: {', '.join(preset_names())})"
    )


@cache
def _load_preset(name: str) -> FlexPrefillConfig:
    resource = importlib.resources.files("vllm_flexprefill.configs") / f"{name}.yaml"
    return _parse(
        resource.read_text(encoding="utf-8"), f"preset {name!r} ({name}.yaml)"
    )


def _load_file(path: str) -> FlexPrefillConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{path}: cannot read the FlexPrefill config: {err}"
        ) from None
    return _parse(text, path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, but a mapping that gives a key twice is an error
    (PyYAML keeps the last value silently: the first would be ignored)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<" merges: later keys override them by design
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if repeated:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"field {key!r} given twice (each field once)",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _parse(text: str, source: str) -> FlexPrefillConfig:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{source}: not valid YAML{at}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a FlexPrefill config must be a YAML mapping of fields "
            f"({', '.join(FIELDS)}), got {type(data).__name__}"
        )
    return _validate(data, source)


def _check_field_names(data: Mapping[Any, Any], source: str) -> None:
    """Field names must be strings, at the top and in each ``layers`` entry (pydantic
    would report a number as a ``layers`` index)."""
    layers = data.get("layers")
    entries = layers if isinstance(layers, list) else []
    places = [("", data, FIELDS)] + [
        (f"layers[{i}].", entry, OVERRIDE_FIELDS)
        for i, entry in enumerate(entries)
        if isinstance(entry, Mapping)
    ]
    for where, mapping, allowed in places:
        for key in mapping:
            if not isinstance(key, str):
                raise ConfigError(
                    f"{source}: invalid FlexPrefill config:\n  - {where}{key!r}: a "
                    f"field name must be a string (got {_shown(key)}; allowed "
                    f"fields: {', '.join(allowed)})"
                )


def _validate(data: dict[str, Any], source: str) -> FlexPrefillConfig:
    """``data`` as a config; a :class:`ConfigError` listing every problem, headed by
    ``source``, if it is not one."""
    _check_field_names(data, source)
    try:
        return FlexPrefillConfig.model_validate(data)
    except ValidationError as err:
        problems = [_describe(e) for e in err.errors()]
    listing = "\n".join(f"  - {p}" for p in problems)
    raise ConfigError(f"{source}: invalid FlexPrefill config:\n{listing}") from None


_UNION_TAGS = frozenset({"int", "float", "none", "str", "bool"})


def _describe(error: dict[str, Any]) -> str:
    """One readable line for one pydantic error: field path, what was wrong, what is
    allowed."""
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    # pydantic may add a union member's tag (e.g. "int", "literal[64,128]") to the
    # path: those exact tags go, a user's key that merely starts so stays, and so does
    # an unknown field's name, whatever it is (the path's last part)
    own = loc[-1:] if error["type"] == "extra_forbidden" else []
    loc = [
        part
        for part in loc[: len(loc) - len(own)]
        if part not in _UNION_TAGS and not part.startswith("literal[")
    ] + own
    field = ".".join(f"[{p}]" if p.isdigit() else p for p in loc).replace(".[", "[")
    name = loc[-1] if loc else ""
    if name.isdigit():  # an entry of layers
        name = "layers[]"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(FIELDS if len(loc) == 1 else OVERRIDE_FIELDS)
        return f"unknown field {field!r}; allowed fields: {allowed}"
    if not field:
        return error["msg"].removeprefix("Value error, ")
    got = f"got {error['input']!r}; " if error["type"] != "missing" else ""
    message = error["msg"].removeprefix("Value error, ")
    return f"{field}: {message} ({got}allowed: {ALLOWED.get(name, 'see the README')})"


def _first_message(err: ValidationError) -> str:
    return _describe(err.errors()[0])
