"""The network view's broadcast: ``with sg.broadcast() as graph: ...; graph.backward(per_example_loss)``.

Stochastic layers whose estimator needs the loss (score-function estimators, ``learned``) record a
:class:`Node` in the active graph during the forward pass; :meth:`Graph.backward` delivers each
example's own loss to every node (seed §3.1: "only requires broadcasting L throughout the network")
and runs one backward pass that fills every parameter's gradient as that of the *mean* loss:
autograd for the pathwise parts, ``(h − σ(a))·(L − c)`` (or the learned prediction) at each node.

The active graph is held in a context variable, not a module-level list: nested or concurrent
forward passes (threads, asyncio tasks) each see their own.
"""
from __future__ import annotations

import contextvars
import math
from collections import deque
from contextlib import contextmanager
from typing import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .guard import reads_at_once

_ACTIVE: contextvars.ContextVar["Graph | None"] = contextvars.ContextVar("stochgrad_graph", default=None)


@dataclass
class Node:
    """One stochastic layer's decisions in one forward pass: ``a``, ``h`` ``(*batch, n)``."""

    estimator: object
    logits: Tensor             # pre-activations a, carrying the graph to the layer's parameters
    h: Tensor                  # the samples, in {0, 1}
    probs: Tensor              # σ(a), detached
    probe: Tensor | None = None  # for estimators that need ∂L/∂h: a leaf the output's gradient lands on


class Graph:
    """Records the stochastic nodes of one forward pass; :meth:`backward` delivers the loss to them."""

    def __init__(self, local: bool = False):
        self.local = local
        self.nodes: list[Node] = []

    def record(self, node: Node) -> None:
        self.nodes.append(node)

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
        count = loss.numel()
        roots, grads = [], []
        if loss.requires_grad:
            roots.append(loss.mean())
            grads.append(None)
        for node in self.nodes:
            batch = node.h.shape[:-1]
            L = loss.detach().reshape(*loss.shape, *([1] * (len(batch) - loss.dim()))).expand(batch)
            probe = dl_dh.get(id(node.probe))
            g = node.estimator.score_gradient(node.h, node.probs, L, update=True, dl_dh=probe)
            if node.logits.requires_grad:
                roots.append(node.logits)
                grads.append(g / count)  # the gradient of the mean loss
        if roots:
            torch.autograd.backward(roots, grads)
        self.nodes.clear()


@contextmanager
def broadcast(local: bool = False) -> Iterator[Graph]:
    """Records the stochastic nodes of the forward passes inside it; see :class:`Graph`.

    Args:
        local: learn from the broadcast loss alone (seed §3.1): every stochastic layer's output is
            detached, so no gradient crosses layers and no backward pass runs through the network;
            each layer's parameters learn from ``(h − σ(a))·(L − c)`` and the layers after the last
            stochastic one from their own local gradient. Pathwise layers (which learn only by
            back-propagation) are an error here.
    """
    graph = Graph(local)
    token = _ACTIVE.set(graph)
    try:
        yield graph
    finally:
        _ACTIVE.reset(token)


def active_graph() -> Graph | None:
    """The graph of the innermost active :func:`broadcast` in this context, or ``None``."""
    return _ACTIVE.get()


class DelayedBroadcast:
    """Keeps the stochastic decisions of each step until its reward arrives ``delay`` steps later (seed §3.1:
    "the actual loss or reward will be measured farther into the future"), then delivers it.

    ``with delayed.step(): ...`` records one forward pass; ``delayed.deliver(loss)`` hands the per-example
    loss (e.g. minus the reward) to the *oldest* pending step, filling the gradients of its decisions.
    At most ``delay + 1`` steps are held: memory is bounded by the delay, not by the run's length; a
    step that would exceed it is an error, since its reward was never delivered.
    """

    def __init__(self, delay: int, local: bool = True):
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.delay, self.local = delay, local
        self.pending: deque[Graph] = deque()

    @contextmanager
    def step(self) -> Iterator[Graph]:
        if len(self.pending) > self.delay:
            raise RuntimeError(f"{len(self.pending)} steps await their reward with delay {self.delay}: "
                               "deliver the oldest before recording another")
        with broadcast(self.local) as graph:
            yield graph
        self.pending.append(graph)

    def deliver(self, loss: Tensor) -> None:
        """The per-example loss of the oldest pending step."""
        if not self.pending:
            raise RuntimeError("no pending step to deliver a reward to")
        self.pending.popleft().backward(loss)

    def __len__(self) -> int:
        return len(self.pending)
