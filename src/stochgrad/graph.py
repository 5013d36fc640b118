"""The network view's broadcast: ``with sg.broadcast() as graph: ...; graph.backward(per_example_loss)``.

Stochastic layers whose estimator needs the loss (score-function estimators, ``learned``) record a
[`Node`][stochgrad.graph.Node] in the active graph during the forward pass; [`Graph.backward`][stochgrad.graph.Graph.backward] delivers each
example's own loss to every node (seed §3.1: "only requires broadcasting L throughout the network")
and runs one backward pass that fills every parameter's gradient as that of the *mean* loss:
autograd for the pathwise parts, ``(h − σ(a))·(L − c)`` (or the learned prediction) at each node.

The active graph is held in a context variable, not a module-level list: nested or concurrent
forward passes (threads, asyncio tasks) each see their own.
"""
from __future__ import annotations

import contextvars
import inspect
import math
import os
import warnings
from collections import deque
from contextlib import contextmanager
from typing import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.compiler import is_compiling

from .estimators.base import ScoreFunction
from .guard import reads_at_once
from .options import FLAG, NON_NEGATIVE

_HERE = os.path.dirname(os.path.abspath(__file__))   # the package's folder: frames inside it are not the user's
_FORMULA = ScoreFunction.score_gradient  # the library's own (h − σ)·(L − c): it takes the 1/B as a scale

_ACTIVE: contextvars.ContextVar["Graph | None"] = contextvars.ContextVar("stochgrad_graph", default=None)
_OPEN: list["Graph"] = []  # the broadcasts open in any context, innermost last: empty, no context has one (a plain
# read torch.compile traces); inside a compiled region, which cannot read a context variable, the innermost one


@dataclass
class Node:
    """One stochastic layer's decisions in one forward pass: ``h``, ``probs`` ``(*batch, n)``.

    The pre-activations ``a`` themselves are not kept, only where their gradient enters autograd (``edge``,
    `torch.autograd.graph.get_gradient_edge`): their memory is freed with the forward pass.
    """

    estimator: object
    edge: GradientEdge | Tensor | None  # where ∂L/∂a enters the graph to the layer's parameters (compiled: a
    # itself); None: a needs no gradient
    h: Tensor                  # the samples, in {0, 1}
    probs: Tensor              # σ(a), detached
    probe: Tensor | None = None  # for estimators that need ∂L/∂h: a leaf the output's gradient lands on

    @classmethod
    def of(cls, estimator, logits: Tensor, h: Tensor, probs: Tensor, probe: Tensor | None = None) -> "Node":
        """The node of the decisions ``h`` drawn with ``probs`` from ``logits`` (a tensor of ``h``'s shape). Inside a
        compiled region the logits themselves (an output of the compiled graph: its backward takes their gradient)."""
        if not logits.requires_grad:
            return cls(estimator, None, h, probs, probe)
        return cls(estimator, logits if is_compiling() else get_gradient_edge(logits), h, probs, probe)


class Graph:
    """Records the stochastic nodes of one forward pass; [`backward`][stochgrad.graph.Graph.backward] delivers the loss to them.

    A graph dropped while it still holds decisions whose loss was never delivered (e.g. a plain
    ``loss.mean().backward()`` instead of ``graph.backward(loss)``: those layers get no gradient) warns
    with a ``RuntimeWarning``; [`discard`][stochgrad.graph.Graph.discard] drops them on purpose.
    """

    def __init__(self, local: bool = False, opened_at: tuple[str, int] = ("<unknown>", 0)):
        self.local = local
        self.nodes: list[Node] = []
        self.step_index: int | None = None   # set by DelayedBroadcast.step: which step this graph records
        self.opened_at = opened_at           # (file, line) of the user's code that opened it: where a warning points

    def record(self, node: Node) -> None:
        self.nodes.append(node)

    def discard(self) -> None:
        """Drops the recorded decisions without learning from them."""
        self.nodes.clear()

    def __del__(self):
        if getattr(self, "nodes", None):   # (a graph torch.compile made without __init__ has none)
            # pointed at the `with sg.broadcast()` that opened it: wherever the graph is collected is no help
            warnings.warn_explicit(
                f"a stochgrad broadcast graph with {len(self.nodes)} stochastic layer(s) was dropped before their loss "
                "was delivered: call graph.backward(per_example_loss) (a plain loss.backward() leaves those layers "
                "without gradient), or graph.discard()", RuntimeWarning, *getattr(self, "opened_at", ("<unknown>", 0)))

    def backward(self, loss: Tensor) -> None:
        """Fills ``.grad`` of every parameter with the gradient of ``loss.mean()``.

        Args:
            loss: per-example losses ``(batch,)`` (or ``(*batch,)`` matching the nodes' batch shape);
                each example's own loss reaches its own decisions (seed Theorem 1).
        """
        if not isinstance(loss, Tensor) or not loss.is_floating_point():
            raise TypeError(f"graph.backward needs a floating-point tensor of per-example losses, got {type(loss).__name__}")
        if loss.dim() == 0:
            raise ValueError("graph.backward needs per-example losses of shape (batch,), got a scalar: "
                             "pass the loss before the mean (e.g. reduction='none')")
        if reads_at_once(loss) and not math.isfinite(loss.detach().sum().item()):
            raise ValueError("graph.backward got a NaN or inf loss")  # elsewhere: the estimators' guards (guard.py)
        for node in self.nodes:
            batch = node.h.shape[:-1]
            if batch[: loss.dim()] != loss.shape:
                raise ValueError(f"per-example losses of shape {tuple(loss.shape)} do not match the batch "
                                 f"{tuple(batch)} of a stochastic layer with {node.h.shape[-1]} units")
        probes = [n.probe for n in self.nodes if n.probe is not None]
        dl_dh = {}
        if probes:  # one backward pass to the outputs of the nodes that need ∂L/∂h (straight-through's)
            grads = torch.autograd.grad(loss.sum(), probes, retain_graph=True, allow_unused=True)
            dl_dh = {id(p): (torch.zeros_like(p) if g is None else g) for p, g in zip(probes, grads)}
        count = max(loss.numel(), 1)   # an empty batch: nothing to learn, but every node still folds (and, under
        roots, grads = [], []            # torch.distributed, joins its ranks' collectives with a count of 0)
        if loss.requires_grad:
            roots.append(loss.mean() if loss.numel() else loss.sum())   # (an empty batch: 0, not the mean's NaN)
            grads.append(None)
        losses = {}   # the detached losses broadcast to each batch shape (usually one shape for all the nodes)
        for node in self.nodes:
            batch = node.h.shape[:-1]
            L = losses.get(batch)
            if L is None:
                L = losses[batch] = loss.detach().reshape(*loss.shape, *([1] * (len(batch) - loss.dim()))).expand(batch)
            probe = dl_dh.get(id(node.probe)) if dl_dh else None
            est = node.estimator
            if type(est).score_gradient is _FORMULA:   # 1/B folded into L − c's vectors: no pass over g
                g = est.score_gradient(node.h, node.probs, L, True, probe, 1 / count)
            else:   # any other broadcast estimator: its fresh result divided in place
                g = est.score_gradient(node.h, node.probs, L, update=True, dl_dh=probe).div_(count)
            if node.edge is not None:
                roots.append(node.edge)
                grads.append(g)  # the gradient of the mean loss
        self.nodes.clear()
        if roots:
            torch.autograd.backward(roots, grads)


@contextmanager
def broadcast(local: bool = False) -> Iterator[Graph]:
    """Records the stochastic nodes of the forward passes inside it; see [`Graph`][stochgrad.graph.Graph].

    Args:
        local: learn from the broadcast loss alone (seed §3.1): every stochastic layer's output is
            detached, so no gradient crosses layers and no backward pass runs through the network;
            each layer's parameters learn from ``(h − σ(a))·(L − c)`` and the layers after the last
            stochastic one from their own local gradient. Pathwise layers (which learn only by
            back-propagation) are an error here.
    """
    graph = Graph(FLAG.check(local, "local"), opened_at())
    token = _ACTIVE.set(graph)
    _OPEN.append(graph)
    try:
        yield graph
    except BaseException:
        graph.discard()   # the forward pass failed: nothing to deliver, nothing to warn about
        raise
    finally:
        del _OPEN[max(i for i, g in enumerate(_OPEN) if g is graph)]
        _ACTIVE.reset(token)


def opened_at() -> tuple[str, int]:
    """``(file, line)`` of the innermost caller outside stochgrad and ``contextlib``: the user's ``with`` statement."""
    frame = inspect.currentframe()
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_HERE) and os.path.basename(name) != "contextlib.py":
            return name, frame.f_lineno
        frame = frame.f_back
    return "<unknown>", 0


def active_graph() -> Graph | None:
    """The graph of the innermost active [`broadcast`][stochgrad.graph.broadcast] in this context, or ``None``.

    Outside every broadcast it reads no context variable. ``torch.compile`` cannot trace one: inside a compiled
    region it is the innermost broadcast opened in any context (one forward pass at a time per process, as
    compiled training runs), so a model with score-function layers compiles whole."""
    if not _OPEN:
        return None
    return _OPEN[-1] if is_compiling() else _ACTIVE.get()


class DelayedBroadcast:
    """Keeps the stochastic decisions of each step until its reward arrives ``delay`` steps later (seed §3.1:
    "the actual loss or reward will be measured farther into the future"), then delivers it.

    ``with delayed.step() as handle: ...`` records one forward pass; ``delayed.deliver(loss, handle)``
    hands that step's per-example loss (e.g. minus the reward) to it, filling the gradients of its
    decisions. Rewards arrive in the order of their steps, each once: a reward for any step but the
    oldest pending one (a lost reward before it) or for a step already served (a duplicate) is an error,
    so a reward can never be credited to another step. Without the handle, the reward goes to the oldest
    pending step and exactly ``delay`` steps must have been recorded after it (record, then deliver).
    At most ``delay + 1`` steps are held: memory is bounded by the delay, not by the run's length; a
    step that would exceed it is an error, since its reward was never delivered. [`discard`][stochgrad.graph.DelayedBroadcast.discard] drops
    the steps still pending (e.g. at the end of a run).
    """

    def __init__(self, delay: int, local: bool = True):
        self.delay, self.local = NON_NEGATIVE.check(delay, "delay"), FLAG.check(local, "local")
        self.pending: deque[Graph] = deque()
        self.recorded = 0   # steps recorded so far; a step's handle carries its index

    @contextmanager
    def step(self) -> Iterator[Graph]:
        if len(self.pending) > self.delay:
            raise RuntimeError(f"{len(self.pending)} steps await their reward with delay {self.delay}: "
                               "deliver the oldest before recording another")
        with broadcast(self.local) as graph:
            graph.step_index = self.recorded
            yield graph
        self.recorded += 1
        self.pending.append(graph)

    def deliver(self, loss: Tensor, step: Graph | None = None) -> None:
        """The per-example loss ``(batch,)`` of ``step`` (the handle yielded by [`step`][stochgrad.graph.DelayedBroadcast.step]), which must
        be the oldest pending step; without ``step``, of the oldest pending step recorded ``delay``
        steps ago. Raises before any gradient changes when the reward cannot belong to that step."""
        if not self.pending:
            raise RuntimeError("no pending step to deliver a reward to")
        oldest = self.pending[0]
        if step is not None and step is not oldest:
            if not isinstance(step, Graph) or step.step_index is None:
                raise TypeError(f"step must be the handle yielded by DelayedBroadcast.step(), got {type(step).__name__}")
            if step.step_index < oldest.step_index:
                raise RuntimeError(f"the reward of step {step.step_index} was already delivered: a duplicate delivery")
            raise RuntimeError(f"a reward for step {step.step_index} arrived while step {oldest.step_index} still awaits "
                               "its own: a reward was lost or delivered out of order")
        if step is None:
            after = self.recorded - 1 - oldest.step_index
            if after != self.delay:
                raise RuntimeError(f"the oldest pending step ({oldest.step_index}) has {after} step(s) recorded after it, "
                                   f"not delay = {self.delay}: a reward was lost, duplicated or delivered early; "
                                   "pass step=<the handle yielded by step()> to say whose reward this is")
        oldest.backward(loss)   # validates the loss first: a bad one leaves the step pending
        self.pending.popleft()

    def discard(self) -> None:
        """Drops every pending step without learning from it."""
        while self.pending:
            self.pending.popleft().discard()

    def __len__(self) -> int:
        return len(self.pending)
