"""The architecture gradient of DARTS: first order, or second order by a virtual SGD step.

Second order (docs/METHODS.md, "Architecture search"): with the weight optimiser's learning
rate ``xi``,

* virtual step ``w' = w - xi * (momentum * buf + grad_w L_train(w, a) + wd * w)``;
* ``dalpha = grad_a L_val(w', a)`` and ``dw' = grad_w' L_val(w', a)``;
* Hessian-vector term by central differences at ``w +- eps * dw'`` with
  ``eps = 0.01 / ||dw'||``: ``h = (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps)``;
* ``grad_a = dalpha - xi * h``.

The weights are moved in place and put back bit for bit afterwards; BatchNorm running statistics
are restored too, so only the real weight step's forward pass updates them. First order
(``xi = 0``) is ``grad_a L_val(w, a)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["alpha_gradients", "kept_buffers", "virtual_step_terms"]

Loss = Callable[[], torch.Tensor]


@contextmanager
def kept_buffers(module: nn.Module) -> Iterator[None]:
    """Restore ``module``'s buffers (BN running statistics) on exit."""
    saved = [b.detach().clone() for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in zip(module.buffers(), saved, strict=True):
                buf.copy_(value)


def virtual_step_terms(
    optimizer: torch.optim.Optimizer, weights: Sequence[torch.Tensor]
) -> tuple[float, list[torch.Tensor], float, float]:
    """``(lr, momentum buffers, momentum, weight decay)`` of an SGD optimiser over ``weights``
    (a buffer is zeros before the first step)."""
    group = optimizer.param_groups[0]
    bufs = [optimizer.state.get(w, {}).get("momentum_buffer") for w in weights]
    bufs = [torch.zeros_like(w) if b is None else b for w, b in zip(weights, bufs, strict=True)]
    return float(group["lr"]), bufs, float(group.get("momentum", 0.0)), float(group["weight_decay"])


def alpha_gradients(
    train_loss: Loss | None,
    val_loss: Loss,
    weights: Sequence[torch.Tensor],
    alphas: Sequence[torch.Tensor],
    xi: float = 0.0,
    momentum_buffers: Sequence[torch.Tensor] | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    eps_scale: float = 0.01,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gradients of the validation loss with respect to ``alphas`` and that loss.

    ``train_loss`` / ``val_loss`` compute the loss on the weight / architecture batch with the
    current parameter values. ``xi = 0`` gives the first-order gradient (``train_loss`` unused).
    """
    weights, alphas = list(weights), list(alphas)
    if xi == 0.0:
        loss = val_loss()
        return list(torch.autograd.grad(loss, alphas)), loss.detach()
    saved = [w.detach().clone() for w in weights]
    bufs = momentum_buffers or [torch.zeros_like(w) for w in weights]

    def move_to(targets: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for w, target in zip(weights, targets, strict=True):
                w.copy_(target)

    try:
        grads = torch.autograd.grad(train_loss(), weights)
        move_to(
            [
                w0 - xi * (momentum * buf + g + weight_decay * w0)
                for w0, g, buf in zip(saved, grads, bufs, strict=True)
            ]
        )
        loss = val_loss()
        grads = torch.autograd.grad(loss, [*alphas, *weights])  # one backward pass
        d_alpha, d_weights = grads[: len(alphas)], grads[len(alphas) :]
        eps = eps_scale / torch.cat([d.reshape(-1) for d in d_weights]).norm()
        move_to([w0 + eps * d for w0, d in zip(saved, d_weights, strict=True)])
        plus = torch.autograd.grad(train_loss(), alphas)
        move_to([w0 - eps * d for w0, d in zip(saved, d_weights, strict=True)])
        minus = torch.autograd.grad(train_loss(), alphas)
    finally:
        move_to(saved)
    hessian = [(p - m) / (2 * eps) for p, m in zip(plus, minus, strict=True)]
    return [d - xi * h for d, h in zip(d_alpha, hessian, strict=True)], loss.detach()
