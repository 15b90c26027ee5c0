"""UniF²ace's two mixture-of-experts levels.

* Token level: per task group (t2i, mmu), shared expert(s) plus fine-grained routed experts with a top-k softmax
  gate. Routed experts are fused 3-D parameters `[E, in, out]` (the layout peft's `target_parameters` expects) and
  are dispatched by sorting tokens by expert and running one grouped matmul per projection.
* Sequence level: per task group, a handful of experts (Copy, Zero, Noise, Semantic, Identity) chosen top-k per
  *sequence* by a router that reads the mean hidden state of the sequence's condition part.

Both report a Switch-style balance term `E * sum_i f_i * P_i` per group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .configuration_unif2ace import UniF2aceConfig


def activation(hidden_act: str) -> nn.Module:
    """The activation module for a config's `hidden_act`.

    Phi's `gelu_new` is `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`; transformers builds it from eight
    elementwise ops, whose forward and backward cost 2-4x PyTorch's fused `gelu(approximate="tanh")` kernel (the same
    formula, equal to 1e-6) on CPU, where the FFN's activations are a fifth of a layer's time in bf16.
    """
    if hidden_act == "gelu_new":
        return nn.GELU(approximate="tanh")
    return ACT2FN[hidden_act]


class UniF2aceMLP(nn.Module):
    """Phi's feed-forward branch: fc1 -> activation -> fc2, both with bias."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.activation_fn = activation(hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


def _grouped_mm_supported(inputs: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether to use `torch.nn.functional.grouped_mm` (16-byte aligned rows; on CUDA a bf16 kernel).

    On CPU it is a loop of `mm`: used for training, whose backward it handles well (measured 15 % faster than
    autograd through per-expert `addmm`), but not for inference, where per-expert `addmm` writing in place also
    fuses the bias and skips the concatenation.
    """
    if not hasattr(F, "grouped_mm"):
        return False
    if inputs.device.type == "cpu" and not torch.is_grad_enabled():
        return False
    if inputs.device.type == "cuda" and inputs.dtype != torch.bfloat16:
        return False
    if inputs.device.type not in ("cpu", "cuda"):
        return False
    element = inputs.element_size()
    return (weight.shape[1] * element) % 16 == 0 and (weight.shape[2] * element) % 16 == 0


def grouped_matmul(
    sorted_inputs: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`sorted_inputs[rows of expert e] @ weight[e] (+ bias[e])` for rows sorted by expert, `counts[e]` rows each.

    The loop path splits the rows on the host and multiplies with `weight.unbind(0)`, whose backward stacks the
    per-expert gradients once; indexing `weight[e]` instead would zero-fill a full `[E, in, out]` gradient per expert.
    It adds the bias inside `addmm`: a separate bias pass over the `(T*k, out)` rows costs as much as a small matmul
    in bf16 on CPU.
    """
    weight = weight.to(sorted_inputs.dtype)
    bias = None if bias is None else bias.to(sorted_inputs.dtype)
    if _grouped_mm_supported(sorted_inputs, weight):
        out = F.grouped_mm(sorted_inputs, weight, offs=counts.cumsum(0).to(torch.int32))
        if bias is not None:
            out = out + bias.repeat_interleave(counts, dim=0, output_size=sorted_inputs.shape[0])
        return out
    pieces = sorted_inputs.split(counts.tolist(), dim=0)
    biases = bias.unbind(0) if bias is not None else [None] * weight.shape[0]
    if not torch.is_grad_enabled():  # inference: each expert writes its rows in place, no concatenation
        out = sorted_inputs.new_empty(sorted_inputs.shape[0], weight.shape[2])
        rows = out.split(counts.tolist(), dim=0)
        for piece, expert_weight, expert_bias, target in zip(pieces, weight.unbind(0), biases, rows):
            if piece.shape[0] == 0:
                continue
            if expert_bias is None:
                torch.mm(piece, expert_weight, out=target)
            else:
                torch.addmm(expert_bias, piece, expert_weight, out=target)
        return out
    outputs = [
        piece @ expert_weight if expert_bias is None else torch.addmm(expert_bias, piece, expert_weight)
        for piece, expert_weight, expert_bias in zip(pieces, weight.unbind(0), biases)
        if piece.shape[0]
    ]
    if not outputs:
        return sorted_inputs.new_zeros(0, weight.shape[2])
    return torch.cat(outputs, dim=0)


class UniF2aceRoutedExperts(nn.Module):
    """`num_experts` MLPs stored as fused `[E, in, out]` weights, run on tokens grouped by expert."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.num_experts = num_experts
        # Usable on their own (tests, benchmarks); models re-initialise them in `_init_weights`.
        self.up_proj = nn.Parameter(torch.randn(num_experts, hidden_size, intermediate_size) * 0.02)
        self.up_bias = nn.Parameter(torch.zeros(num_experts, intermediate_size))
        self.down_proj = nn.Parameter(torch.randn(num_experts, intermediate_size, hidden_size) * 0.02)
        self.down_bias = nn.Parameter(torch.zeros(num_experts, hidden_size))
        self.activation_fn = activation(hidden_act)

    def forward(
        self, hidden_states: torch.Tensor, expert_index: torch.LongTensor, expert_weight: torch.Tensor
    ) -> torch.Tensor:
        """Weighted sum of each token's selected experts.

        Args:
            hidden_states: `(T, H)` tokens.
            expert_index: `(T, k)` selected experts.
            expert_weight: `(T, k)` gate weights.
        """
        num_tokens, top_k = expert_index.shape
        flat_expert = expert_index.reshape(-1)
        order = flat_expert.argsort(stable=True)
        token_of_slot = order // top_k
        counts = torch.bincount(flat_expert, minlength=self.num_experts)

        # index_select copies whole rows: 3x faster than advanced indexing for this gather on CPU
        hidden = grouped_matmul(hidden_states.index_select(0, token_of_slot), self.up_proj, counts, self.up_bias)
        hidden = self.activation_fn(hidden)
        # The gate weight scales the expert's hidden activations (width `intermediate`, narrower than the output);
        # `w * (a @ W + b) = (w * a) @ W + w * b`, and the bias part is one small `(T, E) @ (E, H)` product below.
        hidden = hidden * expert_weight.reshape(-1)[order, None].to(hidden.dtype)
        out = grouped_matmul(hidden, self.down_proj, counts)
        # Each token sums its k slots; index_add_ visits slots in a fixed order on CPU.
        combined = out.new_zeros(num_tokens, out.shape[-1]).index_add_(0, token_of_slot, out)
        gates = expert_weight.new_zeros(num_tokens, self.num_experts).scatter_add_(1, expert_index, expert_weight)
        return torch.addmm(combined, gates.to(out.dtype), self.down_bias.to(out.dtype))


def switch_balance_loss(router_probs: torch.Tensor, expert_index: torch.LongTensor, num_experts: int) -> torch.Tensor:
    """Switch Transformer balance term `E * sum_i f_i * P_i`.

    `f_i` is the share of the `T * k` routing slots that went to expert `i`, `P_i` the mean router probability of
    expert `i`; both over the rows given (padding already removed). 1.0 means perfectly balanced.
    """
    if router_probs.shape[0] == 0:
        return router_probs.new_zeros(())
    counts = torch.zeros(num_experts, device=router_probs.device, dtype=router_probs.dtype)
    counts = counts.scatter_add(
        0, expert_index.reshape(-1), torch.ones_like(expert_index.reshape(-1), dtype=router_probs.dtype)
    )
    fraction = counts / expert_index.numel()
    mean_prob = router_probs.mean(dim=0)
    return num_experts * (fraction * mean_prob).sum()


class UniF2aceTokenMoEGroup(nn.Module):
    """One task group: a top-k router, the routed experts and the shared expert(s)."""

    def __init__(self, config: UniF2aceConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.num_experts = config.num_routed_experts
        self.router = nn.Linear(config.hidden_size, config.num_routed_experts, bias=False)
        self.experts = UniF2aceRoutedExperts(
            config.num_routed_experts, config.hidden_size, config.moe_intermediate_size, config.hidden_act
        )
        shared_width = config.num_shared_experts * config.shared_expert_intermediate_size
        self.shared_expert = (
            UniF2aceMLP(config.hidden_size, shared_width, config.hidden_act) if config.num_shared_experts > 0 else None
        )

    def route(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor, torch.Tensor]:
        """Router probabilities (fp32), the top-k experts and their gate weights."""
        router_probs = F.softmax(self.router(hidden_states).float(), dim=-1)
        top_weight, top_index = router_probs.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            top_weight = top_weight / top_weight.sum(dim=-1, keepdim=True)
        return router_probs, top_index, top_weight

    def forward(self, hidden_states: torch.Tensor, token_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(T, H)` tokens of this group -> `(T, H)` output and the group's balance term over valid tokens."""
        router_probs, top_index, top_weight = self.route(hidden_states)
        out = self.experts(hidden_states, top_index, top_weight)
        if self.shared_expert is not None:
            out = out + self.shared_expert(hidden_states)
        balance = switch_balance_loss(router_probs[token_valid], top_index[token_valid], self.num_experts)
        return out, balance


class UniF2aceTokenMoE(nn.Module):
    """Grouped token-level MoE: each row's tokens go to the experts of its task group."""

    def __init__(self, config: UniF2aceConfig):
        super().__init__()
        self.group_names = list(config.token_moe_groups)
        self.groups = nn.ModuleDict({name: UniF2aceTokenMoEGroup(config) for name in self.group_names})

    def forward(
        self, hidden_states: torch.Tensor, row_group: torch.LongTensor, token_valid: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Args:
            hidden_states: `(B, L, H)`.
            row_group: `(B,)` index into `group_names` per row.
            token_valid: `(B, L)` real (non-padding) tokens, used for the balance statistics.
        """
        batch_size, length, hidden_size = hidden_states.shape
        if len(self.group_names) == 1:
            name = self.group_names[0]
            out, balance = self.groups[name](hidden_states.reshape(-1, hidden_size), token_valid.reshape(-1))
            return out.view(batch_size, length, hidden_size), {name: balance}
        out = hidden_states.new_zeros(batch_size, length, hidden_size)
        balances = {}
        for group_id, name in enumerate(self.group_names):
            rows = (row_group == group_id).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            if rows.numel() == batch_size:  # a one-task batch (every generation step): no gather, no scatter
                group_out, balances[name] = self.groups[name](
                    hidden_states.reshape(-1, hidden_size), token_valid.reshape(-1)
                )
                return group_out.view(batch_size, length, hidden_size), balances
            group_out, balances[name] = self.groups[name](
                hidden_states.index_select(0, rows).reshape(-1, hidden_size), token_valid[rows].reshape(-1)
            )
            out = out.index_copy(0, rows, group_out.view(-1, length, hidden_size).to(out.dtype))
        return out, balances

    @torch.no_grad()
    def upcycle_from_dense(self, dense: UniF2aceMLP) -> None:
        """Start every group from a dense FFN so the layer reproduces it exactly.

        The shared expert becomes a copy of the dense FFN. Routed expert `e` takes the `e`-th slice of the dense
        up-projection (fine-grained segmentation, wrapping around when the experts are wider in total) and a zero
        down-projection, so routed outputs are exactly zero at step 0 and the experts differentiate by training.
        """
        for group in self.groups.values():
            if group.shared_expert is None or group.shared_expert.fc1.weight.shape != dense.fc1.weight.shape:
                raise ValueError(
                    "upcycle_from_dense needs one shared expert as wide as the dense FFN "
                    f"({dense.fc1.weight.shape[0]}); set num_shared_experts=1 and shared_expert_intermediate_size "
                    "to the dense intermediate_size."
                )
            group.shared_expert.load_state_dict(dense.state_dict())
            experts = group.experts
            num_experts, _, width = experts.up_proj.shape
            dense_width = dense.fc1.weight.shape[0]
            rows = (torch.arange(num_experts * width) % dense_width).view(num_experts, width)
            experts.up_proj.copy_(dense.fc1.weight[rows].transpose(1, 2))
            experts.up_bias.copy_(dense.fc1.bias[rows])
            experts.down_proj.zero_()
            experts.down_bias.zero_()


class UniF2aceResampler(nn.Module):
    """Cross-attention from the sequence to external feature tokens, mapping them into the sequence's space."""

    def __init__(self, hidden_size: int, feature_dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.feature_proj = nn.Linear(feature_dim, hidden_size)
        self.feature_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.query_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def project_features(self, features: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values `(B, heads, N, head_dim)` of the feature tokens; they depend only on the features, so a
        generation computes them once and reuses them at every step."""
        batch_size, hidden_size = features.shape[0], self.q_proj.out_features
        head_dim = hidden_size // self.num_heads
        features = self.feature_norm(self.feature_proj(features.to(dtype)))
        key = self.k_proj(features).view(batch_size, -1, self.num_heads, head_dim).transpose(1, 2)
        value = self.v_proj(features).view(batch_size, -1, self.num_heads, head_dim).transpose(1, 2)
        return key, value

    def forward(
        self,
        hidden_states: torch.Tensor,
        features: torch.Tensor | None,
        feature_mask: torch.Tensor | None,
        key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        batch_size, length, hidden_size = hidden_states.shape
        head_dim = hidden_size // self.num_heads
        key, value = key_value if key_value is not None else self.project_features(features, hidden_states.dtype)
        query = (
            self.q_proj(self.query_norm(hidden_states))
            .view(batch_size, length, self.num_heads, head_dim)
            .transpose(1, 2)
        )
        mask = None if feature_mask is None else feature_mask[:, None, None, :].bool()
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return self.o_proj(attended.transpose(1, 2).reshape(batch_size, length, hidden_size))


class UniF2aceGatedResamplerExpert(nn.Module):
    """`w * x + (1 - w) * Resampler(features)`, with `w` a trainable weight passed through softmax.

    `kind` is "semantic" or "identity" (features from an encoder, or the built-in condition embeddings), or "noise"
    (Gaussian feature tokens while training; their mean, zeros, at inference so sampling stays reproducible).
    """

    def __init__(self, config: UniF2aceConfig, kind: str):
        super().__init__()
        self.kind = kind
        feature_dim = {"semantic": config.semantic_feature_dim, "identity": config.identity_feature_dim}.get(kind)
        self.feature_dim = feature_dim or config.hidden_size
        self.noise_num_tokens = config.noise_num_tokens
        self.gate_logits = nn.Parameter(torch.zeros(2))
        self.resampler = UniF2aceResampler(
            config.hidden_size, self.feature_dim, config.resampler_num_heads, config.layer_norm_eps
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        features: torch.Tensor | None,
        feature_mask: torch.Tensor | None,
        key_value_store: dict | None = None,
    ) -> torch.Tensor:
        """`key_value_store` (a dict kept for one generation) caches the resampler's feature keys/values: the
        features and the rows routed here do not change between decoding steps."""
        key_value = None if key_value_store is None or self.training else key_value_store.get(self)
        if self.kind == "noise":
            shape = (hidden_states.shape[0], self.noise_num_tokens, self.feature_dim)
            features = (
                torch.randn(shape, device=hidden_states.device, dtype=hidden_states.dtype)
                if self.training
                else hidden_states.new_zeros(shape)
            )
            feature_mask = None
        if key_value is None:
            key_value = self.resampler.project_features(features, hidden_states.dtype)
            if key_value_store is not None and not self.training:
                key_value_store[self] = key_value
        weight = F.softmax(self.gate_logits.float(), dim=0)[0].to(hidden_states.dtype)
        resampled = self.resampler(hidden_states, None, feature_mask, key_value=key_value)
        return weight * hidden_states + (1 - weight) * resampled


class UniF2aceSequenceMoEGroup(nn.Module):
    """Experts of one task group and the router that picks `top_k` of them per sequence."""

    def __init__(self, config: UniF2aceConfig, kinds: list[str]):
        super().__init__()
        self.kinds = list(kinds)
        self.top_k = config.sequence_moe_top_k
        self.router = nn.Linear(config.hidden_size, len(kinds), bias=True)
        self.experts = nn.ModuleList(
            [
                UniF2aceGatedResamplerExpert(config, kind)
                if kind in ("noise", "semantic", "identity")
                else nn.Identity()
                for kind in kinds
            ]
        )

    def route(self, condition_mean: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor, torch.Tensor]:
        router_probs = F.softmax(self.router(condition_mean).float(), dim=-1)
        top_weight, top_index = router_probs.topk(self.top_k, dim=-1)
        return router_probs, top_index, top_weight / top_weight.sum(dim=-1, keepdim=True)

    def forward(
        self,
        hidden_states: torch.Tensor,
        top_index: torch.LongTensor,
        top_weight: torch.Tensor,
        features: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]],
        key_value_store: dict | None = None,
    ) -> torch.Tensor:
        """Gate-weighted sum of each sequence's selected experts; sequences are grouped per expert."""
        out = torch.zeros_like(hidden_states)
        for expert_id, (kind, expert) in enumerate(zip(self.kinds, self.experts)):
            hit = top_index == expert_id  # (B, k)
            rows = hit.any(dim=1).nonzero().squeeze(1)
            if rows.numel() == 0 or kind == "zero":
                continue
            weight = (top_weight * hit).sum(dim=1)[rows].to(hidden_states.dtype)[:, None, None]
            selected = hidden_states[rows]
            if kind == "copy":
                expert_out = selected
            else:
                feats, mask = features.get(kind, (None, None))
                expert_out = expert(
                    selected,
                    None if feats is None else feats[rows],
                    None if mask is None else mask[rows],
                    key_value_store,
                )
            out = out.index_add(0, rows, weight * expert_out)
        return out


class UniF2aceSequenceMoE(nn.Module):
    """Grouped sequence-level MoE applied to the residual stream after the block."""

    def __init__(self, config: UniF2aceConfig):
        super().__init__()
        self.group_names = list(config.sequence_moe_experts)
        self.groups = nn.ModuleDict(
            {name: UniF2aceSequenceMoEGroup(config, kinds) for name, kinds in config.sequence_moe_experts.items()}
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        row_group: torch.LongTensor,
        routing: dict[str, tuple[torch.LongTensor, torch.Tensor]],
        features: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]],
        key_value_store: dict | None = None,
    ) -> torch.Tensor:
        """
        Args:
            hidden_states: `(B, L, H)`.
            row_group: `(B,)` index into `group_names`, or -1 for rows that bypass the sequence MoE (plain text).
            routing: per group name, `(top_index, top_weight)` for the rows of that group (in row order).
            features: per expert kind, `(features, feature_mask)` for the whole batch.
            key_value_store: per-generation cache of the resampler experts' feature keys/values (None: no reuse).
        """
        out = hidden_states
        for group_id, name in enumerate(self.group_names):
            rows = (row_group == group_id).nonzero().squeeze(1)
            if rows.numel() == 0 or name not in routing:
                continue
            top_index, top_weight = routing[name]
            group_features = {
                kind: (None if f is None else f[rows], None if m is None else m[rows])
                for kind, (f, m) in features.items()
            }
            group_out = self.groups[name](hidden_states[rows], top_index, top_weight, group_features, key_value_store)
            out = out.index_copy(0, rows, group_out.to(out.dtype))
        return out

    @torch.no_grad()
    def init_as_identity(self, copy_logit: float = 4.0) -> None:
        """Make the layer an exact identity: the router ignores its input (zero weight) and its bias ranks the Copy
        experts first, so top-k picks only Copy experts and the renormalised gates sum to one."""
        for name, group in self.groups.items():
            copies = [i for i, kind in enumerate(group.kinds) if kind == "copy"]
            if len(copies) < group.top_k:
                raise ValueError(
                    f"sequence MoE group {name!r} has {len(copies)} Copy expert(s) but top_k={group.top_k}; an "
                    "identity start needs at least top_k Copy experts."
                )
            group.router.weight.zero_()
            group.router.bias.zero_()
            group.router.bias[copies] = copy_logit

    def route(
        self, condition_mean: torch.Tensor, row_group: torch.LongTensor
    ) -> tuple[dict[str, tuple[torch.LongTensor, torch.Tensor]], dict[str, torch.Tensor]]:
        """Routing decision per group from the rows' mean condition hidden state, and the balance terms."""
        routing, balances = {}, {}
        for group_id, name in enumerate(self.group_names):
            rows = (row_group == group_id).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            group = self.groups[name]
            router_probs, top_index, top_weight = group.route(condition_mean[rows])
            routing[name] = (top_index, top_weight)
            balances[name] = switch_balance_loss(router_probs, top_index, len(group.kinds))
        return routing, balances


__all__ = [
    "UniF2aceMLP",
    "UniF2aceRoutedExperts",
    "UniF2aceTokenMoE",
    "UniF2aceTokenMoEGroup",
    "UniF2aceSequenceMoE",
    "UniF2aceSequenceMoEGroup",
    "UniF2aceGatedResamplerExpert",
    "UniF2aceResampler",
    "grouped_matmul",
    "switch_balance_loss",
]
