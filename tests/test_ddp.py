"""State under DDP: two CPU processes (gloo) with half the batch each hold one process's state."""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import stochgrad as sg

B, N, D_IN = 8, 5, 4
STEPS = 4


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2 * B, D_IN, generator=g, dtype=torch.float64), torch.randn(2 * B, generator=g, dtype=torch.float64)


def run_state(est_name):
    """Feeds fixed (h, L) to an estimator's update: the state must not depend on how the batch is split."""
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(2 * B, N, generator=g, dtype=torch.float64)
    h = (torch.rand(2 * B, N, generator=g, dtype=torch.float64) < probs).double()
    L = torch.randn(2 * B, generator=g, dtype=torch.float64)
    dl_dh = torch.randn(2 * B, N, generator=g, dtype=torch.float64)
    rank = dist.get_rank() if dist.is_initialized() else None
    part = slice(None) if rank is None else slice(rank * B, (rank + 1) * B)
    est = sg.get_estimator(est_name)
    for _ in range(3):
        est.score_gradient(h[part].unsqueeze(0), probs[part], L[part].unsqueeze(0), dl_dh=dl_dh[part].unsqueeze(0))
    return est.state_dict()


TUNED = {"rebar": 1, "relax": 1, "double_cv": 2, "rodeo": 2}   # every Tuned estimator: its samples


def run_tuned(name, rank=None):
    """Online tuning (REBAR, RELAX, double CV, RODEO) on a batch split over ranks (noise sharded as one process
    draws it): every rank must end with the single process's tuned state."""
    from stochgrad import problems
    from stochgrad.sampling import Sharded

    p = problems.decoder()
    gen = torch.Generator().manual_seed(3)
    est = sg.get_estimator(name, tune_every=1)
    full = p.logits.expand(2 * B, -1)
    for _ in range(STEPS):
        a = full if rank is None else full[rank * B:(rank + 1) * B]
        g = gen if rank is None else Sharded(gen, rank, 2)
        est(p.f, a.clone().requires_grad_(True), TUNED[name], generator=g).sum().backward()
    return est.theta.clone()


def make_model():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    rate = sg.FiringRateControl(sg.StochasticBinary("reinforce_optimal", generator=gen), target=0.3)
    return nn.Sequential(nn.Linear(D_IN, N), rate, nn.Linear(N, 1)).double(), gen


def make_categorical_model(K=3):
    """The categorical counterpart: N units of K classes (one uniform per unit, as the binary layer draws)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    layer = sg.StochasticCategorical("reinforce_optimal", categories=K, generator=gen)
    return nn.Sequential(nn.Linear(D_IN, N * K), layer, nn.Linear(N * K, 1)).double(), gen


def train(rank=None, make=make_model):
    """A few SGD steps. Under DDP each rank draws its half of the single process's noise stream."""
    x, y = batch()
    model, gen = make()
    net = model
    if rank is not None:
        net = nn.parallel.DistributedDataParallel(model)
        x, y = x[rank * B:(rank + 1) * B], y[rank * B:(rank + 1) * B]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        if rank == 1:
            torch.rand(B, N, generator=gen, dtype=torch.float64)   # skip rank 0's half of the stream
        opt.zero_grad()
        with sg.broadcast() as graph:
            loss = (net(x).squeeze(-1) - y).square()
        graph.backward(loss)
        opt.step()
        if rank == 0:
            torch.rand(B, N, generator=gen, dtype=torch.float64)   # skip rank 1's half
    return {k: v.clone() for k, v in model.state_dict().items()}


def worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = {name: run_state(name) for name in ("reinforce_ma", "reinforce_optimal", "learned")}
        result["train"] = train(rank)
        result["categorical"] = train(rank, make_categorical_model)
        result["tuned"] = {name: run_tuned(name, rank) for name in TUNED}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_synchronised_state_and_training_match_one_process():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(2)]
    for name in ("reinforce_ma", "reinforce_optimal", "learned"):
        single = run_state(name)
        for r in ranks:
            for key, value in single.items():
                assert torch.allclose(r[name][key], value, atol=1e-12), (name, key)
    for name in TUNED:
        single = run_tuned(name)
        assert single.numel() > 2 or name in ("rebar", "double_cv")
        for r in ranks:
            assert torch.allclose(r["tuned"][name], single, atol=1e-10, rtol=0), name
    single = train()
    for r in ranks:
        for key, value in single.items():
            assert torch.allclose(r["train"][key], value, atol=1e-10), key
    # the firing-rate statistics and the baselines are part of that state
    assert any("rate" in k for k in single) and any("numerator" in k for k in single)
    single = train(make=make_categorical_model)   # StochasticCategorical: its per-class baseline averaged over ranks
    assert any("numerator" in k for k in single)
    for r in ranks:
        for key, value in single.items():
            assert torch.allclose(r["categorical"][key], value, atol=1e-10), key


def ragged_worker(rank, init_file, out_dir):
    """Per-rank generators (different noise per rank, the usual way) and a batch that is empty on rank 1: the ranks
    must finish (a rank that skipped a collective would leave the other waiting for the process group's timeout)
    holding one state."""
    import datetime

    from stochgrad import problems

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        p = problems.decoder()
        result = {}
        for name in ("reinforce_ma", "reinforce_optimal", "rebar", "relax", "double_cv", "rodeo"):
            est = sg.get_estimator(name, **({"tune_every": 1} if name in TUNED else {}))
            gen = torch.Generator().manual_seed(10 + rank)                   # a generator of its own per rank
            for step in range(3):
                rows = 0 if rank == 1 and step == 1 else 4                    # rank 1's batch is empty once
                a = p.logits.expand(rows, -1).clone().requires_grad_(True)
                samples = TUNED.get(name, 1)
                est(p.f, a, samples, gen).sum().backward()
            result[name] = {k: v.clone() for k, v in est.state_dict().items() if isinstance(v, torch.Tensor)}
        model, _ = make_model()
        gen = torch.Generator().manual_seed(20 + rank)
        model[1].neuron.generator = gen
        with sg.broadcast() as graph:
            loss = model(torch.randn(0 if rank else 4, D_IN, dtype=torch.float64)).squeeze(-1).square()
        graph.backward(loss)
        result["layer"] = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ranks_with_their_own_generators_and_an_empty_batch_finish_with_one_state():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(ragged_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(2)]
    for name, state in ranks[0].items():
        for key, value in state.items():
            assert torch.allclose(ranks[1][name][key], value, atol=1e-12, equal_nan=True), (name, key)
        if name in TUNED:
            assert torch.isfinite(state["theta"]).all()
