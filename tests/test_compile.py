"""torch.compile: a training step around sg.expect, and models with stochastic layers (pathwise, and score-function
layers under sg.broadcast()), compile and give the eager gradients with the same generator state, across batch sizes
(dynamic shapes: batch 64, then 37)."""
import pytest
import torch
from torch import nn

import stochgrad as sg


def quad(b):
    return (b - 0.45).square().sum(-1)


@pytest.mark.parametrize("name", ["straight_through", "reinforce_ma", "disarm"])
def test_compiled_expect_matches_eager(name):
    torch._dynamo.reset()
    compiled_est, eager_est = sg.get_estimator(name), sg.get_estimator(name)
    step = torch.compile(lambda a, g: sg.expect(quad, a, compiled_est, generator=g).sum(), backend="aot_eager")
    for batch in (64, 37, 37, 20):
        a = torch.randn(batch, 10, generator=torch.Generator().manual_seed(batch), requires_grad=True)
        b = a.detach().clone().requires_grad_(True)
        step(a, torch.Generator().manual_seed(batch)).backward()
        sg.expect(quad, b, eager_est, generator=torch.Generator().manual_seed(batch)).sum().backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-5), (name, batch)
    assert all(torch.allclose(x, y) for x, y in zip(compiled_est.state_dict().values(),
                                                    eager_est.state_dict().values()))


def test_compiled_model_with_stochastic_layers_matches_eager():
    torch._dynamo.reset()

    def make():
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        return nn.Sequential(nn.Linear(8, 16), sg.StochasticBinary("straight_through", generator=gen),
                             nn.Linear(16, 16), sg.StochasticBinary("gumbel_st", generator=gen), nn.Linear(16, 1)), gen

    eager, _ = make()
    model, _ = make()
    compiled = torch.compile(model, backend="aot_eager")
    for batch in (64, 37):
        x = torch.randn(batch, 8, generator=torch.Generator().manual_seed(batch))
        compiled(x).square().mean().backward()
        eager(x).square().mean().backward()
        for p, q in zip(model.parameters(), eager.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5)


def test_a_model_with_score_function_layers_compiles_whole_under_broadcast_and_matches_eager():
    """Linear → StochasticBinary(reinforce_ma) → Linear → StochasticCategorical(reinforce_optimal) → Linear inside
    ``sg.broadcast()``, compiled with ``fullgraph=True``: the layers find the broadcast and record their nodes inside
    the compiled region; ``graph.backward`` gives the eager gradients and baselines on the same noise, at two batch
    sizes."""
    torch._dynamo.reset()

    def make():   # the global generator (a passed torch.Generator is a graph break: docs/performance.md)
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 12), sg.StochasticBinary("reinforce_ma"), nn.Linear(12, 12),
                             sg.StochasticCategorical("reinforce_optimal", categories=3), nn.Linear(12, 1))

    eager, model = make(), make()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for batch in (64, 37, 37):
        x = torch.randn(batch, 8, generator=torch.Generator().manual_seed(batch))
        y = torch.randn(batch, generator=torch.Generator().manual_seed(batch + 1))
        for net in (compiled, eager):
            torch.manual_seed(batch)   # the same noise for both
            with sg.broadcast() as graph:
                loss = (net(x).squeeze(-1) - y).square()
            assert len(graph.nodes) == 2
            graph.backward(loss)
        for p, q in zip(model.parameters(), eager.parameters()):
            torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5)
        assert model[0].weight.grad.abs().sum() > 0   # reached through both score-function layers
    for (k, v), w in zip(model.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(v, w, atol=1e-6, rtol=1e-5, msg=k)


def test_a_compiled_broadcast_model_trains():
    """The same kind of model, compiled whole, learns a target through its score-function layers alone."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), sg.StochasticBinary("reinforce_optimal"), nn.Linear(16, 1))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    x = torch.randn(256, 4)
    y = (x[:, 0] > 0).float() * 2 - x[:, 1].abs()
    losses = []
    for _ in range(150):
        opt.zero_grad()
        with sg.broadcast() as graph:
            loss = (compiled(x).squeeze(-1) - y).square()
        graph.backward(loss)
        opt.step()
        losses.append(loss.mean().item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)


def test_a_pathwise_model_compiles_into_one_graph():
    """Outside a broadcast the layers read no context variable (a graph break for torch.compile)."""
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(8, 16), sg.StochasticBinary("straight_through"), nn.Linear(16, 16),
                          sg.StochasticBinary("gumbel_st"), nn.Linear(16, 1))
    out = torch._dynamo.explain(lambda x: model(x).square().mean())(torch.randn(5, 8))
    assert out.graph_break_count == 0 and out.graph_count == 1


NOT_COMPILED = {"learned", "rebar", "relax", "double_cv", "rodeo", "auto"}   # docs/performance.md says why


def _cases():
    for name, info in sg.estimators().items():
        if name in NOT_COMPILED:
            continue
        for dist in info.distributions:
            yield dist, name


@pytest.mark.parametrize("dist, name", list(_cases()))
def test_every_estimator_compiles_whole_and_matches_eager(dist, name):
    """fullgraph=True on the global generator, a name (stateless ones, built before any trace) or an object: the
    same gradients as eager with the same seed,
    at batch 16 then 9 and 9 (one recompile for the new shape at most: two graphs in all)."""
    torch._dynamo.reset()
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    samples = max(2, sg.estimators()[name].min_samples) if name in ("reinforce_loo", "arms", "carms") else 1
    w = torch.linspace(0, 1, 4, dtype=torch.float64)
    f = {"bernoulli": quad, "categorical": lambda h: (h * w).sum(-1).sub(0.45).square().sum(-1),
         "categorical_index": lambda z: w[z].sub(0.45).square().sum(-1)}[dist]   # (class indices: f reads w[z])
    kw = {} if dist == "bernoulli" else {"distribution": dist}
    from stochgrad.estimators import _SHARED

    for use_name in (True, False) if name in _SHARED else (False,):   # (a stateful one by name starts afresh: an object)
        ours, theirs = (name, name) if use_name else (sg.get_estimator(name), sg.get_estimator(name))
        torch._dynamo.reset()
        graphs.clear()
        step = torch.compile(lambda a: sg.expect(f, a, ours, samples, **kw).sum(), backend=counting, fullgraph=True)
        for batch in (16, 9, 9):
            shape = (batch, 5) if dist == "bernoulli" else (batch, 3, 4)
            a = torch.randn(shape, generator=torch.Generator().manual_seed(batch), dtype=torch.float64,
                            requires_grad=True)
            b = a.detach().clone().requires_grad_(True)
            torch.manual_seed(batch)
            step(a).backward()
            torch.manual_seed(batch)
            sg.expect(f, b, theirs, samples, **kw).sum().backward()
            assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-12), (name, batch)
        assert len(graphs) <= 2, len(graphs)
