"""Sweep specs: a YAML grid of benchmark cells, read safely and validated whole before anything runs.

    name: default                       # optional; never part of a cell's hash
    model: [smollm2-135m]               # a name or a list
    splits: ["1,1", "2,2", "4,4"]       # "P,Q" strings (quote them: [1,1] is a list of numbers)
    defenses:                           # default [none]; every list-valued parameter is expanded (h_A edge)
      - none                            # shorthand for {name: none}
      - {name: gaussian, relative: true, sigma: [0.5, 1, 2, 4]}
      - {name: dp-forward, clip: 5.0, noise_multiplier: [1.0, 4.0]}
    grad_defenses: [none, {name: grad-dp, clip: 1.0, noise_multiplier: [0.3, 3]}]   # default [none]; the
                                        # gradient edge (dL/dh_B) of fine-tuned split cells, crossed with defenses
    attacks: [embedding-nn, learned-inversion, output-inversion]   # default []
    attack_params: {learned-inversion: {steps: 200}}               # per attack, not expanded
    tasks: [sst2, {name: xsum, limit: 20}]          # default []; a name or a TaskConfig mapping
    finetune: null                      # or a FinetuneConfig mapping, e.g. {steps: 50}
    victims: {data: private-records, limit: 50}     # a VictimsConfig mapping (only with attacks)
    centralized_reference: true         # default false: one unsplit cell per (model, task, seed)
    seed: 0                             # an int or a list of ints (expanded)

Sections are the models of flbench.pipeline.config, so their defaults are the run's. `load_spec` refuses
YAML tags (safe loading), aliases and anchors (no alias bomb), duplicate keys and files over
`MAX_SPEC_BYTES`; `SweepSpec` then checks every value of every axis (each defense parameter combination is
built, each attack's parameters too) and the grid's size, and `SweepSpec.cells()` validates every cell as a
`RunConfig`: a mistake anywhere is one FlbenchError line naming the file and the key, before any cell runs.
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from flbench.core.canonical import canonical_json, normalize_numbers
from flbench.core.errors import FlbenchError
from flbench.pipeline.config import (
    AttackerConfig,
    DefenseConfig,
    FinetuneConfig,
    GradDefenseConfig,
    RunConfig,
    TaskConfig,
    VictimsConfig,
    check_attack_names,
    resolve_attack_params,
)
from flbench.pipeline.validation import (
    Name,
    Params,
    Seed,
    SplitText,
    as_list,
    check_model,
    check_scalar,
    config_error,
    message_error,
    validate,
    value_error,
)

MAX_COMBINATIONS = 20_000          # cells of one sweep: a grid this large is a typo, not a benchmark
MAX_SPEC_BYTES = 2 * 1024 * 1024   # a spec is a page of YAML


class DefenseAxis(BaseModel):
    """One `defenses` entry of a sweep: a defense name, or {name, <param>: value or [values]}; every
    list-valued parameter is expanded (product)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: Name = Field(description="registered defense")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if not isinstance(data, Mapping):
            raise value_error("expected a defense name or a mapping {name: ..., <param>: value or [values]}")
        return data

    @model_validator(mode="after")
    def _values(self, info: ValidationInfo) -> DefenseAxis:
        n = 1
        for k, v in self.axes().items():
            if not v:
                raise message_error(f"{v!r} is not accepted; give a value or a non-empty list of values", k)
            for x in v:
                try:
                    check_scalar(x)
                except PydanticCustomError:
                    raise message_error(f"{x!r} is not accepted; expected a finite number, boolean, string or null, "
                                "or a list of them", k) from None
            n *= len(v)
        if n > MAX_COMBINATIONS:
            raise message_error(f"{n} parameter combinations; at most {MAX_COMBINATIONS} are accepted")
        for combo in self.combinations():
            try:
                self.config_class.model_validate({"name": self.name, "params": combo}, context=info.context)
            except ValidationError as e:
                first = e.errors(include_url=False)[0]
                ctx = first.get("ctx") or {}
                msg = ctx.get("msg") or f"{first.get('input')!r} is not accepted; {ctx.get('accepted', first['msg'])}"
                key = [str(x) for x in first["loc"] if x != "params"] + ([ctx["key"]] if ctx.get("key") else [])
                raise message_error(msg, ".".join(key) or None) from None
        return self

    config_class: ClassVar[type] = DefenseConfig  # what each combination must validate as (its edge)

    def axes(self) -> dict[str, list]:
        return {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in (self.model_extra or {}).items()}

    def combinations(self) -> list[dict]:
        axes = self.axes()
        keys = sorted(axes)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


class GradDefenseAxis(DefenseAxis):
    """One `grad_defenses` entry: a defense of the client's gradient edge (dL/dh_B during fine-tuning, e.g.
    grad-dp), expanded like a `defenses` entry; only cells that fine-tune a split have that edge."""

    config_class: ClassVar[type] = GradDefenseConfig


class SweepSpec(BaseModel):
    """A sweep spec (YAML): the axes of a grid of `RunConfig` cells."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    name: Name | None = Field(None, description="the sweep's name (never part of a cell's hash)")
    model: tuple[Name, ...] = Field(description="model name(s)")
    splits: tuple[SplitText, ...] = Field(description='"P,Q" partition points (quoted strings)')
    defenses: tuple[DefenseAxis, ...] = Field(({"name": "none"},), description="defense axes")
    grad_defenses: tuple[GradDefenseAxis, ...] = Field(({"name": "none"},),
                                                       description="gradient-edge defense axes (fine-tuned splits)")
    attacks: tuple[Name, ...] = Field((), description="attacks run on every split cell")
    attack_params: dict[str, Params] = Field(default_factory=dict, description="parameters per attack")
    tasks: tuple[TaskConfig, ...] = Field((), description="tasks (a name or {name, limit, batch_size})")
    finetune: FinetuneConfig | None = Field(None, description="fine-tuning of every cell; null: none")
    victims: VictimsConfig | None = Field(None, description="victim and auxiliary data of the attacks")
    attacker: AttackerConfig | None = Field(None, description="the head the attacker runs in every split cell "
                                            "(flbench.pipeline.config.AttackerConfig); null: the public head")
    centralized_reference: StrictBool = Field(False, description="add the unsplit reference per (model, task, seed)")
    seed: tuple[Seed, ...] = Field((0,), description="seed(s)")

    _source: str = PrivateAttr("spec")
    _registries: bool = PrivateAttr(True)

    @property
    def source(self) -> str:
        """Where the spec came from (the file), for messages."""
        return self._source

    @field_validator("model")
    @classmethod
    def _known_models(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for i, m in enumerate(v):
            try:
                check_model(m, info)
            except PydanticCustomError as e:
                raise message_error(f"{m!r} is not accepted; {e.context['accepted']}", i) from None
        return v

    @field_validator("name", mode="before")
    @classmethod
    def _name_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("model", "splits", "defenses", "grad_defenses", "attacks", "tasks", "seed", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return as_list(v)

    @field_validator("model", "splits", "defenses", "grad_defenses", "seed")
    @classmethod
    def _non_empty(cls, v: tuple, info: ValidationInfo) -> tuple:
        if not v:
            raise value_error("expected at least one value")
        return tuple(dict.fromkeys(v)) if info.field_name not in ("defenses", "grad_defenses") else v

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return tuple(sorted(set(check_attack_names(v, info))))

    @field_validator("attack_params")
    @classmethod
    def _attack_params(cls, v: dict, info: ValidationInfo) -> dict:
        names = info.data.get("attacks", ())
        for a, params in v.items():
            if a not in names:
                raise message_error(f"not one of the sweep's attacks; accepted: {', '.join(names) or '(none)'}", a)
            resolve_attack_params(a, params, info, key_prefix=a)
        return {a: normalize_numbers(p) for a, p in v.items()}

    @model_validator(mode="after")
    def _rules(self) -> SweepSpec:
        if not self.attacks and not self.tasks:
            raise message_error("the sweep runs nothing: give at least one attack or one task", "attacks")
        if self.finetune is not None and not self.tasks:
            raise message_error("fine-tuning needs tasks (their training portions are the training data)", "finetune")
        if self.victims is not None and not self.attacks:
            raise message_error("victims are the attacks' data: give attacks, or no victims", "victims")
        if any(g.name != "none" for g in self.grad_defenses) and self.finetune is None:
            raise message_error("a gradient defense sits on the fine-tuning traffic: give finetune, or drop "
                                "grad_defenses", "grad_defenses")
        if self.attacker is not None and self.attacker.head == "surrogate" and (not self.attacks or self.finetune is None):
            raise message_error("a surrogate head is the attacker's copy of a fine-tuned client: give attacks and "
                                "finetune, or drop attacker", "attacker")
        if self.centralized_reference and not self.tasks:
            raise message_error("the centralized reference scores utility: give at least one task", "centralized_reference")
        n = len(self.model) * len(self.splits) * max(len(self.tasks), 1) * len(self.seed) * sum(
            math.prod(len(x) for x in d.axes().values()) for d in self.defenses) * sum(
            math.prod(len(x) for x in g.axes().values()) for g in self.grad_defenses)
        if n > MAX_COMBINATIONS:
            raise message_error(f"the grid has {n} cells; at most {MAX_COMBINATIONS} are accepted (split it into several "
                        "sweeps)")
        return self

    def cells(self) -> list[RunConfig]:
        """Every cell of the grid, validated (not deduplicated or sorted; see flbench.experiments.sweep.expand)."""
        tasks: list[TaskConfig | None] = list(self.tasks) or [None]
        victims = None if self.victims is None else self.victims.model_dump()
        finetune = None if self.finetune is None else self.finetune.model_dump()
        grid: list[dict] = []
        for model, split, axis, task, seed in itertools.product(self.model, self.splits, self.defenses, tasks,
                                                                self.seed):
            for params in axis.combinations():
                for gaxis in self.grad_defenses:
                    for gparams in gaxis.combinations():
                        cell = {"model": model, "split": split, "defense": {"name": axis.name, "params": params},
                                "task": None if task is None else task.model_dump(), "finetune": finetune,
                                "attacks": self.attacks, "attack_params": self.attack_params,
                                "victims": victims if self.attacks else None, "seed": seed}
                        if gaxis.name != "none":  # as RunConfig: cells without one keep their hashes
                            cell["grad_defense"] = {"name": gaxis.name, "params": gparams}
                        if self.attacker is not None and self.attacks:
                            cell["attacker"] = self.attacker.model_dump()
                        grid.append(cell)
        if self.centralized_reference:
            for model, task, seed in itertools.product(self.model, self.tasks, self.seed):
                grid.append({"model": model, "split": None, "defense": {"name": "none"}, "task": task.model_dump(),
                             "finetune": finetune, "seed": seed})
        out = []
        for c in grid:
            try:
                out.append(RunConfig.model_validate(c, context={"registries": self._registries}))
            except ValidationError as e:
                raise FlbenchError(f"{self._source}: cell {canonical_json(c)}: {config_error(e)}") from None
        return out


# ---------------------------------------------------------------------------------------------- reading


def _safe_loader():
    import yaml

    class SpecLoader(yaml.SafeLoader):
        """`yaml.SafeLoader` (no tags, never executed) that also refuses aliases/anchors and duplicate keys."""

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise yaml.composer.ComposerError(
                    None, None, "YAML anchors and aliases (&name, *name) are refused in a sweep spec; write the "
                    "values out", event.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: let SafeLoader report it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {first + 1}); each key once",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep)

    return SpecLoader


def parse_spec(data: Any, source: str = "spec", check_names: bool = True) -> SweepSpec:
    """Validate a spec already loaded from YAML (a mapping). `check_names=False` checks the shape only (no
    registry lookups, no torch; names and parameters kept as given): for tests with made-up names."""
    if not isinstance(data, Mapping):
        kind = "null" if data is None else type(data).__name__
        raise FlbenchError(f"{source}: the spec must be a YAML mapping (key: value lines), got {kind}")
    if "name" not in data and source != "spec":
        data = {**data, "name": Path(source).stem}
    spec = validate(SweepSpec, data, source=source, registries=check_names)
    spec._source, spec._registries = source, check_names
    return spec


def load_spec(path: str | os.PathLike, check_names: bool = True) -> SweepSpec:
    """Read a sweep spec file (at most MAX_SPEC_BYTES; safe YAML, no aliases, no duplicate keys) and validate it."""
    import yaml

    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise FlbenchError(f"sweep spec {path} does not exist") from None
    except OSError as e:
        raise FlbenchError(f"sweep spec {path} cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise FlbenchError(f"sweep spec {path} is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; a spec is a "
                           "short YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FlbenchError(f"sweep spec {path} is not UTF-8 text: {e}") from None
    try:
        data = yaml.load(text, Loader=_safe_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        if "constructor" in problem and "tag" in problem:
            problem += " (YAML tags are refused: the spec is read with yaml.safe_load, never executed)"
        raise FlbenchError(f"{path}: not a valid sweep spec: {where}{problem}".replace("\n", " ")) from None
    return parse_spec(data, source=str(path), check_names=check_names)
