"""Same-process A/B: the library before (de39ed7, imported as stochgrad_old) and after, with the benchmark's plain-torch
references before and after, each with its own model (the same initial weights), shuffled rounds (timed_rounds).
Setup of the old copy (OLD=/tmp/local/old):
    git archive de39ed7 src/stochgrad benchmarks/local_vs_backprop.py | tar -x -C $OLD && cd $OLD &&
    mv src/stochgrad stochgrad_old && mv benchmarks/local_vs_backprop.py lvb_old.py &&
    sed -i 's/^import stochgrad as sg/import stochgrad_old as sg/; s/^from stochgrad.runinfo/from stochgrad_old.runinfo/' lvb_old.py
usage (from the worktree root): PYTHONPATH=src:benchmarks python ab_old_new.py ROUNDS REPS [--keep-heap] [--json out]"""
import sys, time, random, statistics, json, resource
sys.path.insert(0, "/tmp/local/old"); sys.path.insert(0, "benchmarks")
import torch
torch.set_num_threads(1)
import local_vs_backprop as new
import lvb_old as old
from overhead import timed_rounds, ratio, cell
rounds, reps = int(sys.argv[1]), int(sys.argv[2])
keep = "--keep-heap" in sys.argv
if keep: new.keep_heap()
fn_new = new.steps(8, 1024, 128, "cpu", which=["local", "backprop", "local, plain torch", "backprop, plain torch"])
fn_old = old.steps(8, 1024, 128, "cpu", which=["local", "backprop", "local, plain torch"])
fns = {"new local": fn_new["local"], "old local": fn_old["local"],
       "new plain local": fn_new["local, plain torch"], "old plain local": fn_old["local, plain torch"],
       "new backprop": fn_new["backprop"], "old backprop": fn_old["backprop"],
       "new plain backprop": fn_new["backprop, plain torch"]}
faults = {k: [] for k in fns}; sysr = {k: [] for k in fns}
for f in fns.values():
    for _ in range(2): f()
t = timed_rounds({k: new.counted(f, faults[k], sysr[k]) for k, f in fns.items()}, reps, rounds, time.process_time, random.Random(0))
print(f"keep_heap={keep} rounds={rounds} reps={reps}")
for k in fns:
    print(f"  {k:20s} {statistics.median(t[k])*1e3:6.1f} ms  faults/step mean {statistics.mean(faults[k]):6.0f}  sys/step mean {statistics.mean(sysr[k])*1e3:5.2f} ms")
rows = [("new local", "old local"), ("old local", "old plain local"), ("new local", "new plain local"),
        ("new local", "old plain local"), ("new plain local", "old plain local"),
        ("old local", "old backprop"), ("new local", "new backprop"), ("new backprop", "old backprop"),
        ("new plain local", "new backprop"), ("new backprop", "new plain backprop")]
out = {}
for a, b in rows:
    r = ratio(t, a, b); out[f"{a} / {b}"] = r
    print(f"  {a + ' / ' + b:40s} {cell(r)}")
if "--json" in sys.argv:
    json.dump({"keep_heap": keep, "rounds": rounds, "reps": reps, "ratios": out, "seconds": t, "minor_faults": faults,
               "system_seconds": sysr}, open(sys.argv[sys.argv.index("--json") + 1], "w"), indent=1)
