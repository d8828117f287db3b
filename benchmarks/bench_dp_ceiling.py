"""dp-forward at a stated ε against the strongest attack, beside the ceiling that ε implies.

    python benchmarks/bench_dp_ceiling.py --split 2,2 --epsilons 8 1 --limit 50 \
        --out results/bench/attacks_dp_ceiling.json

An (ε, δ)-DP release can raise the probability of any guess about the private unit at most e^ε-fold, plus δ:
P[guess right | release] ≤ e^ε · P[guess right | no release] + δ (the definition of DP applied to the event
"the attacker's guess of this token is right", a post-processing of the release; the unit here is one example
— its whole h_A matrix, dp-forward's default — so a token, part of the example, is covered). The best guess
without the release is estimated by the same attack on a release drowned in noise (noise multiplier
`--blind-z`): the public prior's own guesses (an estimate: the true best guess uses the true data
distribution). A recovery whose 95% lower bound exceeds min(1, e^ε · p0⁺ + δ), p0⁺ the upper 95% bound of that
estimate, would mean a bug in the mechanism or in its accounting.

Per target ε: the noise multiplier z of dp-forward (sensitivity 2C, so the Gaussian multiplier is z/2) that
gives that ε for one release at δ (opacus RDP accountant, `defenses.accounting`), found by bisection; the clip
C is the median per-example Frobenius norm of h_A on public text (xsum, ≤ `--max-length` tokens) so that a
typical example is barely clipped. Each row is exactly `flbench attack --attack map-inversion --defense
dp-forward --dp-clip C --noise-multiplier z --split P,Q --limit L --max-length M --json`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings

import torch

from flbench.pipeline.attack import AttackConfig, run_attack
from flbench.pipeline.bench import machine, resumed, write_result


def _z_for(epsilon: float, delta: float) -> float:
    """dp-forward's noise multiplier z whose single release has `epsilon` at `delta` (the Gaussian multiplier is
    z/2: sensitivity 2C under replace-one-example)."""
    from defenses.accounting import gaussian_epsilon

    lo, hi = 0.05, 1e4
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if gaussian_epsilon(mid / 2, 1, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def _median_norm(model: str, split: str, max_length: int, n: int = 100) -> float:
    from flbench.data import load_corpus
    from flbench.models import load_model
    from splits.partition import build_head, parse_split
    from splits.sequence import positions_from_mask

    loaded = load_model(model, progress=False)
    head = build_head(loaded.model, parse_split(split)).eval()
    norms = []
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for r in load_corpus("xsum", limit=n, seed=0):
            ids = torch.tensor([loaded.tokenizer(r.text, truncation=True, max_length=max_length)["input_ids"]])
            mask = torch.ones_like(ids)
            norms.append(float(head(ids, mask, positions_from_mask(mask)).norm()))
    return float(torch.tensor(norms).median())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="2,2")
    ap.add_argument("--epsilons", nargs="+", type=float, default=[8.0, 1.0])
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--blind-z", type=float, default=1e4, help="noise multiplier of the 'no release' baseline")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--out", default="results/bench/attacks_dp_ceiling.json")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    from defenses import make_defense, make_generator
    from defenses.accounting import guessing_ceiling

    setting = {k: getattr(args, k) for k in ("model", "split", "delta", "blind_z", "limit", "max_length")}
    old = resumed(args.out, setting, args.resume)
    rows = old["rows"] if old else []
    clip = old["clip"] if old else _median_norm(args.model, args.split, args.max_length)

    def save() -> None:
        write_result({"benchmark": "attacks_dp_ceiling", "setting": setting, "clip": clip, "rows": rows,
                      "machine": machine()}, args.out, ["python", "benchmarks/bench_dp_ceiling.py", *sys.argv[1:]])

    def attack(z: float) -> dict:
        params = {"clip": clip, "noise_multiplier": z, "delta": args.delta}
        cfg = AttackConfig(model=args.model, split=args.split, attack="map-inversion",
                           defense={"name": "dp-forward", "params": params},
                           victims={"limit": args.limit, "max_length": args.max_length})
        return run_attack(cfg, make_defense("dp-forward", **params), make_generator(seed=0), progress=False)

    targets = [("blind", None)] + [("epsilon", e) for e in args.epsilons]
    for kind, eps in targets:
        if any(r["kind"] == kind and r["target_epsilon"] == eps for r in rows):
            continue
        z = args.blind_z if eps is None else _z_for(eps, args.delta)
        res = attack(z)
        acc = res["metrics"]["token_accuracy"]
        rows.append({"kind": kind, "target_epsilon": eps, "noise_multiplier": z, "epsilon": res["epsilon"],
                     "delta": res["delta"], "accounting": res.get("accounting"), "n": res["n"],
                     "token_accuracy": acc, "diagnostics": res.get("diagnostics"), "snr": res["snr"],
                     "examples": res["examples"], "config": res["config"]})
        print(f"[bench] {kind} ε={res['epsilon']}: z={z:.4g}, token accuracy {acc['mean']:.3f}", file=sys.stderr,
              flush=True)
        save()
    blind = next((r for r in rows if r["kind"] == "blind"), None)
    if blind is not None:
        # p0 is estimated on n victims: the ceiling takes its upper 95% bound, and only a recovery whose lower
        # bound exceeds it counts as a violation
        p0 = blind["token_accuracy"]["ci_high"]
        for r in rows:
            if r["kind"] == "epsilon":
                r["ceiling"] = guessing_ceiling(p0, r["epsilon"], r["delta"])
                r["ceiling_from_p0_upper"] = p0
                r["violation"] = r["token_accuracy"]["ci_low"] > r["ceiling"]
    save()
    print(json.dumps({"rows": len(rows), "out": args.out}))


if __name__ == "__main__":
    main()
