"""Strict YAML → frozen-dataclass configs with errors that name the file, line and field.

``load_config(path, Schema, overrides=["train.lr=3e-4"])`` reads a YAML file, applies ``--set``
overrides, and builds ``Schema`` (a dataclass tree). An unknown key, a wrong type or a missing
file raises :class:`ConfigError` whose message reads ``configs/x.yaml:14: train.lr: expected
float, got 'abc'``. ``dump_config`` writes the resolved tree back to YAML for the run directory.
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ScorealignError, ValueError):
    """A config that cannot be built; the message names the file, line and dotted field."""


#: Every old dotted field name → its current name, in one table. Names renamed by issue 11
#: (one set of run-contract names for every command) are rejected with a message that gives
#: the new name; names renamed by issue 21 (one ``OptimConfig`` / ``LoraConfig`` vocabulary)
#: are *accepted* and read as the new name, so every shipped YAML and every run directory's
#: ``config.yaml`` written before the rename still loads (also with ``--resume``). An accepted
#: alias must stay in the same mapping as its new name (only the last component changes).
ALIASES: dict[str, tuple[str, bool]] = {
    # old name: (new name, accepted)
    "seed": ("train.seed", False),
    "iterations": ("train.steps", False),
    "ckpt_every": ("train.ckpt_every", False),
    "keep_checkpoints": ("train.keep_checkpoints", False),
    "train.save_every": ("train.ckpt_every", False),
    "train.keep": ("train.keep_checkpoints", False),
    "train.device": ("device", False),
    # issue 21: dpo / dpo task=diffusion spoke max_grad_norm, finetune and pretrain grad_clip
    "train.max_grad_norm": ("train.grad_clip", True),
    # issue 21: dpo spoke schedule, pretrain decay (the lr decay after warm-up)
    "train.schedule": ("train.decay", True),
    # issue 21: dpo and dpo task=diffusion spoke r, finetune rank
    "model.lora.r": ("model.lora.rank", True),
    "lora.r": ("lora.rank", True),
}

#: The rejected part of :data:`ALIASES` (old name → new name).
RENAMED: dict[str, str] = {old: new for old, (new, ok) in ALIASES.items() if not ok}


class FieldError(ScorealignError, ValueError):
    """Raised by a config dataclass's ``__post_init__`` for a bad value of one (dotted) field.

    The loader reports it as ``file:line: <path>.<field>: message`` with the line of that field.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_param_types(params: dict[str, Any], defaults: dict[str, Any],
                      prefix: str = "params") -> None:
    """Check free-form keyword parameters (``loss.params``) against the types of their defaults.

    A number default accepts int or float (not bool), a bool default only a bool, a str default
    only a str; a None default accepts anything; a required parameter (``inspect``'s empty
    default: the objectives' β) must be a number. Raises :class:`FieldError` on ``prefix.<key>``.
    """
    import inspect

    for key, value in params.items():
        default = defaults.get(key)
        if default is inspect.Parameter.empty:
            default = 0.0
        if default is None or value is None:
            continue
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "bool"
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            want = "a number"
        elif isinstance(default, str):
            ok, want = isinstance(value, str), "str"
        else:
            continue
        if not ok:
            raise FieldError(f"{prefix}.{key}", f"expected {want}, got {value!r}")


#: The ``tracker`` field every command's config carries (``scorealign.run.trackers``).
Tracker = Literal["none", "tensorboard", "wandb", "trackio"]


def tracker_field() -> Any:
    """``tracker: Tracker = tracker_field()``: off by default; metrics.jsonl is always written."""
    return help_field("none", "experiment tracker through accelerate: none | tensorboard (RUN/"
                      "tracker, offline) | wandb | trackio; metrics.jsonl is always written")


def help_field(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - metadata key "help"
    """A dataclass field with its ``--help-config`` text; a list/dict default or a dataclass type
    becomes a default factory."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default),
                                 metadata={"help": help}, **kw)
    if isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


# -- the shared schemas (issue 21: one OptimConfig, one LoraConfig, one BaseConfig) -----------
# A command's config uses these classes, or a subclass that only adds its own fields and sets
# its defaults (a field redeclared with another default keeps its name, type and meaning).

@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimizer's settings, under ``train:`` of every command with a gradient loop
    (pretrain, finetune, dpo, dpo task=diffusion); AdamW throughout."""

    lr: float = help_field(1e-4, "peak learning rate (AdamW)")
    weight_decay: float = help_field(0.0, "AdamW weight decay")
    grad_clip: float = help_field(1.0, "max grad norm (0: off); old name max_grad_norm")

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise FieldError("lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise FieldError("weight_decay" if self.weight_decay < 0 else "grad_clip",
                             f"must be >= 0, got {min(self.weight_decay, self.grad_clip)}")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters through peft (``lora:`` of finetune and dpo task=diffusion,
    ``model.lora:`` of dpo).

    ``enabled`` null (finetune's form) means: adapters exactly when ``rank > 0`` (rank 0 trains
    every weight); :attr:`on` is the resolved switch."""

    enabled: bool | None = help_field(False, "train LoRA adapters instead of all weights "
                                      "(null: when rank > 0)")
    rank: int = help_field(8, "adapter rank r; old name r")
    alpha: float = help_field(16.0, "LoRA scaling alpha")
    dropout: float = help_field(0.0, "LoRA dropout (keep 0 for exact resume)")
    target_modules: list[str] = help_field(["to_q", "to_k", "to_v", "to_out.0"],
                                           "module names that get adapters")

    @property
    def on(self) -> bool:
        """Whether adapters are trained."""
        return self.rank > 0 if self.enabled is None else self.enabled

    def __post_init__(self) -> None:
        if self.rank < 0 or (self.on and self.rank < 1):
            raise FieldError("rank", f"must be >= 1 with LoRA on (0: full fine-tuning), got "
                                     f"{self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldError("dropout", f"must be in [0, 1), got {self.dropout}")


DEFAULT_BASE = "pretrained:digits8"  # the shipped model, also when installed


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """The base model a command starts from (``base:`` of finetune, dpo task=diffusion and
    ``rpo build-pairs``): ``pretrained:NAME``, a run directory or a model directory."""

    path: str = help_field(DEFAULT_BASE, "'pretrained:NAME' (shipped models), a pretraining run "
                           "directory, or a model directory (model.safetensors + "
                           "model_config.json)")


@dataclasses.dataclass
class _Located:
    value: Any
    line: int | None


def _compose(node: yaml.Node | None) -> Any:
    """Turn a YAML node tree into Python values wrapped with their 1-based line numbers."""
    if node is None:
        return _Located(None, None)
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for k, v in node.value:
            key = yaml.safe_load(yaml.serialize(k)) if not isinstance(k, yaml.ScalarNode) else k.value
            out[str(key)] = _compose(v)
        return _Located(out, line)
    if isinstance(node, yaml.SequenceNode):
        return _Located([_compose(v) for v in node.value], line)
    value = yaml.SafeLoader(yaml.serialize(node)).get_single_data()
    return _Located(value, line)


def _read_yaml(path: Path) -> _Located:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        node = yaml.compose(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        what = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ConfigError(f"{where}: invalid YAML: {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config: {e}") from None
    loc = _compose(node)
    if loc.value is None:
        loc = _Located({}, 1)
    if not isinstance(loc.value, dict):
        raise ConfigError(f"{path}:{loc.line}: top level must be a mapping")
    return loc


def _set_override(root: _Located, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the located tree."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = root
    for p in parts[:-1]:
        child = node.value.get(p)
        if child is None or not isinstance(child.value, dict):
            child = _Located({}, None)
            node.value[p] = child
        node = child
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {assignment!r}: invalid value: {e}") from None
    node.value[parts[-1]] = _wrap_plain(value)


def _wrap_plain(value: Any) -> _Located:
    if isinstance(value, dict):
        return _Located({str(k): _wrap_plain(v) for k, v in value.items()}, None)
    if isinstance(value, list):
        return _Located([_wrap_plain(v) for v in value], None)
    return _Located(value, None)


def _show(v: Any) -> str:
    return repr(_plain(v))


def _where(src: str, loc: _Located, dotted: str) -> str:
    line = f":{loc.line}" if loc.line is not None else " (--set)"
    return f"{src}{line}: {dotted}"


def _coerce(tp: Any, loc: _Located, dotted: str, src: str) -> Any:
    """Check and convert ``loc.value`` to type ``tp``; raise ConfigError naming the field."""
    v = loc.value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, loc, dotted, src)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{_where(src, loc, dotted)}: "
                          f"expected {_type_name(tp)}, got {_show(v)}")
    if origin is Literal:
        if v not in get_args(tp):
            raise ConfigError(f"{_where(src, loc, dotted)}: expected one of "
                              f"{list(get_args(tp))}, got {_show(v)}")
        return v
    if dataclasses.is_dataclass(tp):
        if not isinstance(v, dict):
            raise ConfigError(f"{_where(src, loc, dotted)}: expected a mapping, got {_show(v)}")
        return _build(tp, loc, dotted, src)
    if origin in (list, tuple):
        if not isinstance(v, list):
            raise ConfigError(f"{_where(src, loc, dotted)}: expected a list, got {_show(v)}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, it, f"{dotted}[{i}]", src) for i, it in enumerate(v)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{_where(src, loc, dotted)}: expected a mapping, got {_show(v)}")
        return {k: _plain(x) for k, x in v.items()}
    if tp is Any:
        return _plain(loc)
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{_where(src, loc, dotted)}: expected bool, got {_show(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{_where(src, loc, dotted)}: expected int, got {_show(v)}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            # YAML reads 3e-4 as a string (no dot); accept numeric strings for floats only.
            try:
                v = float(v) if isinstance(v, str) else _raise()
            except (ValueError, TypeError):
                raise ConfigError(f"{_where(src, loc, dotted)}: expected float, got {_show(v)}") from None
        if not math.isfinite(v):  # one rule for every float field: nan / inf is never a setting
            raise ConfigError(f"{_where(src, loc, dotted)}: expected a finite float, got {v}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{_where(src, loc, dotted)}: expected str, got {_show(v)}")
        return v
    raise ConfigError(f"{_where(src, loc, dotted)}: unsupported field type {tp!r}")


def _raise() -> Any:
    raise ValueError


def _plain(x: Any) -> Any:
    if isinstance(x, _Located):
        x = x.value
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


#: One range rule for every command's config (issue 26): a budget, count, size or interval
#: given in a YAML file or with --set must be > 0 (>= 1), a learning rate > 0, a warm-up, decay or clip
#: >= 0, a decay or probability in [0, 1] (and every float finite, see ``_coerce``). Matched by
#: field name, checked before anything is written; fields whose 0 means "off" (``eval_every``)
#: or "none" are not in these sets; seeds and guidance scales take any value.
AT_LEAST_ONE = frozenset({"epochs", "steps", "iterations", "batch_size", "per_epoch", "k",
                          "minibatch_size", "sample_batch_size", "inner_epochs", "grad_accum",
                          "log_every", "ckpt_every", "keep_checkpoints", "num_eval", "n_paths",
                          "eval_paths",
                          # sizes of networks and samples (num_classes: 0 is unconditional)
                          "channels", "layers_per_block", "norm_num_groups",
                          "attention_head_dim", "label_dim", "text_dim", "data_dim", "hidden",
                          "depth", "emb_dim", "latent_size", "dim", "control_hidden",
                          "num_samples", "end_scales", "backprop_steps",
                          # optional caps (null: none)
                          "limit", "max_pairs", "stop_after_steps"})
NON_NEGATIVE = frozenset({"warmup_steps", "weight_decay", "grad_clip", "eta", "exploration",
                          "sft_weight", "critic_ridge", "num_classes", "attempts", "degree",
                          "critic_degree", "q_degree"})
POSITIVE = frozenset({"lr", "alpha", "beta", "time_scale", "rho", "init_std", "reference_dt",
                      "clip_sample"})
#: Decays, probabilities, quantiles and strengths: in [0, 1].
UNIT_INTERVAL = frozenset({"ema_decay", "quantile", "min_label_prob", "redraw_strength",
                           "repair_strength", "lam"})


def _check_range(name: str, value: Any) -> str | None:
    """Why ``value`` is out of the shared range of field ``name``, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if name in AT_LEAST_ONE and value < 1:  # integer counts: > 0, as the commands always said
        return f"must be > 0, got {value}"
    if name in NON_NEGATIVE and value < 0:
        return f"must be >= 0, got {value}"
    if name in POSITIVE and not value > 0:
        return f"must be > 0, got {value}"
    if name in UNIT_INTERVAL and not 0 <= value <= 1:
        return f"must be in [0, 1], got {value}"
    return None


def _build(cls: type, loc: _Located, prefix: str, src: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, child in loc.value.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields and dotted in ALIASES and ALIASES[dotted][1]:
            new = ALIASES[dotted][0].rpartition(".")[2]
            if new in loc.value:
                raise ConfigError(f"{_where(src, child, dotted)}: old name of "
                                  f"{ALIASES[dotted][0]}, which is also given; keep one")
            key, dotted = new, ALIASES[dotted][0]
        if key not in fields:
            where = _where(src, child, dotted)  # its YAML line, or "(--set)" for an override
            if dotted in RENAMED:
                where = _where(src, child, dotted)  # its own line, or "(--set)"
                raise ConfigError(f"{where}: renamed to {RENAMED[dotted]} (one name for every "
                                  f"command); write {RENAMED[dotted]} instead")
            raise ConfigError(f"{where}: unknown key; valid keys here: {sorted(fields)}")
        kwargs[key] = _coerce(hints[key], child, dotted, src)
        if (problem := _check_range(key, kwargs[key])) is not None:
            raise ConfigError(f"{_where(src, child, dotted)}: {problem}")
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and \
                f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            dotted = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{_where(src, loc, dotted)}: required field is missing")
    try:
        return cls(**kwargs)
    except FieldError as e:
        dotted = f"{prefix}.{e.field}" if prefix else e.field
        raise ConfigError(f"{_where(src, _find(loc, e.field), dotted)}: {e}") from None
    except (ValueError, TypeError) as e:
        head, sep, rest = str(e).partition(": ")
        if sep and isinstance(loc.value, dict) and head in loc.value:  # "field: message"
            dotted = f"{prefix}.{head}" if prefix else head
            raise ConfigError(f"{_where(src, _find(loc, head), dotted)}: {rest}") from None
        raise ConfigError(f"{_where(src, loc, prefix or '<root>')}: {e}") from None


def _find(loc: _Located, dotted: str) -> _Located:
    """The deepest located node on the path ``dotted`` below ``loc`` (itself when absent)."""
    node = loc
    for part in dotted.split("."):
        child = node.value.get(part) if isinstance(node.value, dict) else None
        if child is None:
            break
        node = child
    return node


def load_config(path: str | Path | None, schema: type, overrides: list[str] | tuple = ()) -> Any:
    """Build ``schema`` from a YAML file plus ``key=value`` overrides, strictly.

    Args:
        path: YAML file, or None to start from the schema's defaults.
        schema: a (frozen) dataclass type; nested dataclasses become nested mappings.
        overrides: ``a.b=value`` strings, values parsed as YAML (``--set`` on the CLI).
    Raises:
        ConfigError: naming ``file:line: dotted.field`` and what was expected.
    """
    src = str(path) if path is not None else "<defaults>"
    root = _read_yaml(Path(path)) if path is not None else _Located({}, None)
    for a in overrides:
        _set_override(root, a)
    return _build(schema, root, "", src)


def config_from_dict(data: dict, schema: type, src: str = "<dict>") -> Any:
    """Build ``schema`` from a plain dict (e.g. a config.yaml read back from a run directory)."""
    return _build(schema, _wrap_plain(data), "", src)


def to_dict(cfg: Any) -> Any:
    """Dataclass tree → plain dicts/lists (for YAML and JSON)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_config(cfg: Any) -> str:
    """Resolved config as YAML text (written to ``RUN_DIR/config.yaml``)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe(schema: type, prefix: str = "") -> list[str]:
    """One line per field with its default and ``metadata['help']`` (``--help-config``)."""
    lines = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"{dotted}:  {f.metadata.get('help', '')}")
            lines.extend(describe(tp, dotted))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "<required>")  # type: ignore[misc]
        lines.append(f"{dotted} = {default!r}  ({_type_name(tp)})  {f.metadata.get('help', '')}")
    return lines
