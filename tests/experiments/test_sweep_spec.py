"""Sweep specs: validation (one-line errors, the whole spec before any cell), expansion, hash stability,
shards, safe YAML (no duplicate keys, no aliases, bounded size)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from flbench.core.errors import FlbenchError
from flbench.experiments.records import config_hash
from flbench.experiments.sweep import (
    expand,
    load_spec,
    parse_shard,
    parse_spec,
    run_sweep,
    select_cells,
    shard,
)

BASE = """\
name: t
model: [tiny-llama]
splits: ["1,1", "2,2"]
defenses:
  - {name: none}
  - {name: gaussian, relative: true, sigma: [0.5, 1, 2]}
  - {name: dp-forward, clip: 5.0, noise_multiplier: [1.0, 4.0]}
attacks: [embedding-nn, learned-inversion]
attack_params: {learned-inversion: {steps: 20}}
tasks: [{name: sst2, limit: 20}, boolq]
victims: {data: private-records, limit: 5}
centralized_reference: true
seed: 0
"""


def _spec(tmp_path, text, name="s.yaml", check_names=False):
    p = tmp_path / name
    p.write_text(text)
    return load_spec(p, check_names=check_names)


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_expand_grid_shape_and_cells(tmp_path):
    cells = [c.resolved() for c in expand(_spec(tmp_path, BASE))]
    # 2 splits x (1 + 3 + 2) defenses x 2 tasks + 2 centralized references
    assert len(cells) == 2 * 6 * 2 + 2
    assert len({config_hash(c) for c in cells}) == len(cells)
    central = [c for c in cells if c["split"] is None]
    assert len(central) == 2
    for c in central:
        assert c["defense"] == {"name": "none", "params": {}} and c["attacks"] == [] and c["victims"] is None
    c = next(c for c in cells if c["defense"]["name"] == "gaussian" and c["split"] == "2,2")
    assert c["attacks"] == ["embedding-nn", "learned-inversion"]
    assert c["attack_params"] == {"learned-inversion": {"steps": 20}}
    # the victims' defaults are filled in (the resolved config is what the hash and the record see)
    assert c["victims"] == {"data": "private-records", "data_file": None, "limit": 5, "max_length": 64,
                            "aux_data": ["xsum", "sst2"], "aux_limit": 2000}
    assert c["task"] in ({"name": "sst2", "limit": 20, "batch_size": 8}, {"name": "boolq", "limit": 100, "batch_size": 8})
    dp = [c["defense"]["params"] for c in cells if c["defense"]["name"] == "dp-forward"]
    assert {"clip": 5, "noise_multiplier": 4} in dp  # 5.0 -> 5: numbers normalised
    # deterministic
    assert [c.resolved() for c in expand(_spec(tmp_path, BASE))] == cells


def test_hash_independent_of_order_and_number_spelling(tmp_path):
    a = expand(_spec(tmp_path, BASE))
    reordered = """\
seed: 0.0
centralized_reference: true
victims: {limit: 5, data: private-records}
tasks: [boolq, {limit: 20.0, name: sst2}]
attack_params: {learned-inversion: {steps: 20.0}}
attacks: [learned-inversion, embedding-nn, learned-inversion]
defenses:
  - {name: dp-forward, noise_multiplier: [4, 1], clip: 5}
  - {name: gaussian, sigma: [2.0, 1.0, 0.5], relative: true}
  - none
splits: ["2, 2", "1,1"]
model: tiny-llama
name: other-name
"""
    b = expand(_spec(tmp_path, reordered, "b.yaml"))
    assert [c.hash for c in a] == [c.hash for c in b]
    assert a == b
    assert config_hash({"x": 1.0, "y": [2.0]}) == config_hash({"y": [2], "x": 1})
    assert config_hash({"x": 1.5}) != config_hash({"x": 1})
    assert config_hash({"x": True}) != config_hash({"x": 1})


def test_shard_partitions_the_grid(tmp_path):
    cells = expand(_spec(tmp_path, BASE))
    parts = [shard(cells, f"{i}/3") for i in (1, 2, 3)]
    assert sorted(c.hash for c in sum(parts, [])) == sorted(c.hash for c in cells)
    assert parts[0][0] is cells[0] and parts[1][0] is cells[1]
    assert shard(cells, "1/1") == cells
    assert parse_shard(" 2 / 5 ") == (2, 5)
    for bad in ("0/2", "3/2", "a/b", "1/0", "1", "", "-1/2", "1/2/3"):
        with pytest.raises(FlbenchError, match=r"expected I/N with 1 <= I <= N") as e:
            shard(cells, bad)
        _one_line_error(e)


@pytest.mark.parametrize("text, match", [
    ("model: m\nsplits: ['1,1']\nattacks: [a]\nsigma: 1\n", r"sigma: unknown key; accepted: name, model, splits"),
    ("model: m\nsplits: [1,1]\nattacks: [a]\n", r'splits\[0\]: 1 is not accepted; expected "P,Q".*quote it'),
    ("model: m\nsplits: ['1;1']\nattacks: [a]\n", r"splits\[0\]: '1;1' is not accepted"),
    ("model: m\nattacks: [a]\n", r"splits: missing"),
    ("splits: ['1,1']\nattacks: [a]\n", r"model: missing"),
    ("model: m\nsplits: ['1,1']\n", r"runs nothing"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\ndefenses: [{sigma: 1}]\n", r"defenses\[0\].name: missing"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\ndefenses: [{name: gaussian, sigma: []}]\n", r"defenses\[0\].sigma: \[\] is not accepted"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\ndefenses: [{name: gaussian, sigma: [{a: 1}]}]\n", r"defenses\[0\].sigma: .* expected a finite number"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\ndefenses: [{name: gaussian, sigma: .nan}]\n", r"defenses\[0\].sigma: nan is not accepted; expected a finite number"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\nattack_params: {b: {x: 1}}\n", r"attack_params.b: not one of the sweep's attacks; accepted: a"),
    ("model: m\nsplits: ['1,1']\ntasks: [{name: sst2, limt: 3}]\n", r"tasks\[0\].limt: unknown key; accepted: name, limit, batch_size"),
    ("model: m\nsplits: ['1,1']\ntasks: [{name: sst2, limit: 0}]\n", r"tasks\[0\].limit: 0 is not accepted; expected an integer >= 1"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\nvictims: {data: x, size: 3}\n", r"victims.size: unknown key; accepted: data, data_file, limit, max_length, releases, mode, new_tokens, aux_data, aux_limit"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\nseed: -1\n", r"seed\[0\]: -1 is not accepted"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\ncentralized_reference: yes please\n", r"centralized_reference: 'yes please' is not accepted; expected true or false"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\nfinetune: 50\n", r"finetune: 50 is not accepted; expected a mapping with keys steps, batch_size"),
    ("model: m\nsplits: ['1,1']\ntasks: [sst2]\nfinetune: {steps: 0}\n", r"finetune.steps: 0 is not accepted"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\nfinetune: {steps: 5}\n", r"finetune: fine-tuning needs tasks"),
    ("model: m\nsplits: ['1,1']\ntasks: [sst2]\nvictims: {limit: 3}\n", r"victims: victims are the attacks' data"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\nvictims: {data: x, data_file: y}\n", r"victims.data_file: give either"),
    ("- just\n- a list\n", r"the spec must be a YAML mapping"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\nname: 2024-01-01\n", r"name: datetime.date\(2024, 1, 1\) is not accepted"),
    ("model: m\nsplits: ['1,1']\nattacks: [a]\ndefenses: [{name: g, "
     + ", ".join(f"{k}: {list(range(10))}" for k in "abcde") + "}]\n",
     r"defenses\[0\]: 100000 parameter combinations; at most"),
])
def test_spec_errors_are_one_line_and_name_the_key(tmp_path, text, match):
    with pytest.raises(FlbenchError, match=match) as e:
        _spec(tmp_path, text)
    msg = _one_line_error(e)
    assert msg.startswith(str(tmp_path / "s.yaml"))


def test_bad_yaml_and_python_tags_are_refused(tmp_path):
    with pytest.raises(FlbenchError, match=r"not a valid sweep spec: line \d+") as e:
        _spec(tmp_path, "model: [m\nsplits: {\n")
    _one_line_error(e)
    marker = tmp_path / "pwned"
    evil = f"!!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(FlbenchError, match=r"YAML tags are refused.*safe_load") as e:
        _spec(tmp_path, evil)
    _one_line_error(e)
    with pytest.raises(FlbenchError, match="YAML tags are refused"):
        _spec(tmp_path, "model: !!python/object:collections.OrderedDict {}\nsplits: ['1,1']\nattacks: [a]\n")
    assert not marker.exists()
    with pytest.raises(FlbenchError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")


def test_names_and_parameters_checked_against_the_registries(tmp_path):
    spec = _spec(tmp_path, BASE, check_names=True)
    assert spec.attacks == ("embedding-nn", "learned-inversion")
    with pytest.raises(FlbenchError, match=r"defenses\[1\].name: unknown defense 'gausian'; known: (\S+, )*gaussian, (\S+, )*none"):
        _spec(tmp_path, BASE.replace("name: gaussian", "name: gausian"), check_names=True)
    with pytest.raises(FlbenchError, match=r"defenses\[1\].sigmas: defense 'gaussian' takes no parameter 'sigmas'; accepted: sigma, relative"):
        _spec(tmp_path, BASE.replace("sigma: [", "sigmas: ["), check_names=True)
    with pytest.raises(FlbenchError, match=r"attacks\[1\]: unknown attack 'learned-inversio'"):
        _spec(tmp_path, BASE.replace("learned-inversion]", "learned-inversio]").replace(
            "attack_params: {learned-inversion: {steps: 20}}\n", ""), check_names=True)
    with pytest.raises(FlbenchError, match=r"attack_params.learned-inversion.stepz: attack 'learned-inversion' takes no parameter 'stepz'"):
        _spec(tmp_path, BASE.replace("{steps: 20}", "{stepz: 20}"), check_names=True)
    with pytest.raises(FlbenchError, match=r"tasks\[1\].name: unknown task 'bolq'"):
        _spec(tmp_path, BASE.replace("boolq", "bolq"), check_names=True)


def test_defaults_and_scalars():
    spec = parse_spec({"model": "m", "splits": "2,2", "tasks": ["sst2"], "seed": [1, 0]}, check_names=False)
    cells = expand(spec)
    assert [c.seed for c in cells] == [0, 1]
    assert all(c.defense.name == "none" and c.defense.params == {} and c.attacks == () and c.victims is None
               for c in cells)
    assert spec.centralized_reference is False


def test_cells_are_resolved_so_spelled_out_defaults_are_the_same_cell(tmp_path):
    """A cell is resolved through the registries: {sigma: 1} and {sigma: 1, relative: false} are one cell,
    and every default (victims, task, attack parameters) is in its config."""
    text = ("model: tiny-llama\nsplits: ['1,1']\nattacks: [embedding-nn]\ntasks: [sst2]\n"
            "defenses: [{name: gaussian, sigma: 1}, {name: gaussian, sigma: 1.0, relative: false}]\n")
    (cell,) = expand(_spec(tmp_path, text, check_names=True))
    c = cell.resolved()
    assert c["defense"] == {"name": "gaussian", "params": {"sigma": 1, "relative": False}}
    assert c["attack_params"]["embedding-nn"]["metric"] == "cosine"
    assert c["victims"]["limit"] == 50 and c["task"] == {"name": "sst2", "limit": 100, "batch_size": 8}
    assert cell.hash == config_hash(c)


def test_a_bad_third_value_refuses_the_whole_spec_before_any_cell_runs(tmp_path):
    calls = []
    for axis, bad, needle in [
        ("sigma", "defenses: [{name: gaussian, sigma: [0.5, 1, -1]}]", r"defenses\[0\].sigma: .*sigma=-1"),
        ("splits", "splits: ['1,1', '2,2', '2;2']", r"splits\[2\]: '2;2' is not accepted"),
        ("attacks", "attacks: [embedding-nn, output-inversion, nope]", r"attacks\[2\]: unknown attack 'nope'"),
        ("tasks", "tasks: [sst2, rte, nope]", r"tasks\[2\].name: unknown task 'nope'"),
        ("model", "model: [tiny-llama, smollm2-135m, nope]", r"model\[2\]: 'nope' is not accepted"),
        ("seed", "seed: [0, 1, -2]", r"seed\[2\]: -2 is not accepted"),
    ]:
        lines = {"model": "model: tiny-llama", "splits": "splits: ['1,1']", "attacks": "attacks: [embedding-nn]",
                 "tasks": "tasks: [sst2]", "seed": "seed: 0", "sigma": "defenses: [none]"}
        lines[axis] = bad
        path = tmp_path / f"{axis}.yaml"
        path.write_text("\n".join(lines.values()) + "\n")
        with pytest.raises(FlbenchError, match=needle) as e:
            run_sweep(path, tmp_path / "out", lambda c: calls.append(c) or [], progress=False)
        assert _one_line_error(e).startswith(str(path))
    assert calls == [] and not (tmp_path / "out").exists()


def test_duplicate_keys_are_refused(tmp_path):
    with pytest.raises(FlbenchError, match=r"line 3: duplicate key 'splits' \(first on line 2\)") as e:
        _spec(tmp_path, "model: m\nsplits: ['1,1']\nsplits: ['2,2']\nattacks: [a]\n")
    _one_line_error(e)
    with pytest.raises(FlbenchError, match=r"duplicate key 'sigma'"):
        _spec(tmp_path, "model: m\nsplits: ['1,1']\nattacks: [a]\ndefenses: [{name: gaussian, sigma: 1, sigma: 2}]\n")


def test_alias_bomb_and_huge_files_are_refused_quickly(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{k}: &{k} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, k in zip("abcdefgh", "bcdefghi")) + "model: *i\nsplits: ['1,1']\nattacks: [a]\n"
    t0 = time.monotonic()
    with pytest.raises(FlbenchError, match=r"line 1: YAML anchors and aliases .* are refused") as e:
        _spec(tmp_path, bomb)
    _one_line_error(e)
    big = tmp_path / "big.yaml"
    big.write_text("model: m\nsplits: ['1,1']\nattacks: [a]\n" + "# padding\n" * 400_000)
    with pytest.raises(FlbenchError, match=r"larger than 2 MiB") as e:
        load_spec(big, check_names=False)
    _one_line_error(e)
    assert time.monotonic() - t0 < 5


def test_grad_defenses_cross_the_h_a_defenses_on_fine_tuned_cells(tmp_path):
    """`grad_defenses` (the tail's gradient edge) is an axis of its own, crossed with `defenses`; cells without
    one hash as before the axis existed; an h_A-only defense there, or no fine-tuning, is a one-line error."""
    text = ("model: tiny-llama\nsplits: ['1,1']\ndefenses: [none, {name: gaussian, sigma: 0.5}]\n"
            "grad_defenses: [none, {name: grad-dp, clip: 1.0, noise_multiplier: [0.3, 3]}]\n"
            "attacks: [gradient-label]\ntasks: [sst2]\nfinetune: {steps: 1}\ncentralized_reference: true\n")
    cells = expand(_spec(tmp_path, text, check_names=True))
    split = [c for c in cells if c.split is not None]
    assert len(split) == 2 * 3 and len(cells) == 7
    grads = sorted((c.defense.name, c.grad_defense.name, c.grad_defense.params.get("noise_multiplier")) for c in split)
    assert grads == [("gaussian", "grad-dp", 0.3), ("gaussian", "grad-dp", 3), ("gaussian", "none", None),
                     ("none", "grad-dp", 0.3), ("none", "grad-dp", 3), ("none", "none", None)]
    plain = expand(_spec(tmp_path, text.replace("grad_defenses: [none, {name: grad-dp, clip: 1.0, noise_multiplier: "
                                                "[0.3, 3]}]\n", ""), check_names=True))
    assert {c.hash for c in plain} <= {c.hash for c in cells}  # the axis' "none" changes no hash
    with pytest.raises(FlbenchError) as e:
        _spec(tmp_path, text.replace("name: grad-dp, clip: 1.0, noise_multiplier: [0.3, 3]", "name: gaussian, sigma: 1"),
              check_names=True)
    assert "grad_defenses[1].name" in _one_line_error(e) and "cannot sit on the tail's gradient" in str(e.value)
    with pytest.raises(FlbenchError, match="grad_defenses: a gradient defense sits on the fine-tuning traffic"):
        _spec(tmp_path, text.replace("finetune: {steps: 1}\n", "").replace("attacks: [gradient-label]", "attacks: []"),
              check_names=True)


def test_attacker_surrogate_reaches_every_split_cell_and_only_those(tmp_path):
    text = BASE + "finetune: {steps: 2}\nattacker: {head: surrogate, seed: 3}\n"
    cells = [c.resolved() for c in expand(_spec(tmp_path, text))]
    split = [c for c in cells if c["split"] is not None]
    assert split and all(c["attacker"] == {"head": "surrogate", "seed": 3, "task": None} for c in split)
    assert all("attacker" not in c for c in cells if c["split"] is None)  # the centralized reference has no wire
    # without an attacker key (or with the public head), the cells are those of the spec without it: same hashes
    plain = {config_hash(c) for c in (x.resolved() for x in expand(_spec(tmp_path, BASE + "finetune: {steps: 2}\n")))}
    public = {config_hash(c) for c in (x.resolved() for x in expand(
        _spec(tmp_path, BASE + "finetune: {steps: 2}\nattacker: {head: public}\n")))}
    assert plain == public
    with pytest.raises(FlbenchError, match="attacker") as e:
        _spec(tmp_path, BASE + "attacker: {head: surrogate}\n")  # no fine-tuning: nothing to copy
    _one_line_error(e)


def test_select_cells_runs_named_cells_in_the_given_order(tmp_path):
    cells = expand(_spec(tmp_path, BASE))
    assert len(cells) >= 3
    a, b = cells[-1], cells[0]
    picked = select_cells(cells, f" {a.hash[:8]} ,{b.hash.upper()}")
    assert [c.hash for c in picked] == [a.hash, b.hash]  # the given order, not the grid's; case ignored
    assert picked[0] is a  # the grid's own cells: same hashes, so the same records
    for bad, needle in ((a.hash[:3], "is not a cell hash"), ("zz" + a.hash[:6], "is not a cell hash"),
                        ("", "expected comma-separated cell hashes"), (f"{a.hash},", "expected comma-separated"),
                        ("0" * 16 if not any(c.hash.startswith("0" * 16) for c in cells) else "f" * 16,
                         "matches no cell of this spec"),
                        (f"{a.hash[:8]},{a.hash}", f"cell {a.hash} is named twice")):
        with pytest.raises(FlbenchError) as e:
            select_cells(cells, bad)
        assert needle in str(e.value), (bad, str(e.value))
        _one_line_error(e)
    twins = [SimpleNamespace(hash="abcd" + "0" * 12), SimpleNamespace(hash="abcd" + "1" * 12)]  # shared prefix
    with pytest.raises(FlbenchError, match="'abcd' matches 2 cells; give more digits"):
        select_cells(twins, "abcd")
    assert select_cells(twins, "abcd1")[0] is twins[1]
