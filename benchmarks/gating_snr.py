"""What limits the unbiased gater: the signal-to-noise ratio of one gater-gradient estimate, at a gating
checkpoint, for the unbiased estimator (``reinforce_optimal``: the broadcast loss with the per-unit optimal
baseline, Bengio 2013 Eq. 7) and for straight-through at the same parameters.

On one fixed batch, ``N`` estimates of the cross-entropy's gradient with respect to the gater path's
parameters are drawn with fresh gate noise (each from a copy of the checkpoint's model, so the baseline
state is the checkpoint's every time). Reported per estimator: ``|mean|`` (the norm of the average of the
``N`` estimates), ``noise`` = sqrt(trace of their covariance) (the spread of one estimate), ``SNR`` =
|mean| / noise (an upper bound on one estimate's signal-to-noise ratio when |mean| is within its standard
error, noise/sqrt(N), of zero), and the cosine between the two estimators' means.

    python benchmarks/gating_snr.py runs/gating/reinforce_optimal/checkpoint.pt --estimates 200 --batch 32
"""
from __future__ import annotations

import argparse
import copy
import json

import torch
import torch.nn.functional as F

from stochgrad.graph import broadcast
from stochgrad.studies import gating as G
from stochgrad.studies.training import datasets_or_fail, load_checkpoint


def estimates(model: G.GatingNet, x, y, n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, P)``: ``n`` estimates of d mean-CE / d(gater parameters), each from a fresh copy of ``model``."""
    out = []
    for _ in range(n):
        m = copy.deepcopy(model)
        m.gate.generator = generator
        with broadcast() as graph:
            logits, _, _ = m(x)
            ce = F.cross_entropy(logits, y, reduction="none")
        graph.backward(ce) if m.kind == "reinforce_optimal" else ce.mean().backward()
        out.append(torch.cat([p.grad.reshape(-1) for p in m.gater.parameters()]))
    return torch.stack(out).double()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--estimates", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--json", default="")
    args = p.parse_args()
    torch.set_num_threads(1)
    train, _ = datasets_or_fail(args.dataset)
    state = load_checkpoint(args.checkpoint)
    x, y = train.images[:args.batch], train.labels[:args.batch]
    rows, means = {}, {}
    for kind in ("reinforce_optimal", "straight_through"):
        gen = torch.Generator().manual_seed(1)
        model = G.GatingNet(train.dim, kind, generator=gen, expert=state["config"].get("expert", "linear"))
        model.load_state_dict(state["model"], strict=False)    # straight-through has no baseline buffers
        g = estimates(model, x, y, args.estimates, gen)
        mean, noise = g.mean(0), g.var(0).sum().sqrt()
        means[kind] = mean
        rows[kind] = {"mean_norm": mean.norm().item(), "noise": noise.item(),
                      "standard_error_of_mean": (noise / args.estimates ** 0.5).item(),
                      "snr_per_estimate": (mean.norm() / noise).item()}
        print(f"{kind:18s} |mean| {rows[kind]['mean_norm']:.4g} (SE {rows[kind]['standard_error_of_mean']:.3g})  "
              f"noise per estimate {rows[kind]['noise']:.4g}  SNR {rows[kind]['snr_per_estimate']:.3g}", flush=True)
    a, b = means["reinforce_optimal"], means["straight_through"]
    cos = float(a @ b / (a.norm() * b.norm()))
    print(f"cosine(mean reinforce_optimal, mean straight_through) {cos:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"checkpoint": args.checkpoint, "estimates": args.estimates, "batch": args.batch,
                       "rows": rows, "cosine_of_means": cos}, fh, indent=1)


if __name__ == "__main__":
    main()
