"""The typical token's SNR behind each nominal relative σ: per split and σ × RMS(h_A), what the victims' traffic
carries per token (median over real rows of ||h_t|| / (σ_eff·√d), `defenses.base.NoiseStats`) against the
all-coordinate SNR 1/σ that a per-call relative σ fixes by construction.

    python benchmarks/bench_token_snr.py --splits 1,1 2,2 4,4 --sigmas 0.5 1 2 4 8 16 32 --limit 50 \
        --out results/bench/token_snr.json

Why: a per-call relative σ multiplies the RMS over every coordinate of the call, and at P ≥ 2 one
attention-sink row (position 0) carries much of that energy (Xiao et al., arXiv 2309.17453; Sun et al.,
arXiv 2402.17762), so one nominal σ is more noise per typical token at a deeper split. This measures by how
much, on the same victims and the same capture (`flbench.pipeline.attack.capture_victims`, the sweep cells'
own) as the headline sweeps (`sweeps/headline_*.yaml`: private-records, 50 victims, ≤ 64 tokens). Those
cells' records predate the `snr_token` field, and their fine-tuned adapters are not kept, so the traffic here
goes through the public head: the adapters move h_A by a residual of sd ≈ 0.3 against a per-coordinate RMS of
≈ 2–9 (`model_mismatch` in the map-inversion records), a small change to these ratios. Also printed: the
public calibration scale (`flbench calibrate`, median token RMS on public text) and the calibrated multiple
σ_eff / scale that the same noise would be. Forward passes only: a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings

from flbench.pipeline.bench import machine, resumed, write_result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--splits", nargs="+", default=["1,1", "2,2", "4,4"])
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.5, 1, 2, 4, 8, 16, 32])
    ap.add_argument("--data", default="private-records")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--calibration-limit", type=int, default=200, help="public texts per corpus for the scale")
    ap.add_argument("--out", default="results/bench/token_snr.json")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    if any(not s > 0 for s in args.sigmas):
        ap.error(f"--sigmas {args.sigmas}: every σ must be > 0")

    from defenses import make_defense, make_generator
    from flbench.models import load_model
    from flbench.pipeline.attack import capture_victims, load_victims
    from flbench.pipeline.calibrate import calibrate
    from flbench.pipeline.config import VictimsConfig
    from splits.partition import parse_split
    from splits.runtime import SplitRuntime

    setting = {"model": args.model, "data": args.data, "limit": args.limit, "max_length": args.max_length,
               "calibration_limit": args.calibration_limit, "head": "public head (no adapters)"}
    rows: list[dict] = resumed(args.out, setting, args.resume).get("rows", [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records, _ = load_victims(VictimsConfig(data=args.data, limit=args.limit, max_length=args.max_length), 0)
    loaded = load_model(args.model, progress=False)

    def save() -> None:
        write_result({"benchmark": "token_snr", "setting": setting, "rows": rows, "machine": machine()}, args.out,
                     ["python", "benchmarks/bench_token_snr.py", *sys.argv[1:]])

    for split in args.splits:
        todo = [s for s in args.sigmas if not any(r["split"] == split and r["sigma"] == s for r in rows)]
        if not todo:
            continue
        cal = calibrate(loaded, split, limit=args.calibration_limit)
        scale = cal["token_rms_median"]
        for sigma in todo:
            defense = make_defense("gaussian", sigma=sigma, relative=True)
            rt = SplitRuntime(loaded, parse_split(split), defense=defense, generator=make_generator(seed=0))
            capture_victims(rt, defense, records, args.max_length)
            st = defense.stats()
            sigma_eff = st["sigma_effective_rms"]  # the per-call σ_eff, averaged in variance over the calls
            rows.append({"split": split, "sigma": sigma, "n": len(records), "calls": st["calls"],
                         "snr_rms": st["snr_rms"], "snr_token": st["snr_token_median"],
                         "token_over_call": st["snr_token_median"] * sigma,
                         "sigma_effective_rms": sigma_eff, "calibration_scale": scale,
                         "calibrated_multiple": sigma_eff / scale})
            print(f"[bench] {split} σ={sigma:g}×RMS: token SNR {st['snr_token_median']:.3f} (1/σ = {1 / sigma:.3f}), "
                  f"= {sigma_eff / scale:.2f} × the public token RMS", file=sys.stderr, flush=True)
        rows.sort(key=lambda r: (r["split"], r["sigma"]))
        save()
    save()
    ratios = {s: statistics.median(r["token_over_call"] for r in rows if r["split"] == s) for s in args.splits}
    print(json.dumps({"rows": len(rows), "out": args.out, "token_snr_times_sigma": ratios}))


if __name__ == "__main__":
    main()
