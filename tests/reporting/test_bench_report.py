"""benchmarks/report.py's tables from benchmark files: the attack-cost table (fit and invert time per 100
victims, from every attack benchmark) and the token-SNR table."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def report(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "BENCH", tmp_path)
    return mod


def _write(path: Path, rows: list[dict], command: str = "python benchmarks/x.py --split 2,2") -> None:
    path.write_text(json.dumps({"rows": rows, "command": command}))


def test_attack_costs_normalise_per_100_victims_and_count_cached_fits(report, tmp_path):
    _write(tmp_path / "attacks_a.json", [
        {"attack": "map-inversion", "split": "1,1", "n": 50, "seconds": {"fit": 10.0, "invert": 100.0}},
        {"attack": "map-inversion", "split": "2,2", "n": 20, "seconds": {"fit": 30.0, "invert": 100.0}},
        {"attack": "learned-inversion", "split": "2,2", "n": 100, "seconds": {"fit": 0.5, "invert": 4.0},
         "fit_cache": {"hit": True, "fit_seconds": 1234.0}}])
    _write(tmp_path / "attacks_b.json", [  # no split in the rows: read from the recorded command
        {"attack": "gradient-label", "n": 32, "seconds": {"fit": 0.0, "invert": 16.0}},
        {"row": "no attack name: skipped", "n": 4, "seconds": {"fit": 1.0, "invert": 1.0}}])
    _write(tmp_path / "other.json", [{"attack": "x", "n": 1, "seconds": {"fit": 1, "invert": 1}}])  # not attacks*
    lines = report.attack_costs()
    table = [ln for ln in lines if ln.startswith("| ") and "attack" not in ln.split("|")[1]]
    cells = {(c[1], c[2]): c for c in ([x.strip() for x in ln.split("|")] for ln in table)}
    assert set(cells) == {("map-inversion", "attacks_a.json"), ("learned-inversion", "attacks_a.json"),
                          ("gradient-label", "attacks_b.json")}
    m = cells[("map-inversion", "attacks_a.json")]
    assert m[3:8] == ["2", "1,1 2,2", "20/50", "20", "350 (200–500)"]  # 100·100/50 = 200, 100·100/20 = 500
    assert cells[("learned-inversion", "attacks_a.json")][6] == "1234"  # the cached fit's original time
    assert cells[("gradient-label", "attacks_b.json")][4] == "2,2"
    assert cells[("gradient-label", "attacks_b.json")][7] == "50 (50–50)"


def test_attack_costs_without_benchmarks_is_empty(report):
    assert report.attack_costs() == []


def test_token_snr_table_one_row_per_sigma_one_column_pair_per_split(report, tmp_path):
    rows = [{"split": sp, "sigma": sg, "snr_token": k / sg, "calibrated_multiple": sg * m}
            for sp, k, m in (("4,4", 0.41, 2.5), ("1,1", 0.77, 1.46), ("2,2", 0.77, 1.38)) for sg in (1.0, 8.0)]
    rows = [r for r in rows if not (r["split"] == "2,2" and r["sigma"] == 8.0)]  # a missing cell
    (tmp_path / "token_snr.json").write_text(json.dumps(
        {"rows": rows, "command": "python benchmarks/bench_token_snr.py", "setting": {"model": "m", "limit": 50}}))
    lines = report.token_snr()
    header = [c.strip() for c in next(ln for ln in lines if ln.startswith("| σ")).strip("|").split("|")]
    assert header == ["σ × RMS (per call)", "SNR over all coordinates (1/σ)", "token SNR 1,1", "× public token RMS 1,1",
                      "token SNR 2,2", "× public token RMS 2,2", "token SNR 4,4", "× public token RMS 4,4"]
    body = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("| ") and "σ" not in ln]
    assert body[0] == ["1", "1", "0.77", "1.46", "0.77", "1.38", "0.41", "2.5"]
    assert body[1] == ["8", "0.125", "0.0963", "11.7", "–", "–", "0.0512", "20"]


def test_token_snr_without_the_benchmark_is_empty(report):
    assert report.token_snr() == []


def test_sweep_progress_counts_only_the_specs_finished_cells_and_their_time(report, tmp_path):
    """A directory also holding another spec's runs (an adaptive attacker's cells) or an unfinished cell: only the
    spec's finished cells count, and only their wall time."""
    from flbench.experiments import records as rec

    import copy

    from synth_records import grid

    runs = tmp_path / "runs"
    base = next(r for r in grid() if r.get("attack"))
    cfgs = {k: {**base["config"], "seed": 100 + i} for i, k in enumerate("abcd")}
    a, b, c, other = (rec.config_hash(cfgs[k]) for k in "abcd")

    def cell(h, seconds, attacks=("map-inversion",)):
        out = []
        for n in attacks:
            r = copy.deepcopy(base)
            r.pop("record_id", None)
            r.update(config=next(v for v in cfgs.values() if rec.config_hash(v) == h), config_hash=h,
                     timings={"total_s": seconds})
            r["attack"]["name"] = n
            out.append(r)
        return out

    for h, sec in ((a, 600.0), (other, 1200.0)):
        rec.write_cell(cell(h, sec, ("map-inversion", "embedding-nn")), runs)
    rec.write_record(cell(b, 300.0)[0], runs)  # records without a marker: killed mid-cell, not finished
    recs = rec.read_records(runs)
    assert report.sweep_progress(runs, {a, b, c}, recs) == (1, 900.0)  # a's time once; b's record counts its time
    assert report.sweep_progress(runs, {c}, recs) == (0, 2100.0)  # no record has the spec's hashes: all counted


def test_learned_budget_counts_a_resumed_fits_every_process(report, tmp_path):
    """A plateau fit resumed across processes (--fit-cache) has `fit_seconds_total`; the table shows it, not the
    last process's share; a missing file gives no table."""
    acc = {"mean": 0.8, "ci_low": 0.78, "ci_high": 0.82}
    row = {"budget": "plateau", "steps_run": 5400, "stop_reason": "plateau", "data": "private-records", "n": 100,
           "metrics": {"token_accuracy": acc}, "seconds": {"fit": 900.0}, "model": "m", "split": "2,2",
           "noise_sigma": 2.0}
    _write(tmp_path / "attacks_learned_budget_plateau.json", [{**row, "fit_seconds_total": 7200.0}])
    text = "\n".join(report.learned_budget("attacks_learned_budget_plateau.json"))
    assert "| 7200 " in text and "| 900 " not in text and "5400" in text
    assert report.learned_budget("missing.json") == []
