"""The real host-device synchronisation check, on a CUDA device: the happy path of ``expect`` for the
core estimators and of the layers (a broadcast network step) runs under ``torch.cuda.set_sync_debug_mode("error")``,
which raises on any synchronising CUDA call. Then a bad call (NaN losses) must be reported by a later call of
the same estimator, with the estimator's state untouched.

Run: ``python benchmarks/device/sync_check.py [--json out.json]`` (needs a GPU; prints one line per check).
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback

import torch
from torch import nn

import stochgrad as sg

CORE = ["straight_through", "straight_through_sigmoid", "reinforce", "reinforce_ma", "reinforce_optimal",
        "reinforce_loo", "arm", "disarm", "gumbel_st", "learned"]


def f(b):
    return (b - 0.45).square().sum(-1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run the same steps on the CPU, treated as a device (no sync mode there): tests this script")
    args = p.parse_args(argv)
    if args.cpu_dry_run:
        from stochgrad import guard

        guard.HOST_READS = frozenset()
        torch.cuda.set_sync_debug_mode = lambda mode: None
        torch.cuda.synchronize = lambda: None
        torch.cuda.get_device_name = lambda: "cpu (dry run)"
        dev = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing checked")
        return 2
    else:
        dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    results = {}

    def check(label, step, calls=20):
        try:
            step()                      # first use: buffers sized, kernels loaded (may synchronise)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                for _ in range(calls):
                    step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
            results[label] = "ok: no synchronisation"
        except Exception as err:  # noqa: BLE001 - the report is the point
            results[label] = f"FAILED: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
            traceback.print_exc()
        print(f"{label:45s} {results[label]}", flush=True)

    for name in CORE:
        est = sg.get_estimator(name).to(dev)
        samples = 2 if name == "reinforce_loo" else 1
        for generator in (gen, None):
            def step(est=est, samples=samples, generator=generator):
                a = torch.randn(64, 20, device=dev, requires_grad=True)
                sg.expect(f, a, est, samples, generator).sum().backward()
            check(f"expect {name} ({'generator' if generator is not None else 'global RNG'})", step)

    model = nn.Sequential(nn.Linear(16, 32), sg.FiringRateControl(sg.StochasticBinary("reinforce_optimal")),
                          nn.Linear(32, 32), sg.StochasticBinary("reinforce_ma"), nn.Linear(32, 1)).to(dev)
    local = nn.Sequential(nn.Linear(16, 32), sg.StochasticBinary("reinforce_optimal"), nn.Linear(32, 1)).to(dev)
    pathwise = nn.Sequential(nn.Linear(16, 32), sg.StochasticBinary("straight_through"), nn.Linear(32, 1),
                             sg.NoisyRectifier()).to(dev)
    x = torch.randn(64, 16, device=dev)

    def layer_step(net, loc=False):
        with sg.broadcast(local=loc) as graph:
            loss = net(x).squeeze(-1).square()
        graph.backward(loss)

    check("layers: broadcast step (reinforce_optimal, ma, rate)", lambda: layer_step(model))
    check("layers: broadcast(local=True) step", lambda: layer_step(local, True))
    check("layers: pathwise step (straight_through)", lambda: pathwise(x).square().sum().backward())

    # a bad call: not raised by itself (that would synchronise), but by a later call; the state never saw it
    est = sg.get_estimator("reinforce_optimal").to(dev)
    a = torch.randn(64, 20, device=dev, requires_grad=True)
    sg.expect(f, a, est).sum().backward()
    before = {k: v.clone() for k, v in est.state_dict().items()}
    label = "bad call reported by a later call, state kept"
    try:
        sg.expect(lambda b: f(b) * float("nan"), a, est)
        torch.cuda.synchronize()
        same = all(torch.equal(before[k], v) for k, v in est.state_dict().items())
        raised = None
        for k in range(5):
            try:
                sg.expect(f, a, est)
                torch.cuda.synchronize()
            except ValueError as err:
                raised = (k + 1, str(err)[:200])
                break
        results[label] = f"{'ok' if same and raised else 'FAILED'}: state unchanged={same}, raised at later call {raised}"
    except Exception as err:  # noqa: BLE001
        results[label] = f"FAILED: {type(err).__name__}: {err}"
    print(f"{label:45s} {results[label]}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": results, "torch": torch.__version__, "device": torch.cuda.get_device_name()}, fh,
                      indent=1)
    return 0 if all(v.startswith("ok") for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
