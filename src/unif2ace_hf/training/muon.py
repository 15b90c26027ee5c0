"""Muon for a network's hidden weights: convolution kernels, matrices and stacks of experts (the rest stays with AdamW).

Muon (Jordan et al., 2024; "Muon is Scalable for LLM Training", Liu et al., 2025) replaces each weight matrix's
momentum by the nearest semi-orthogonal matrix (five Newton–Schulz iterations), so every direction of the update
moves at the same rate instead of the few directions that dominate the gradient. `torch.optim.Muon` takes 2-D
parameters only; a convolution's `(out, in, k, k)` kernel is the `(out, in·k·k)` matrix its im2col form multiplies
by, so here it is orthogonalised in that shape. The update is scaled by `0.2 · sqrt(max(out, in·k·k))`, Moonshot's
rule, which gives it the RMS of an AdamW update: the two halves share one learning rate and one schedule.

Which weights are "hidden" is the caller's choice: the tokenizer trainer uses `hidden_weight_names`, the model's
trainer `training/optimizers.py` (which also hands over the MoE's fused `(E, in, out)` expert stacks as `stacked`
groups). The first and last layers, biases and norm scales stay with AdamW, as in the papers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""The quintic of Jordan et al.: it pushes singular values in (0, 1] towards [0.7, 1.2] in five steps."""


def orthogonalize(matrix: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """The semi-orthogonal factor `U Vᵀ` of `matrix = U S Vᵀ`, approximately, in bf16 (as the reference does: the
    iteration tolerates it and the matmuls run several times faster on a CPU with bf16 units). A `(..., m, n)`
    stack is a batch of independent matrices, run as batched matmuls (one call for a layer's experts)."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix.to(torch.bfloat16)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = x.mT
    x = x / (torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if transposed else x).to(matrix.dtype)


def hidden_weight_names(model: nn.Module, exclude: Iterable[str] = ()) -> list[str]:
    """Names of the weights Muon should take: every conv or linear kernel whose matrix has more than one row and
    column (a single output channel or a single input has no directions to balance), minus the names in `exclude`."""
    excluded = set(exclude)
    return [
        name
        for name, parameter in model.named_parameters()
        if parameter.ndim >= 2 and name not in excluded and min(parameter.shape[0], parameter[0].numel()) > 1
    ]


class ConvMuon(torch.optim.Optimizer):
    """Muon for matrices and convolution kernels: Nesterov momentum, orthogonalised in the kernel's
    `(out, in·k·k)` matrix shape, scaled to the RMS of an AdamW update, decoupled weight decay. The other
    parameters belong in an AdamW beside it with the same learning rate.

    A parameter group with `stacked=True` holds `(E, m, n)` stacks of independent matrices (a MoE layer's fused
    experts): each of the E matrices is orthogonalised on its own, in one batched call. `batch_by_shape` also
    batches the weights of one shape together (default: on accelerators, where it saves launches; not on a CPU)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        ns_steps: int = 5,
        batch_by_shape: bool | None = None,
    ):
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            group["params"] = list(group["params"])
            if group.get("stacked") and any(p.ndim != 3 for p in group["params"]):
                raise ValueError("`params`: a `stacked` group takes (E, m, n) stacks of matrices only.")
            if any(p.ndim < 2 for p in group["params"]):
                raise ValueError("`params`: Muon takes matrices and kernels (ndim >= 2) only; give the rest to AdamW.")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, ns_steps=ns_steps, stacked=False)
        super().__init__(groups, defaults)
        self.batch_by_shape = batch_by_shape

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            parameters = [p for p in group["params"] if p.grad is not None]
            if not parameters:
                continue
            grads = [p.grad for p in parameters]
            buffers = []
            for parameter in parameters:
                state = self.state[parameter]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(parameter)
                buffers.append(state["momentum_buffer"])
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, grads)
            updates = torch._foreach_add(grads, buffers, alpha=group["momentum"])  # Nesterov
            # On an accelerator, matrices of one shape are orthogonalised together as one batch (the same arithmetic
            # per matrix): a few dozen batched matmuls per step instead of 27 small ones per weight, where kernel
            # launches dominate a small model's step. On a CPU one at a time is faster: the stacking copies cost
            # more than the calls they save (benchmarks/bench_muon_step.py).
            batched = self.batch_by_shape if self.batch_by_shape is not None else parameters[0].device.type != "cpu"
            buckets: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for index, (parameter, update) in enumerate(zip(parameters, updates)):
                matrix = update if group["stacked"] else update.reshape(update.shape[0], -1)
                key = tuple(matrix.shape) if batched else (index, *matrix.shape)
                buckets.setdefault(key, []).append((parameter, matrix))
            for members in buckets.values():
                if len(members) == 1:
                    directions = [orthogonalize(members[0][1], group["ns_steps"])]
                else:
                    stack = torch.stack([matrix for _, matrix in members])
                    directions = orthogonalize(stack, group["ns_steps"]).unbind(0)
                targets = [parameter for parameter, _ in members]
                if group["weight_decay"]:
                    torch._foreach_mul_(targets, 1 - group["lr"] * group["weight_decay"])
                scale = -group["lr"] * 0.2 * max(members[0][1].shape[-2:]) ** 0.5
                torch._foreach_add_(targets, [d.view_as(t) for d, t in zip(directions, targets)], alpha=scale)
        return loss


__all__ = ["ConvMuon", "hidden_weight_names", "orthogonalize"]
