"""Measure attack strength on a real model: `python -m attacks.measure --model smollm2-135m --splits 1,1 2,2
--sigmas 0 0.5 1 2 [--relative] [--steps N]`. Prints one JSON line per (split, sigma) to stdout.

Victims: `private-records` (and optionally `enron`); auxiliary text: `xsum` + `sst2` passages.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--attack", default="learned-inversion")
    ap.add_argument("--splits", nargs="+", default=["1,1", "2,2"])
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.0])
    ap.add_argument("--relative", action="store_true")
    ap.add_argument("--victims", nargs="+", default=["private-records"])
    ap.add_argument("--n-victims", type=int, default=100)
    ap.add_argument("--n-aux", type=int, default=2000)
    ap.add_argument("--param", nargs="*", default=[], help="attack parameters k=v (ints/floats parsed)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from attacks import Knowledge, capture, make_attack
    from defenses import make_defense, make_generator
    from flbench.data import load_corpus
    from flbench.metrics import token_accuracy
    from flbench.models import load_model
    from splits import SplitRuntime, parse_split

    params = {}
    for kv in args.param:
        k, v = kv.split("=", 1)
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        params[k] = v
    loaded = load_model(args.model, progress=False)
    half = args.n_aux // 2
    aux = [r.text for r in load_corpus("xsum", limit=half, seed=0)] + \
          [r.text for r in load_corpus("sst2", limit=args.n_aux - half, seed=0)]
    victims = {v: [r.text for r in load_corpus(v, limit=args.n_victims, seed=1)] for v in args.victims}
    for split in args.splits:
        for sigma in args.sigmas:
            defense = make_defense("gaussian", sigma=sigma, relative=args.relative)
            rt = SplitRuntime(loaded, parse_split(split), defense=defense, generator=make_generator(seed=7))
            knowledge = Knowledge.from_runtime(rt)
            attack = make_attack(args.attack, knowledge, **params)
            t0 = time.perf_counter()
            attack.fit(aux, knowledge)
            fit_s = time.perf_counter() - t0
            row = {"model": args.model, "attack": args.attack, "split": split, "sigma": sigma,
                   "relative": args.relative, "params": attack.params(), "fit_seconds": round(fit_s, 1),
                   "fit_log": getattr(attack, "fit_log", {})}
            for name, texts in victims.items():
                obs, ids = capture(rt, texts, batch_size=16)
                t0 = time.perf_counter()
                rec = attack.invert(obs)
                row[f"invert_seconds_{name}"] = round(time.perf_counter() - t0, 2)
                row[f"token_accuracy_{name}"] = round(float(np.mean(token_accuracy(ids, rec))), 4)
                if name == "private-records":
                    row["example"] = [texts[0], loaded.tokenizer.decode(rec[0])]
            row["snr_rms"] = defense.stats().get("snr_rms")
            print(json.dumps(row), flush=True)
            print(json.dumps({k: row[k] for k in row if k.startswith(("split", "sigma", "fit_sec", "token"))}),
                  file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
