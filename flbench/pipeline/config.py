"""The typed configuration of one benchmark run: what `flbench run` builds from its options, what every cell of
`flbench sweep` is, what `flbench attack` runs (`AttackConfig`), and what a run record stores.

Every default lives here, once; the CLI commands read theirs from these models (`default(Model, "field")`).
The models are frozen pydantic models that refuse unknown keys. Validation checks every value: registered
names (model, defense, attack, task, victim and auxiliary corpora) against the registries, defense and attack
parameters by building the defense / attack (`defenses.make_defense`, `attacks.make_attack`), which also
*resolves* them to every parameter of the class with its default filled in. `RunConfig.resolved()` is the
config with every default filled in; `RunConfig.hash` is `config_hash` of it, so `flbench run` with its
defaults and a sweep cell that spells the same defaults out are the same cell.

Defaults (those the committed records in results/ ran with, so results stay comparable): model smollm2-135m,
split 2,2, seed 0, fp32 wire; task eval limit 100, batch 8; fine-tuning 50 steps, batch 8, lr 1e-3,
256 tokens, LoRA r 8 / alpha 16; victims: 50 private-records texts of at most 64 tokens, attacks fitted on
2000 texts each of xsum and sst2.

Validation context `{"registries": False}` checks the shape only (no registry, no torch; names and parameters
are kept as given, not resolved): for tests with made-up names. `validate(Model, data, ...)` turns a
ValidationError into one FlbenchError line (flbench.pipeline.validation).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flbench.core.canonical import config_hash, normalize_numbers
from flbench.core.errors import FlbenchError
from flbench.pipeline.validation import (  # noqa: F401 (validate, default, config_error: the API of this module)
    Name,
    Params,
    PosFloat,
    PosInt,
    Seed,
    SplitText,
    as_list,
    check_model,
    config_error,
    default,
    lookup,
    message_error,
    registry_call,
    use_registries,
    validate,
    value_error,
)

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_SPLIT = "2,2"
WireDtype = Literal["fp32", "bf16", "fp16"]
ComputeDtype = Literal["fp32", "bf16", "fp16"]
DTYPE_HELP = ("compute dtype of the model parts; in the cell's identity (it changes results) but left out of "
              "resolved() at fp32, so the committed fp32 records keep their hashes")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


# -------------------------------------------------------------------------------------------- sections


class DefenseConfig(_Section):
    """The defense on the client's outgoing edge (the head's hidden states h_A)."""

    edge: ClassVar[str] = "h_a"  # the edge this section's defense sits on; the defense must declare it (`edges`)
    name: Name = Field("none", description="registered defense (flbench ls defenses); none = no defense")
    params: Params = Field(default_factory=dict, description="the defense's parameters; resolved: every parameter "
                                                             "of the defense, defaults filled in")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        if use_registries(info):
            from defenses import defenses
            from splits.edges import check_edge

            try:
                check_edge(lookup(defenses, v), cls.edge)
            except FlbenchError as e:
                raise message_error(str(e)) from None
        return v

    @field_validator("params")
    @classmethod
    def _resolve(cls, v: dict, info: ValidationInfo) -> dict:
        if not use_registries(info) or "name" not in info.data:
            return normalize_numbers(v)
        from defenses import make_defense

        return normalize_numbers(registry_call(make_defense, info.data["name"], **v).params())


class GradDefenseConfig(DefenseConfig):
    """The defense on the client's gradient edge: dL/dh_B, which the tail sends back during fine-tuning."""

    edge: ClassVar[str] = "grad_b"


class TaskConfig(_Section):
    """The utility task, scored on its fixed eval portion through the split (defense on)."""

    name: Name = Field(description="registered task (flbench ls tasks)")
    limit: PosInt | None = Field(100, description="eval examples; null: the whole eval portion")
    batch_size: PosInt = Field(8, description="eval batch size")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        if use_registries(info):
            from flbench.tasks import tasks

            lookup(tasks, v)
        return v


class FinetuneConfig(_Section):
    """LoRA fine-tuning on the task's training portion, defense on the wire, before the utility eval.

    Defaults: those the committed fine-tuned records ran with (max_length 256, lr 1e-3, LoRA r 8, alpha 16);
    `flbench train` and `flbench.pipeline.finetune.TrainConfig` take theirs from here."""

    steps: PosInt = Field(50, description="optimizer steps")
    batch_size: PosInt = Field(8, description="sequences per batch")
    lr: PosFloat = Field(1e-3, description="AdamW learning rate")
    max_length: PosInt = Field(256, description="tokens per training sequence (truncation)")
    lora_rank: PosInt = Field(8, description="LoRA rank r (q_proj, v_proj of every part)")
    lora_alpha: PosFloat = Field(16.0, description="LoRA alpha (scale = alpha / r)")


class VictimsConfig(_Section):
    """The victim texts the attacks try to recover, and the public auxiliary text they fit on."""

    data: Name | None = Field("private-records", description="victim corpus (a registered victim dataset); "
                                                             "null when data_file is given")
    data_file: str | None = Field(None, description="victim texts: one per line, or JSONL with a 'text' field")
    limit: PosInt = Field(50, description="victim examples")
    max_length: PosInt = Field(64, description="victim tokens per example (truncation)")
    releases: PosInt = Field(1, description="times each victim text crosses the wire, each time with fresh noise "
                                            "(retries, regenerations, epochs); attacks combine the releases")
    mode: Literal["forward", "generate"] = Field("forward", description="forward: each victim text crosses the "
                                                 "wire as one forward; generate: it is a chat prompt and the victim "
                                                 "generates new_tokens greedily (KV cache); prompt and answer are "
                                                 "scored apart")
    new_tokens: PosInt = Field(32, description="tokens the victim generates per prompt (mode generate)")
    aux_data: tuple[Name, ...] = Field(("xsum", "sst2"), description="public auxiliary corpora the attacks fit on")
    aux_limit: PosInt = Field(2000, description="auxiliary texts per corpus")

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("data_file") is not None:
            if data.get("data") is not None:
                raise message_error("give either a victim corpus (data) or a victim file (data_file), not both", "data_file")
            data = {**data, "data": None}
        return data

    @model_validator(mode="after")
    def _modes(self) -> VictimsConfig:
        if self.mode == "generate" and self.releases > 1:
            raise message_error("repeated releases of generation traffic are not supported; use releases 1 with "
                                "mode generate, or mode forward", "releases")
        if self.mode == "generate" and self.new_tokens < 2:
            raise message_error("mode generate needs new_tokens ≥ 2 (the first generated token is fed back from "
                                "the second step on)", "new_tokens")
        return self

    @field_validator("data")
    @classmethod
    def _victim_corpus(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or not use_registries(info):
            return v
        from flbench.data import datasets, victim_names

        if v not in datasets or not datasets.get(v).is_victim:
            raise value_error(f"expected a victim corpus: {', '.join(victim_names())} (or data_file)")
        return v

    @field_validator("data_file")
    @classmethod
    def _file(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and use_registries(info) and not Path(v).is_file():
            raise value_error("no such file; expected a text file (one text per line) or JSONL with a 'text' field")
        return v

    @field_validator("aux_data", mode="before")
    @classmethod
    def _aux_list(cls, v: Any) -> Any:
        return as_list(v)

    @field_validator("aux_data")
    @classmethod
    def _aux_public(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        v = tuple(dict.fromkeys(v))  # order kept: it decides which auxiliary texts are used
        if not use_registries(info):
            if not v:
                raise value_error("expected at least one public corpus")
            return v
        from flbench.data import aux_names, datasets

        public = [n for n in aux_names() if n != info.data.get("data")]
        if not v or any(n not in datasets or datasets.get(n).is_victim or n == info.data.get("data") for n in v):
            raise value_error(f"expected public corpora that differ from the victim data; accepted: {', '.join(public)}")
        return v

    @model_validator(mode="after")
    def _some_source(self) -> VictimsConfig:
        if self.data is None and self.data_file is None:
            raise message_error("give a victim corpus (data) or a victim file (data_file)", "data")
        return self


def gradient_attacks(names) -> list[str]:
    """The registered attacks among `names` that read gradients (`requires` holds "grad_b"): they attack the
    fine-tuning traffic of a run, not victim texts (unknown names are left to the name check)."""
    from attacks import attacks

    return [n for n in names if n in attacks and "grad_b" in attacks.get(n).requires]


def check_attack_names(v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    """Every name registered (the key path of a bad one ends in its index)."""
    if use_registries(info):
        from attacks import attacks

        for i, name in enumerate(v):
            try:
                attacks.get(name)
            except FlbenchError as e:
                raise message_error(str(e), i) from None
    return v


def resolve_attack_params(name: str, params: dict, info: ValidationInfo, key_prefix: str | None = None) -> dict:
    """Every parameter of the attack, defaults filled in (`make_attack` refuses unknown or bad ones)."""
    if not use_registries(info):
        return normalize_numbers(params)
    from attacks import make_attack

    return normalize_numbers(registry_call(make_attack, name, None, key_prefix=key_prefix, **params).params())


class AttackerConfig(_Section):
    """The head the attacker runs (every attack that runs the head: map-inversion, learned-inversion, ...).

    `public` (default): the pretrained head, the threat model's baseline knowledge. `surrogate`: its own head,
    fine-tuned with the cell's recipe — the same `finetune` config and defense (noise or training penalty on),
    which are public (Kerckhoffs) — but with its own `seed` (its own adapter init, batches and noise draws: it
    knows neither the client's seed nor its draws) on the public `task` (default: the cell's task). A defense
    that works by moving the client's head away from the public one (NoPeek) is judged against this attacker,
    not only against one that assumes the public head (`bench_finetuned_victims.py --surrogate-seed`).
    Part of the cell's identity only when not `public` (records before it keep their hashes)."""

    head: Literal["public", "surrogate"] = Field("public", description="public: the pretrained head; surrogate: "
                                                 "the attacker's own head fine-tuned with the cell's recipe")
    seed: Seed = Field(1, description="the surrogate's fine-tuning seed (never the client's)")
    task: Name | None = Field(None, description="public task the surrogate trains on; null: the cell's task")

    @field_validator("task")
    @classmethod
    def _known(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and use_registries(info):
            from flbench.tasks import tasks

            lookup(tasks, v)
        return v

    @model_validator(mode="after")
    def _only_surrogate(self) -> AttackerConfig:
        if self.head == "public" and (self.seed != 1 or self.task is not None):
            raise message_error("seed and task describe the attacker's surrogate head: give head: surrogate, or "
                                "leave them out", "seed" if self.seed != 1 else "task")
        return self


class AttackConfig(_Section):
    """One attack on the traffic the server saw (`flbench attack`; `RunConfig.attack_config` for a run's)."""

    model: Name = Field(DEFAULT_MODEL, description="registry name, local model directory or Hugging Face id")
    split: SplitText = Field(DEFAULT_SPLIT, description='"P,Q": blocks in the client head and tail')
    defense: DefenseConfig = Field(default_factory=DefenseConfig, description="defense on the client's edge")
    attack: Name = Field("map-inversion", description="registered attack (flbench ls attacks); default: the strongest the threat model allows")
    params: Params = Field(default_factory=dict, description="the attack's parameters; resolved: every parameter")
    victims: VictimsConfig = Field(default_factory=VictimsConfig, description="victim and auxiliary data")
    wire_dtype: WireDtype = Field("fp32", description="dtype of tensors on the wire")
    dtype: ComputeDtype = Field("fp32", description=DTYPE_HELP)
    seed: Seed = Field(0, description="data, noise and attack-scoring seed")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str, info: ValidationInfo) -> str:
        return check_model(v, info)

    @field_validator("attack")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        if use_registries(info):
            from attacks import attacks

            lookup(attacks, v)
        return v

    @field_validator("params")
    @classmethod
    def _resolve(cls, v: dict, info: ValidationInfo) -> dict:
        return resolve_attack_params(info.data["attack"], v, info) if "attack" in info.data else v

    @model_validator(mode="after")
    def _forward_traffic(self, info: ValidationInfo) -> AttackConfig:
        if use_registries(info) and gradient_attacks([self.attack]):
            raise message_error(f"attack {self.attack!r} reads the gradients of fine-tuning traffic, which `flbench "
                                "attack` does not produce; run it on a cell's own fine-tuning: flbench run --task T "
                                f"--finetune-steps N --attack {self.attack}", "attack")
        return self


class RunConfig(_Section):
    """One benchmark cell: [fine-tune] → utility → capture → attacks (flbench.pipeline.cell.run_cell)."""

    model: Name = Field(DEFAULT_MODEL, description="registry name, local model directory or Hugging Face id")
    split: SplitText | None = Field(DEFAULT_SPLIT, description='"P,Q": blocks in the client head and tail; '
                                                               "null: the centralized (unsplit) reference")
    defense: DefenseConfig = Field(default_factory=DefenseConfig, description="defense on the client's edge")
    grad_defense: GradDefenseConfig = Field(default_factory=GradDefenseConfig,
                                            description="defense on the client's gradient edge (dL/dh_B) during "
                                                        "fine-tuning; left out of resolved() when none")
    task: TaskConfig | None = Field(None, description="utility task; null: no utility eval")
    finetune: FinetuneConfig | None = Field(None, description="LoRA fine-tuning first; null: pretrained weights")
    attacks: tuple[Name, ...] = Field((), description="registered attacks on the captured traffic (sorted)")
    attack_params: dict[str, Params] = Field(default_factory=dict, description="parameters per attack; resolved: "
                                                                               "every listed attack, all parameters")
    victims: VictimsConfig | None = Field(None, description="victim and auxiliary data (filled in when there are "
                                                            "attacks; null without attacks)")
    attacker: AttackerConfig = Field(default_factory=AttackerConfig, description="the head the attacker runs; "
                                     "left out of resolved() when public")
    wire_dtype: WireDtype = Field("fp32", description="dtype of tensors on the wire")
    dtype: ComputeDtype = Field("fp32", description=DTYPE_HELP)
    seed: Seed = Field(0, description="data, noise, fine-tuning and attack-scoring seed")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str, info: ValidationInfo) -> str:
        return check_model(v, info)

    @model_validator(mode="before")
    @classmethod
    def _fill_victims(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("attacks") and data.get("victims") is None:
            data = {**data, "victims": {}}
        return data

    @field_validator("attacks", mode="before")
    @classmethod
    def _attack_list(cls, v: Any) -> Any:
        return as_list(v)

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return tuple(sorted(set(check_attack_names(v, info))))

    @field_validator("attack_params")
    @classmethod
    def _attack_params(cls, v: dict, info: ValidationInfo) -> dict:
        if "attacks" not in info.data:
            return v
        names = info.data["attacks"]
        for a in v:
            if a not in names:
                raise message_error(f"not one of the run's attacks; accepted: {', '.join(names) or '(none)'}", a)
        return {a: resolve_attack_params(a, v.get(a, {}), info, key_prefix=a) for a in names
                if a in v or use_registries(info)}

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> RunConfig:
        if self.split is None and self.defense.name != "none":
            raise message_error("a centralized run (split null) has no wire: no defense", "defense")
        if self.split is None and self.attacks:
            raise message_error("a centralized run (split null) has no wire: no traffic to attack", "attacks")
        if self.finetune is not None and self.task is None:
            raise message_error("fine-tuning needs a task (its training portion is the training data)", "finetune")
        if self.victims is not None and not self.attacks:
            raise message_error("victims are the attacks' data: give attacks, or no victims", "victims")
        if self.task is None and not self.attacks:
            raise message_error("nothing to run: give a task and/or attacks")
        if self.grad_defense.name != "none" and (self.finetune is None or self.split is None):
            raise message_error("a gradient defense acts on split fine-tuning traffic: give finetune (and a split)",
                                "grad_defense")
        if self.attacker.head == "surrogate":
            if self.finetune is None or self.split is None or not self.attacks:
                raise message_error("a surrogate head is the attacker's copy of a fine-tuned client: give a split, "
                                    "finetune and attacks, or head: public", "attacker")
            if self.attacker.seed == self.seed:
                raise message_error(f"seed {self.attacker.seed} is the client's: the attacker does not know it; "
                                    "give the surrogate another seed", "attacker")
        needs_training = gradient_attacks(self.attacks) if use_registries(info) else []
        if needs_training and self.finetune is None:
            raise message_error(f"attack {needs_training[0]!r} reads the gradients of the cell's fine-tuning "
                                "traffic: give finetune (--finetune-steps)", "attacks")
        return self

    def resolved(self) -> dict:
        """The config as plain JSON data, every default filled in, numbers normalised: what records store.

        The compute dtype changes results, so it is part of the cell's identity (its hash), except at fp32:
        there it is left out, so the records committed before `dtype` existed (all fp32) keep their hashes and
        a resumed sweep still finds them; the same for `victims.releases` at 1 and `victims.mode` forward. The devices are not part of the config (results agree across devices
        within float tolerance): records state them beside it (`compute`)."""
        out = self.model_dump(mode="json")
        if out.get("dtype") == "fp32":
            del out["dtype"]
        if out.get("grad_defense", {}).get("name") == "none":  # as dtype: the records before it keep their hashes
            del out["grad_defense"]
        if out.get("attacker", {}).get("head") == "public":  # likewise
            del out["attacker"]
        victims = out.get("victims") or {}
        if victims.get("releases") == 1:  # likewise: records before `releases` were single releases
            del victims["releases"]
        if victims.get("mode") == "forward":  # and forward victims (new_tokens is meaningless there)
            del victims["mode"], victims["new_tokens"]
        return normalize_numbers(out)

    @property
    def hash(self) -> str:
        """`config_hash` of `resolved()`: the cell's identity (record file names, resume)."""
        return config_hash(self.resolved())

    def attack_config(self, name: str) -> AttackConfig:
        """The config of one of this run's attacks (already validated: no re-resolution)."""
        if self.split is None or self.victims is None or name not in self.attacks:
            raise FlbenchError(f"attack {name!r} is not one of this run's attacks ({', '.join(self.attacks) or 'none'})")
        return AttackConfig.model_construct(model=self.model, split=self.split, defense=self.defense, attack=name,
                                            params=dict(self.attack_params.get(name, {})), victims=self.victims,
                                            wire_dtype=self.wire_dtype, dtype=self.dtype, seed=self.seed)

    def label(self) -> str:
        """A short human description for logs."""
        d = self.defense
        params = ",".join(f"{k}={v}" for k, v in sorted(d.params.items()))
        parts = [self.model, f"split {self.split}" if self.split else "centralized",
                 d.name + (f"({params})" if params else "")]
        if self.grad_defense.name != "none":
            gp = ",".join(f"{k}={v}" for k, v in sorted(self.grad_defense.params.items()))
            parts.append("grad " + self.grad_defense.name + (f"({gp})" if gp else ""))
        if self.task:
            parts.append(self.task.name)
        if self.attacks:
            parts.append("+".join(self.attacks))
        if self.attacker.head != "public":
            parts.append(f"(attacker: surrogate head, seed {self.attacker.seed}"
                         + (f", {self.attacker.task}" if self.attacker.task else "") + ")")
        return " ".join(parts)

    def surrogate_config(self) -> RunConfig:
        """The attacker's surrogate training run: this cell's recipe (finetune, defense on both edges, split,
        model, dtypes) with the attacker's seed and task, and no attacks (nothing of it is recorded)."""
        a = self.attacker
        task = self.task if a.task is None else TaskConfig.model_construct(name=a.task, limit=None, batch_size=8)
        return self.model_copy(update={"seed": a.seed, "task": task, "attacks": (), "attack_params": {},
                                       "victims": None, "attacker": AttackerConfig()})
