"""DARTS' architecture gradient: min_alpha L_val(w*(alpha), alpha), w*(alpha) = argmin_w L_train.

First order takes w* ~ w: the gradient is dL_val(w, alpha)/dalpha.
Second order unrolls one weight step, w' = w - xi * (the SGD step the weight optimizer would
take: momentum, weight decay and gradient of L_train), and approximates

    dL_val(w', alpha)/dalpha - xi * d2L_train(w, alpha)/dalpha dw . dL_val(w', alpha)/dw'

with the Hessian-vector product by central finite differences at w+- = w +- eps * dL_val/dw',
eps = 0.01 / ||dL_val/dw'|| (Liu et al., 2019). xi is the current weight learning rate.
"""

from __future__ import annotations

import torch

from rung.nas.space import SearchNetwork

FINITE_DIFFERENCE_SCALE = 0.01


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d params, zeros for params the loss does not reach (pruned or zero ops)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def first_order_gradient(model: SearchNetwork, x_val, y_val) -> list[torch.Tensor]:
    return _grads(model.loss(x_val, y_val), model.arch_parameters())


def second_order_gradient(model: SearchNetwork, weight_optimizer: torch.optim.SGD, lr: float,
                          x_train, y_train, x_val, y_val) -> list[torch.Tensor]:
    alphas, weights = model.arch_parameters(), model.weight_parameters()
    group = weight_optimizer.param_groups[0]
    momentum, decay = group["momentum"], group["weight_decay"]
    train_grads = _grads(model.loss(x_train, y_train), weights)
    saved = [w.detach().clone() for w in weights]
    with torch.no_grad():  # w <- w' in place; restored below
        for w, g in zip(weights, train_grads):
            buffer = weight_optimizer.state.get(w, {}).get("momentum_buffer")
            step = g + decay * w
            if buffer is not None:
                step = step + momentum * buffer
            w.sub_(lr * step)
    grads = _grads(model.loss(x_val, y_val), alphas + weights)
    alpha_grads, v = grads[:len(alphas)], grads[len(alphas):]
    norm = torch.cat([g.flatten() for g in v]).norm()
    eps = FINITE_DIFFERENCE_SCALE / norm.clamp_min(1e-12)

    def train_alpha_grads_at(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for w, w0, g in zip(weights, saved, v):
                w.copy_(w0 + sign * eps * g)
        return _grads(model.loss(x_train, y_train), alphas)

    plus, minus = train_alpha_grads_at(1.0), train_alpha_grads_at(-1.0)
    with torch.no_grad():
        for w, w0 in zip(weights, saved):
            w.copy_(w0)
    return [g - lr * (p - m) / (2 * eps) for g, p, m in zip(alpha_grads, plus, minus)]


def apply_gradient(model: SearchNetwork, arch_optimizer: torch.optim.Optimizer, grads: list[torch.Tensor]):
    arch_optimizer.zero_grad(set_to_none=True)
    for a, g in zip(model.arch_parameters(), grads):
        a.grad = g.detach()
    arch_optimizer.step()
