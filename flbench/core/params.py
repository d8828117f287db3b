"""One validator for typed parameters (defenses, attacks, anything that is a small dataclass of parameters).

A parameter is a dataclass init field whose annotation says what is accepted, in pydantic's terms:

    sigma: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0      # or the alias NonNegativeFloat
    metric: Literal["cosine", "l2"] = "cosine"
    steps: PositiveInt = 300

`check_params(owner, cls, params)` validates a mapping against those fields with pydantic in strict mode (no
"0.1" → 0.1, no True → 1, no 2.0 → 2; an int is accepted where a float is expected and becomes a float) and
raises ONE-line `FlbenchError`s that name the parameter, the value and what is accepted, e.g.

    attack 'embedding-nn': chunk='abc' is not accepted; expected an integer ≥ 1
    defense 'none' takes no parameter 'sigma'; accepted: (none)
    defense 'dp-forward': clip is required; expected a finite number > 0

`check_value(owner, name, value, annotation)` does the same for one value (method arguments), and
`one_line(owner, error, fields)` turns any pydantic `ValidationError` into such a line for other callers.
Fields whose name starts with "_" or that are not init fields are state, not parameters.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

import annotated_types as at
from pydantic import AllowInfNan, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo

from flbench.core.errors import FlbenchError

NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
UnitIntervalOpen = Annotated[float, Field(gt=0, lt=1)]  # (0, 1), e.g. δ
Fraction = Annotated[float, Field(ge=0, lt=1)]  # [0, 1)
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]

STRICT = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)


def param_fields(cls: type) -> list[dataclasses.Field]:
    """The parameters of dataclass `cls`: its init fields not starting with "_", in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]


@functools.lru_cache(maxsize=None)
def _model(cls: type):
    hints = typing.get_type_hints(cls, include_extras=True)
    spec: dict[str, Any] = {}
    for f in param_fields(cls):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        spec[f.name] = (hints[f.name], default)
    return create_model(f"{cls.__name__}Params", __config__=STRICT, **spec)


def is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def field_info(cls: type, name: str) -> FieldInfo:
    """pydantic's view of parameter `name` of `cls` (annotation + constraints)."""
    return _model(cls).model_fields[name]


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def expected(info: FieldInfo | Any) -> str:
    """What a field (pydantic FieldInfo) or an annotation accepts, in words: "an integer ≥ 1"."""
    if isinstance(info, FieldInfo):
        ann, meta = info.annotation, list(info.metadata)
    else:
        ann, meta = info, []
    while typing.get_origin(ann) is Annotated:
        ann, *extra = typing.get_args(ann)
        for e in extra:
            meta.extend(e.metadata if isinstance(e, FieldInfo) else [e])
    origin = typing.get_origin(ann)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        text = " or ".join(expected(a) for a in args)
        return f"{text} or null" if len(args) < len(typing.get_args(ann)) else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    if ann is bool:
        return "true or false"
    if ann is str:
        return "a string"
    finite = any(isinstance(m, AllowInfNan) and not m.allow_inf_nan for m in meta)
    base = {int: "an integer", float: "a finite number" if finite else "a number"}.get(ann)
    if base is None:
        return getattr(ann, "__name__", str(ann))
    lo = next(((m.ge, "[", "≥") for m in meta if isinstance(m, at.Ge)), None) or \
        next(((m.gt, "(", ">") for m in meta if isinstance(m, at.Gt)), None)
    hi = next(((m.le, "]", "≤") for m in meta if isinstance(m, at.Le)), None) or \
        next(((m.lt, ")", "<") for m in meta if isinstance(m, at.Lt)), None)
    if lo and hi:
        return f"{base} in {lo[1]}{_num(lo[0])}, {_num(hi[0])}{hi[1]}"
    if lo:
        return f"{base} {lo[2]} {_num(lo[0])}"
    if hi:
        return f"{base} {hi[2]} {_num(hi[0])}"
    return base


def _rank(err: dict) -> int:
    """Report unknown keys first, then bad values the user gave, then what is missing."""
    return {"extra_forbidden": 0, "missing": 2}.get(err["type"], 1)


def one_line(owner: str, error: ValidationError, fields: Mapping[str, FieldInfo] | None = None,
             accepted: list[str] | None = None) -> FlbenchError:
    """A pydantic ValidationError as ONE-line FlbenchError naming the parameter and what is accepted.

    `owner`: who takes the parameters ("defense 'gaussian'"); `fields`: pydantic FieldInfo per parameter
    name (for the "expected ..." part; else pydantic's own message); `accepted`: the parameter names, for an
    unknown-key error.
    """
    err = sorted(error.errors(), key=_rank)[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
    names = accepted if accepted is not None else list(fields or ())
    if err["type"] == "extra_forbidden":
        return FlbenchError(f"{owner} takes no parameter {loc!r}; accepted: {', '.join(names) or '(none)'}")
    info = (fields or {}).get(loc)
    want = expected(info) if info is not None else err.get("msg", "a valid value").lower()
    if err["type"] == "missing":
        return FlbenchError(f"{owner}: {loc} is required; expected {want}")
    return FlbenchError(f"{owner}: {loc}={err.get('input')!r} is not accepted; expected {want}")


def check_params(owner: str, cls: type, params: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Validate `params` against the parameters of dataclass `cls`; return every parameter's value (defaults
    filled in; an int given for a float becomes a float). `partial=True`: validate only the given parameters
    (missing required ones are not an error) and return only those. Raises a one-line FlbenchError (see the
    module docstring)."""
    fields = _model(cls).model_fields
    unknown = [k for k in params if k not in fields]
    if unknown:
        raise FlbenchError(f"{owner} takes no parameter {unknown[0]!r}; accepted: {', '.join(fields) or '(none)'}")
    if partial:
        return {k: check_value(owner, k, v, fields[k]) for k, v in params.items()}
    try:
        m = _model(cls).model_validate(dict(params))
    except ValidationError as e:
        raise one_line(owner, e, fields) from None
    return {k: getattr(m, k) for k in fields}


def check_value(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """Validate one value against an annotation (or a pydantic FieldInfo); return it (converted) or raise a
    one-line FlbenchError: "{owner}: {name}={value!r} is not accepted; expected ..."."""
    if isinstance(annotation, FieldInfo):
        info = annotation
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    try:
        return TypeAdapter(annotation, config=STRICT).validate_python(value)
    except ValidationError:
        raise FlbenchError(f"{owner}: {name}={value!r} is not accepted; expected {expected(annotation)}") from None
