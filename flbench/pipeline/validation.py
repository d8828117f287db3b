"""Validation building blocks of the typed configs (flbench.pipeline.config, flbench.experiments.spec): value
types with one-line messages, registry checks, and `config_error`, which turns a pydantic ValidationError into
ONE line naming the key path (or the CLI option), the bad value and what is accepted.

Validators raise `value_error(accepted)` for a bad value ('<where>: <value> is not accepted; <accepted>') or
`message_error(msg)` for a complete message (e.g. a registry's FlbenchError); `key` extends the key path
(e.g. the parameter a defense refused). Validation context `{"registries": False}` skips every registry
lookup (`use_registries`).
"""
from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    PlainValidator,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from flbench.core.errors import FlbenchError

# ------------------------------------------------------------------------------------------------ errors


def value_error(accepted: str, key: str | None = None) -> PydanticCustomError:
    """A bad value: printed as '<where>: <value> is not accepted; <accepted>'."""
    return PydanticCustomError("flbench_value", "{accepted}", {"accepted": accepted, **({"key": key} if key else {})})


def message_error(msg: str, key: str | None = None) -> PydanticCustomError:
    """A complete message (e.g. a registry's): printed as '<where>: <msg>'. `key` extends the key path."""
    return PydanticCustomError("flbench_message", "{msg}", {"msg": msg, **({"key": key} if key else {})})


def _named_key(msg: str, params: Mapping[str, Any]) -> str | None:
    """The parameter a registry's message is about ("sigma=-1 ...", "... parameter 'stepz'")."""
    for k in sorted(params, key=len, reverse=True):
        if re.search(rf"(?<![\w.-]){re.escape(k)}=|'{re.escape(k)}'", msg):
            return k
    return None


def registry_call(fn, *args: Any, key_prefix: str | None = None, **params: Any) -> Any:
    """`fn(*args, **params)` (a registry's constructor); its FlbenchError becomes a validation error whose key
    path ends in `key_prefix` and the parameter the message names."""
    try:
        return fn(*args, **params)
    except FlbenchError as e:
        k = _named_key(str(e), params)
        key = ".".join(x for x in (key_prefix, k) if x) or None
        raise message_error(str(e), key) from None


def use_registries(info: ValidationInfo) -> bool:
    """False when validating with context {"registries": False} (shape only)."""
    ctx = info.context
    return bool(ctx.get("registries", True)) if isinstance(ctx, Mapping) else True


def _path(loc: tuple, key: str | None = None) -> str:
    out = ""
    for seg in (*loc, *([key] if key else [])):
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def _accepted_keys(model: Any, loc: tuple) -> list[str]:
    """Field names of the model found at `loc` (walking fields, tuples, dicts and optionals)."""
    if model is None:
        return []
    tp: Any = model
    for seg in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not isinstance(seg, str) or seg not in tp.model_fields:
                return []
            tp = tp.model_fields[seg].annotation
        elif get_origin(tp) in (tuple, list):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` → X."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        args = [a for a in get_args(tp) if a is not type(None)]
        if (get_origin(tp) is Union or type(tp).__name__ == "UnionType") and len(args) == 1:
            tp = args[0]
            continue
        return tp


def _shown(value: Any, cli: bool) -> str:
    """The bad value as the user wrote it (CLI: shell-quoted), cut short when long."""
    if cli and isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    text = shlex.quote(str(value)) if cli else repr(value)
    return text if len(text) <= 60 else f"{text[:40]}… ({len(text)} characters)"


def config_error(err: ValidationError, source: str | None = None, options: Mapping[str, str | None] | None = None,
                 model: Any = None) -> FlbenchError:
    """One line for a ValidationError: '<source>: <key path>: <value> is not accepted; <accepted>'.

    `options` maps key paths (or their prefixes) to CLI option names (`None`: print the message alone, for
    messages that already name their value); then the line reads '<--option> <value> is not accepted; ...'.
    `model`: the model class validated (to list the accepted keys of an unknown key).
    """
    errors = err.errors(include_url=False)
    e = errors[0]
    ctx = e.get("ctx") or {}
    path = _path(tuple(e["loc"]), ctx.get("key"))
    cli = options is not None
    where: str | None = path or None
    if cli:
        probe = path
        while probe and probe not in options:
            probe = probe.rpartition(".")[0]
        where = options.get(probe, where)
    kind, loc = e["type"], tuple(e["loc"])
    accepted = None  # a bad value: '<where>: <value> is not accepted; <accepted>'
    if kind == "missing":
        text = "missing (required)"
    elif kind == "extra_forbidden":
        keys = _accepted_keys(model, loc[:-1])
        text = "unknown key" + (f"; accepted: {', '.join(keys)}" if keys else "")
    elif kind == "flbench_message":
        text = ctx["msg"]
    elif loc and loc[-1] == "[key]":
        text, where = f"key {e.get('input')!r} is not accepted; keys are strings", _path(loc[:-1]) or None
    elif kind.startswith("bool"):
        accepted = "expected true or false"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        keys = _accepted_keys(model, loc)
        accepted = "expected a mapping" + (f" with keys {', '.join(keys)}" if keys else "")
    elif kind == "flbench_value":
        accepted = ctx["accepted"]
    else:
        accepted = re.sub(r"^Input should be ", "expected ", e["msg"])
    if accepted is not None:
        text = f"{_shown(e.get('input'), cli)} is not accepted; {accepted}"
        if cli and where is not None:  # '--option value is not accepted; ...'
            text, where = f"{where} {text}", None
    line = text if where is None else f"{where}: {text}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    if source:
        line = f"{source}: {line}"
    return FlbenchError(" ".join(line.split()))


def validate(model: type[BaseModel], data: Any, *, source: str | None = None,
             options: Mapping[str, str | None] | None = None, registries: bool = True) -> Any:
    """`model.model_validate(data)` with a ValidationError turned into one FlbenchError line."""
    try:
        return model.model_validate(data, context={"registries": registries})
    except ValidationError as e:
        raise config_error(e, source, options, model) from None


def default(model: type[BaseModel], name: str) -> Any:
    """The default of a field (what the CLI shows and uses)."""
    return model.model_fields[name].get_default(call_default_factory=True)


# ------------------------------------------------------------------------------------------ value types


def check_scalar(v: Any) -> Any:
    """A plain JSON scalar (a parameter value): null, boolean, integer, string or finite number."""
    if v is None or isinstance(v, (bool, str, int)):
        return v
    if isinstance(v, float):
        if math.isfinite(v):
            return v
        raise value_error("use a finite number")
    raise value_error("expected a finite number, boolean, string or null")


def _int_type(minimum: int, maximum: int | None = None, maximum_text: str = ""):
    accepted = f"expected an integer >= {minimum}" if maximum is None else f"expected an integer in [{minimum}, {maximum_text})"

    def check(v: Any) -> int:
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (maximum is not None and v >= maximum):
            raise value_error(accepted)
        return v

    return Annotated[int, PlainValidator(check)]


def _positive_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise value_error("expected a finite number > 0")
    return float(v)


def _name(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise value_error("expected a name (a non-empty string)")
    return v.strip()


def _split(v: Any) -> str:
    from splits.partition import parse_split  # the one split parser

    accepted = 'expected "P,Q": two non-negative integers, the blocks in the client head and tail, e.g. "2,2"'
    if not isinstance(v, str):
        raise value_error(accepted + " (quote it in YAML)")
    try:
        return str(parse_split(v))
    except (FlbenchError, ValueError):  # ValueError: an integer too long to convert
        raise value_error(accepted) from None


def as_list(v: Any) -> Any:
    """A single value where a list is expected means a list of one."""
    return [v] if v is None or isinstance(v, (str, int, float, bool, dict)) else v


Scalar = Annotated[Any, AfterValidator(check_scalar)]
PosInt = _int_type(1)
Seed = _int_type(0, 2**64, "2**64")
PosFloat = Annotated[float, PlainValidator(_positive_float)]
Name = Annotated[str, PlainValidator(_name)]
SplitText = Annotated[str, PlainValidator(_split)]
Params = dict[str, Scalar]


def check_model(v: str, info: ValidationInfo) -> str:
    """A registered model, a local model directory or a Hugging Face id (org/name), as load_model takes."""
    if not use_registries(info):
        return v
    from flbench.models import models

    if v in models or Path(v).expanduser().is_dir() or (v.count("/") == 1 and not v.startswith((".", "/"))):
        return v
    raise value_error(f"expected a registered model ({', '.join(models.names())}), a local model directory or a "
               "Hugging Face id (org/name)")


def lookup(registry: Any, name: str) -> Any:
    """`registry.get(name)`; an unknown name is a validation error listing the known ones."""
    try:
        return registry.get(name)
    except FlbenchError as e:
        raise message_error(str(e)) from None
