import sys, resource, time
sys.path.insert(0, "benchmarks")
import torch
torch.set_num_threads(1)
import local_vs_backprop as lb
keep = "--keep-heap" in sys.argv
if keep: lb.keep_heap()
k = sys.argv[1]
fn = lb.steps(8, 1024, 128, "cpu", which=[k])[k]
for _ in range(5): fn()
N = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 30
r0 = resource.getrusage(resource.RUSAGE_SELF)
for i in range(N): fn()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(f"{k:22s} keep={keep:d} faults/step {(r1.ru_minflt-r0.ru_minflt)/N:7.0f} user {(r1.ru_utime-r0.ru_utime)/N*1e3:6.1f} ms sys {(r1.ru_stime-r0.ru_stime)/N*1e3:5.1f} ms")
