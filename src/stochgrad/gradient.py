"""The replace-gradient node: a value whose backward pass carries an estimator's gradient to the logits.

Every score-function and control-variate estimator ends in [`attach_gradient`][stochgrad.gradient.attach_gradient] (the pathwise ones in autograd
through a relaxed or straight-through sample): the ground floor that the estimators, the layers and ``expect``
share. The idiom of ``microsoft/ReinMax`` and ``nshepperd/gumbel-rao-pytorch``, ``value + (s − s.detach())`` with
the surrogate ``s = Σ grad·logits``, written as one autograd node.
"""
from __future__ import annotations

import torch
from torch import Tensor


class ReplaceGradient(torch.autograd.Function):
    """``value`` forward; backward: ``value``'s own gradient passes through, and ``logits`` receive
    ``∂L/∂value[k] · grad[k]``. One node where the idiom builds four, with no full-size product in the forward
    pass. Written with ``setup_context``, so ``torch.func`` transforms (``grad``, ``vjp``) and ``torch.compile``
    take it as it is.
    """

    @staticmethod
    def forward(value: Tensor, logits: Tensor, grad: Tensor) -> Tensor:
        return value.detach()  # a new tensor on value's storage; this node links it to value and logits

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[2])

    @staticmethod
    def backward(ctx, d_value: Tensor):
        (grad,) = ctx.saved_tensors
        extra = grad.dim() - d_value.dim()  # the event dimensions: (n,) or (n, K)
        return d_value, d_value.reshape(*d_value.shape, *([1] * extra)) * grad, None


def attach_gradient(value: Tensor, logits: Tensor, grad: Tensor) -> Tensor:
    """``value`` in the forward pass; in the backward pass ``d value[k] / d logits[k] := grad[k]``.

    ``value``: ``(*batch,)``; ``logits`` and ``grad``: ``(*batch, *event)`` (``event`` = ``(n,)`` or ``(n, K)``),
    ``grad`` treated as a constant. Gradients that ``value`` already carries (to parameters of ``f``) are kept.
    """
    if not logits.requires_grad:
        return value
    return ReplaceGradient.apply(value, logits, grad.detach())


class PassThrough(torch.autograd.Function):
    """``h`` forward; backward: ``h``'s gradient goes on, unchanged, to ``surrogate`` (summed over the leading
    dimensions that ``h`` has beyond it) and to ``h``. The straight-through idiom ``h + (s − s.detach())`` as one node,
    with no op of its own: same value (``s − s`` is 0), same gradients."""

    @staticmethod
    def forward(h: Tensor, surrogate: Tensor) -> Tensor:
        return h.detach()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.shape = inputs[1].shape

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, g if g.shape == ctx.shape else g.sum_to_size(ctx.shape)


def straight_through(h: Tensor, surrogate: Tensor) -> Tensor:
    """``h`` forward, the gradient of ``surrogate`` backward (seed §3.2.1; the ``replace_gradient`` idiom of
    ``microsoft/ReinMax`` and ``nshepperd/gumbel-rao-pytorch``): ``h`` ``(*lead, *shape)``, ``surrogate`` ``shape``."""
    return PassThrough.apply(h, surrogate) if surrogate.requires_grad else h
