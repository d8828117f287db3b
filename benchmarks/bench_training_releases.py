"""The releases of a real fine-tuning run: every private training text crosses the wire once per epoch (new
order, fresh noise, adapters that moved). The attacker links the releases itself, then combines them.

    python benchmarks/bench_training_releases.py --split 2,2 --sigma 4 --relative --epochs 4 --examples 24 \
        --out results/bench/attacks_training_releases.json

LoRA fine-tuning (language-modelling loss on the private-records texts, ≤ `--max-length` tokens, batch
`--batch-size`, seeded shuffle per epoch) through the split runtime with the Gaussian defense on h_A, under the
server's wire tap. Then `map-inversion` (fitted once on the public weights) on: the first epoch's releases
alone (k = 1); the releases linked by the attacker (`attacks.linking.link_by_distance`: within each length,
a one-to-one assignment to the first epoch's entries by squared distance); and the releases linked by the truth
(oracle, the upper bound). Token accuracy with 95% CIs, and the linking accuracy.
"""
from __future__ import annotations

import argparse
import random
import sys
import warnings

import numpy as np
import torch

from flbench.pipeline.bench import machine, write_result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="2,2")
    ap.add_argument("--sigma", type=float, default=4.0)
    ap.add_argument("--relative", action="store_true")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--examples", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="results/bench/attacks_training_releases.json")
    args = ap.parse_args(argv)

    from attacks import Knowledge, make_attack, observe
    from attacks.linking import grouped, link_by_distance, linking_accuracy, oracle_groups
    from defenses import make_defense, make_generator
    from flbench.data import load_corpus
    from flbench.metrics import score_reconstructions
    from flbench.models import load_model
    from splits import SplitRuntime
    from splits.partition import parse_split
    from splits.sequence import pad_rows
    from splits.training import LoraSpec, SequentialTrainer
    from splits.wire import Kind, Phase, RecordingTap

    loaded = load_model(args.model, progress=False)
    tok = loaded.tokenizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        texts = [r.text for r in load_corpus("private-records", limit=args.examples, seed=0)]
    ids = [tok(t, truncation=True, max_length=args.max_length)["input_ids"] for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    defense = make_defense("gaussian", sigma=args.sigma, relative=args.relative)
    rt = SplitRuntime(loaded, parse_split(args.split), defense=defense, generator=make_generator(seed=0))
    trainer = SequentialTrainer(rt, LoraSpec(), lr=args.lr, seed=0)
    tap = RecordingTap()
    rt.wire.taps.append(tap)
    rng = random.Random(0)
    example_of: list[int] = []
    epoch_of: list[int] = []
    losses = []
    for epoch in range(args.epochs):
        order = list(range(len(ids)))
        rng.shuffle(order)
        for s in range(0, len(order), args.batch_size):
            take = order[s : s + args.batch_size]
            batch_ids, mask = pad_rows([ids[i] for i in take], int(pad))
            losses.append(trainer.step(batch_ids, mask))
            example_of += take
            epoch_of += [epoch] * len(take)
    rt.wire.taps.remove(tap)
    tap.received = [m for m in tap.received if m.kind == Kind.HIDDEN_A and m.phase == Phase.TRAIN]
    tap.sent = []
    obs = observe(tap, frozenset({"h_a"}))
    assert len(obs) == len(example_of), (len(obs), len(example_of))
    for h, ex in zip(obs.h_a, example_of):
        assert h.shape[0] == len(ids[ex])

    for part in rt.modules().values():  # the attacker's knowledge: public weights only (no adapters)
        part.eval()
    knowledge = Knowledge(loaded, rt.spec, make_defense("gaussian", sigma=args.sigma, relative=args.relative))
    attack = make_attack("map-inversion", knowledge).fit([], knowledge)

    def score(view, members: list[int]) -> dict:
        rec = attack.invert(view)
        truth = [ids[example_of[m]] for m in members]
        o = [tok.decode(t) for t in truth]
        r = [tok.decode(x) for x in rec]
        m = score_reconstructions(o, r, original_ids=truth, recovered_ids=rec, seed=0)["token_accuracy"]
        return {"token_accuracy": {k: m[k] for k in ("mean", "ci_low", "ci_high")}, "n": len(members),
                "diagnostics": attack.diagnostics(truth)}

    first = [i for i, e in enumerate(epoch_of) if e == 0]
    self_groups = link_by_distance(obs.h_a, epoch_of)
    oracle = oracle_groups(example_of)
    rows = []
    for name, groups in (("single release (epoch 0)", [[i] for i in first]),
                         ("linked by the attacker", self_groups), ("linked by the truth (oracle)", oracle)):
        view = grouped(obs, groups)
        row = {"view": name, "releases": view.releases, **score(view, [g[0] for g in groups])}
        if name == "linked by the attacker":
            row["linking_accuracy"] = linking_accuracy(groups, example_of)
        print(f"[bench] {name}: k={row['releases']} token accuracy {row['token_accuracy']['mean']:.3f}"
              + (f", linking accuracy {row['linking_accuracy']:.3f}" if "linking_accuracy" in row else ""),
              file=sys.stderr, flush=True)
        rows.append(row)
    write_result({"benchmark": "attacks_training_releases", "model": args.model, "split": args.split,
                  "sigma": args.sigma, "relative": args.relative, "epochs": args.epochs, "examples": len(ids),
                  "batch_size": args.batch_size, "lr": args.lr, "loss_first_last": [losses[0], losses[-1]],
                  "snr": defense.stats().get("snr_rms"), "rows": rows, "machine": machine()},
                 args.out, ["python", "benchmarks/bench_training_releases.py", *sys.argv[1:]])
    print(np.round([r["token_accuracy"]["mean"] for r in rows], 3).tolist())


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
