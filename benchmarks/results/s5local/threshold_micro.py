import torch, time
torch.set_num_threads(1)
p = torch.rand(128, 1024)
def t(fn, n=3000):
    for _ in range(100): fn()
    t0 = time.process_time()
    for _ in range(n): fn()
    return (time.process_time() - t0) / n * 1e6
u0 = torch.rand(128, 1024)
for _ in range(3):
    print("rand                ", t(lambda: torch.rand(128, 1024)))
    print("lt.to (no rand)     ", t(lambda: (u0 < p).to(p.dtype)))
    print("lt out=float new    ", t(lambda: torch.lt(u0, p, out=torch.empty_like(p))))
    u1 = u0.clone()
    print("lt out=u (inplace)  ", t(lambda: torch.lt(u1, p, out=u1)))
    print("rand+lt.to          ", t(lambda: (torch.rand(128, 1024) < p).to(p.dtype)))
    print("rand+lt out=u       ", t(lambda: (lambda u: torch.lt(u, p, out=u))(torch.rand(128, 1024))))
