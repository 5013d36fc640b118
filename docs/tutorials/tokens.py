"""Learning through sampled tokens: a small autoregressive model trained through its own samples.

A GRU language model over a vocabulary of V = 4,096 tokens writes T = 8 tokens after a one-token prompt, each token
sampled from its softmax and fed back as its next input. A fixed *teacher*, a random bigram model, scores what it
writes: the loss of a sequence is the teacher's negative log-likelihood of it. The same loss, written two ways:

(a) **differentiable in the tokens, learned pathwise**: the teacher reads the one-hot tokens (``onehot @ U``), so the
    loss has a gradient with respect to every token. The tokens come from
    ``sg.StochasticCategorical(estimator, categories=V)`` with ``gumbel_st`` or ``reinmax``: hard one-hot tokens
    forward, a surrogate gradient backward, through each token into the steps that wrote it and read it. One ordinary
    ``loss.backward()``.
(b) **a reward read from token ids, learned by group leave-one-out REINFORCE**: the teacher looks the ids up
    (``U[ids]``), as a reward computed on text would: no gradient reaches the tokens. ``S = 4`` samples of each prompt
    form a group; each sequence's loss is centred by the mean loss of the other ``S − 1`` of its group
    (``stochgrad.baselines.leave_one_out_mean``, the baseline ``reinforce_loo`` uses) and broadcast to the token layers
    (``sg.broadcast()``, ``reinforce`` layers: ``(onehot − softmax(a))·(L − c)`` at every token), whose scores reach
    the parameters through the recurrent state.

It prints the teacher's NLL per token during training and for new prompts, and draws it against steps and against
seconds (``docs/tutorials/output/tokens.png``; the printed output in ``tokens.txt`` beside it).

    python docs/tutorials/tokens.py          # 3 methods x 300 steps of 32 prompts: a few minutes on one CPU thread
    python docs/tutorials/tokens.py --tiny   # 3 x 4 steps, nothing written: what the test suite runs
"""
import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import stochgrad as sg
from stochgrad.baselines import leave_one_out_mean

parser = argparse.ArgumentParser(description="An autoregressive model trained through its own sampled tokens")
parser.add_argument("--tiny", action="store_true", help="4 steps per method, nothing written (the test suite's run)")
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--out", default="docs/tutorials/output", help="where the curves and the printed output go")
args = parser.parse_args()
steps = 4 if args.tiny else args.steps
# The matrices are small (32 prompts x 4,096 tokens): extra threads mostly wait on each other, and one thread sums in a
# fixed order, so a run repeats exactly.
torch.set_num_threads(1)   # small tensors: one thread is fastest, and spares a shared machine (tutorials index: Threads)

V, D, H, T = 4096, 64, 128, 8      # vocabulary, embedding, GRU state, tokens written after the prompt
B, S = 32, 4                       # prompts per step; samples of each prompt for (b)
lines = []


def say(text=""):
    print(text, flush=True)
    lines.append(text)


class Teacher:
    """A fixed bigram model of rank 16: ``log P(next | prev) = log_softmax(0.75·U[prev]·Wᵀ)``."""

    def __init__(self, gen):
        self.U, self.W = torch.randn(V, 16, generator=gen), torch.randn(V, 16, generator=gen)

    def log_probs(self, prev):        # ids (N,) (a lookup) or one-hot (N, V) (differentiable) -> (N, V)
        u = self.U[prev] if prev.dtype == torch.long else prev @ self.U
        return torch.log_softmax(0.75 * u @ self.W.T, -1)

    def nll(self, tokens):            # one-hot (T + 1, N, V) -> (N,): mean −log P(x_t | x_{t−1}), differentiable
        logp = self.log_probs(tokens[:-1].flatten(0, 1)).view(T, -1, V)
        return -(tokens[1:] * logp).sum(-1).mean(0)

    def nll_of_ids(self, ids):        # ids (T + 1, N) -> (N,): the same loss read from the ids, no gradient
        logp = self.log_probs(ids[:-1].flatten()).view(T, -1, V)
        return -logp.gather(-1, ids[1:, :, None]).squeeze(-1).mean(0)


class Writer(nn.Module):
    """A GRU language model; it reads a token as ``onehot @ embedding``, so a pathwise gradient reaches the token."""

    def __init__(self, estimator):
        super().__init__()
        self.embedding = nn.Parameter(0.1 * torch.randn(V, D))
        self.cell, self.head = nn.GRUCell(D, H), nn.Linear(H, V)
        self.token = sg.StochasticCategorical(estimator, categories=V)     # (N, V) logits -> (N, V) one-hot

    def forward(self, prompt):        # ids (N,) -> one-hot tokens (T + 1, N, V), the prompt first
        x, h = F.one_hot(prompt, V).float(), torch.zeros(len(prompt), H)
        tokens = [x]
        for _ in range(T):
            h = self.cell(x @ self.embedding, h)
            x = self.token(self.head(h))
            tokens.append(x)
        return torch.stack(tokens)


def train(method, teacher, gen):
    """``gumbel_st`` / ``reinmax``: (a), pathwise; ``reinforce_loo``: (b). Returns the model and its curves."""
    torch.manual_seed(1)                                # the same initial writer for every method
    model = Writer("reinforce" if method == "reinforce_loo" else sg.get_estimator(method))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    curve = {"nll": [], "seconds": []}
    start = time.process_time()
    for _ in range(steps + 1):
        prompt = torch.randint(V, (B,), generator=gen)
        opt.zero_grad()
        if method == "reinforce_loo":
            with sg.broadcast() as graph:               # records the decisions of every token layer
                tokens = model(prompt.repeat(S))        # (T + 1, S·B, V): S samples of each prompt
            loss = teacher.nll_of_ids(tokens.argmax(-1)).view(S, B)   # minus the reward, from ids: no gradient
            graph.backward((loss - leave_one_out_mean(loss)).flatten())   # each sequence's loss, centred
        else:
            tokens = model(prompt)
            loss = teacher.nll(tokens)                  # differentiable in every one-hot token
            loss.mean().backward()
        opt.step()
        curve["nll"].append(loss.mean().item())
        curve["seconds"].append(time.process_time() - start)
    return model, curve


def evaluate(model, teacher, prompts):
    """Teacher NLL of sampled tokens (training mode) and of the likeliest token at each step (evaluation mode)."""
    with torch.no_grad():
        with sg.broadcast() as graph:                   # (a reinforce layer samples only inside a broadcast)
            sampled = model(prompts).argmax(-1)
        graph.discard()                                 # nothing to learn from here
        model.eval()
        greedy = model(prompts).argmax(-1)
        model.train()
    return [teacher.nll_of_ids(ids).mean().item() for ids in (sampled, greedy)]


gen = torch.Generator().manual_seed(0)
teacher = Teacher(gen)
prompts = torch.randint(V, (64 if args.tiny else 512,), generator=gen)      # new prompts for the final evaluation
logp = teacher.log_probs(prompts)
say(f"V = {V:,} tokens, T = {T} tokens after a one-token prompt, {B} prompts per step ({S} samples of each for "
    f"reinforce_loo), {steps} steps")
say(f"teacher NLL per token: a uniform writer {-logp.mean().item():.2f}, the teacher itself (its entropy) "
    f"{-(logp.exp() * logp).sum(-1).mean().item():.2f}, its likeliest token {-logp.max(-1).values.mean().item():.2f}")
say()
say(f"{'method':14s} {'step':>5s} {'teacher NLL':>12s}   (of the training batch's sampled tokens)")
curves, results = {}, {}
for method in ("gumbel_st", "reinmax", "reinforce_loo"):
    model, curve = train(method, teacher, gen)
    for i in range(0, steps + 1, max(1, steps // 6)):
        say(f"{method:14s} {i:5d} {curve['nll'][i]:12.3f}")
    curves[method], results[method] = curve, evaluate(model, teacher, prompts)
say()
say(f"teacher NLL per token for {len(prompts)} new prompts, and CPU seconds per training step:")
say(f"  {'method':14s} {'sampled tokens':>15s} {'likeliest tokens':>17s} {'s per step':>11s}")
for method, (sampled, greedy) in results.items():
    say(f"  {method:14s} {sampled:15.3f} {greedy:17.3f} {curves[method]['seconds'][-1] / (steps + 1):11.3f}")

if not args.tiny:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    window = 20
    for method, curve in curves.items():
        smooth = torch.tensor(curve["nll"]).unfold(0, window, 1).mean(-1)
        axes[0].plot(range(window - 1, steps + 1), smooth, label=method)
        axes[1].plot(curve["seconds"][window - 1:], smooth, label=method)
    axes[0].set(title="teacher NLL per token of the sampled tokens", xlabel="step", ylabel="nats")
    axes[1].set(title="the same against CPU seconds (one thread)", xlabel="seconds", ylabel="nats")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"A GRU writer over {V:,} tokens trained through its own sampled tokens ({window}-step means)")
    fig.tight_layout()
    fig.savefig(out / "tokens.png", dpi=90, metadata={"Software": None})
    (out / "tokens.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'tokens.png'} and {out / 'tokens.txt'}")
