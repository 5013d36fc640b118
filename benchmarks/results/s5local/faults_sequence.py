"""The benchmark's sequence (held_bytes, warm-up, shuffled rounds of 5 steps) without the timing: minor faults per
candidate, for several shuffle seeds. usage: fseq.py SEEDS ROUNDS [keep]"""
import sys, random, resource
sys.path.insert(0, "benchmarks")
import torch
torch.set_num_threads(1)
import local_vs_backprop as lb
seeds, rounds = int(sys.argv[1]), int(sys.argv[2])
if len(sys.argv) > 3: lb.keep_heap()
def flt(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
tot = {}
for seed in range(seeds):
    fns = lb.steps(8, 1024, 128, "cpu")
    for k in ("local", "backprop"):
        lb.held_bytes(fns[k], fns[k].model)
    for fn in fns.values(): fn()
    rng = random.Random(seed); names = list(fns); f = {k: 0 for k in fns}
    for _ in range(rounds):
        rng.shuffle(names)
        for k in names:
            for _ in range(5):
                f0 = flt(); fns[k](); f[k] += flt() - f0
    print(seed, {k[:14]: round(v / (5 * rounds)) for k, v in f.items()}, flush=True)
    for k, v in f.items(): tot[k] = tot.get(k, 0) + v / (5 * rounds)
    del fns
print("mean", {k[:14]: round(v / seeds) for k, v in tot.items()})
