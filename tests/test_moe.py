"""Token- and sequence-level MoE: grouped dispatch, balance loss, task groups, gradients, upcycling."""

import pytest
import torch

from tiny_models import tiny_config
from unif2ace_hf.modeling.moe import (
    UniF2aceMLP,
    UniF2aceSequenceMoE,
    UniF2aceTokenMoE,
    grouped_matmul,
    switch_balance_loss,
)


def naive_token_moe(group, hidden: torch.Tensor) -> torch.Tensor:
    """One token at a time, one expert at a time."""
    experts = group.experts
    outputs = []
    for token in hidden:
        probs = torch.softmax(group.router(token).float(), dim=-1)
        weights, index = probs.topk(group.top_k)
        if group.norm_topk_prob:
            weights = weights / weights.sum()
        out = group.shared_expert(token) if group.shared_expert is not None else torch.zeros_like(token)
        for w, e in zip(weights, index.tolist()):
            h = experts.activation_fn(token @ experts.up_proj[e] + experts.up_bias[e])
            out = out + w * (h @ experts.down_proj[e] + experts.down_bias[e])
        outputs.append(out)
    return torch.stack(outputs)


@pytest.mark.parametrize("hidden_size,width", [(64, 32), (20, 6)])  # grouped_mm path and the unaligned fallback
def test_grouped_dispatch_equals_naive_loop(hidden_size, width):
    config = tiny_config(
        hidden_size=hidden_size,
        num_attention_heads=4,
        moe_intermediate_size=width,
        shared_expert_intermediate_size=width,
    )
    moe = UniF2aceTokenMoE(config)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    hidden = torch.randn(3, 7, hidden_size)
    row_group = torch.tensor([0, 1, 0])
    out, _ = moe(hidden, row_group, torch.ones(3, 7, dtype=torch.bool))
    for row, group_id in enumerate(row_group.tolist()):
        expected = naive_token_moe(moe.groups[config.token_moe_groups[group_id]], hidden[row])
        torch.testing.assert_close(out[row], expected, atol=1e-5, rtol=1e-5)


def test_grouped_matmul_fallback_matches_grouped_mm():
    inputs = torch.randn(10, 16)
    weight = torch.randn(4, 16, 8)
    counts = torch.tensor([3, 0, 4, 3])
    fast = grouped_matmul(inputs, weight, counts)
    pieces = [inputs[:3] @ weight[0], inputs[3:7] @ weight[2], inputs[7:] @ weight[3]]
    torch.testing.assert_close(fast, torch.cat(pieces))


def test_grouped_matmul_with_bias_is_the_same_with_and_without_autograd():
    """Inference writes each expert's rows in place; training concatenates (autograd cannot see `out=`)."""
    inputs, weight, bias = torch.randn(10, 16), torch.randn(4, 16, 8), torch.randn(4, 8)
    counts = torch.tensor([3, 0, 4, 3])
    expected = torch.cat(
        [inputs[:3] @ weight[0] + bias[0], inputs[3:7] @ weight[2] + bias[2], inputs[7:] @ weight[3] + bias[3]]
    )
    with torch.no_grad():
        inference = grouped_matmul(inputs, weight, counts, bias)
    training = grouped_matmul(inputs.requires_grad_(), weight, counts, bias)
    torch.testing.assert_close(inference, expected)
    torch.testing.assert_close(training, expected)
    assert training.requires_grad


def test_balance_loss_equals_hand_computation():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.2, 0.2, 0.6]])
    index = torch.tensor([[0, 1], [1, 2], [0, 2], [2, 0]])
    # slots per expert: e0: 3, e1: 2, e2: 3 of 8; mean probs: e0 .375, e1 .275, e2 .35
    expected = 3 * (3 / 8 * 0.375 + 2 / 8 * 0.275 + 3 / 8 * 0.35)
    assert switch_balance_loss(probs, index, 3).item() == pytest.approx(expected, abs=1e-6)


def test_balance_loss_of_a_group_ignores_padding_and_is_reported_per_group():
    config = tiny_config()
    moe = UniF2aceTokenMoE(config)
    hidden = torch.randn(2, 5, 64)
    valid = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    _, balances = moe(hidden, torch.tensor([0, 1]), valid)
    assert set(balances) == {"t2i", "mmu"}
    group = moe.groups["t2i"]
    probs, index, _ = group.route(hidden[0, 2:])
    assert balances["t2i"].item() == pytest.approx(switch_balance_loss(probs, index, 4).item(), abs=1e-6)


def test_task_groups_route_separately():
    config = tiny_config()
    moe = UniF2aceTokenMoE(config)
    hidden = torch.randn(2, 6, 64)
    row_group = torch.tensor([0, 1])  # t2i row, mmu row
    valid = torch.ones(2, 6, dtype=torch.bool)
    before, _ = moe(hidden, row_group, valid)
    with torch.no_grad():
        moe.groups["mmu"].experts.down_proj.add_(1.0)
        moe.groups["mmu"].router.weight.normal_()
    after, _ = moe(hidden, row_group, valid)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)  # the t2i row never touches mmu experts
    assert (after[1] - before[1]).abs().max() > 1e-3


def test_gradients_reach_every_selected_expert_and_only_those():
    config = tiny_config(num_routed_experts=8, num_experts_per_tok=2)
    moe = UniF2aceTokenMoE(config)
    hidden = torch.randn(2, 3, 64, requires_grad=True)
    row_group = torch.tensor([0, 1])
    out, balances = moe(hidden, row_group, torch.ones(2, 3, dtype=torch.bool))
    (out.pow(2).sum() + sum(balances.values())).backward()
    for group_id, name in enumerate(config.token_moe_groups):
        group = moe.groups[name]
        _, index, _ = group.route(hidden[row_group == group_id].reshape(-1, 64).detach())
        selected = set(index.flatten().tolist())
        assert selected and len(selected) < 8  # the check is meaningful: some experts idle
        for e in range(8):
            has_grad = group.experts.down_proj.grad[e].abs().sum() > 0 and group.experts.up_proj.grad[e].abs().sum() > 0
            assert bool(has_grad) == (e in selected), f"group {name} expert {e}"
        assert group.router.weight.grad.abs().sum() > 0
        assert group.shared_expert.fc1.weight.grad.abs().sum() > 0


def test_upcycled_token_moe_reproduces_the_dense_ffn():
    config = tiny_config(shared_expert_intermediate_size=128)
    dense = UniF2aceMLP(64, 128, "gelu_new")
    moe = UniF2aceTokenMoE(config)
    moe.upcycle_from_dense(dense)
    hidden = torch.randn(2, 5, 64)
    out, _ = moe(hidden, torch.tensor([0, 1]), torch.ones(2, 5, dtype=torch.bool))
    torch.testing.assert_close(out, dense(hidden), rtol=0, atol=1e-6)


def test_upcycle_needs_a_full_width_shared_expert():
    with pytest.raises(ValueError, match="shared_expert_intermediate_size"):
        UniF2aceTokenMoE(tiny_config()).upcycle_from_dense(UniF2aceMLP(64, 128, "gelu_new"))


def sequence_features(hidden):
    mask = torch.ones(hidden.shape[:2], dtype=torch.bool)
    return {"semantic": (hidden, mask), "identity": (hidden, mask)}


def test_sequence_moe_identity_start_and_per_sequence_routing():
    config = tiny_config()
    moe = UniF2aceSequenceMoE(config).eval()
    hidden = torch.randn(4, 6, 64)
    row_group = torch.tensor([0, 1, 0, -1])  # t2i, mmu, t2i, plain text (bypass)
    moe.init_as_identity()
    routing, balances = moe.route(hidden.mean(1), row_group)
    for name, (index, weight) in routing.items():
        kinds = [moe.groups[name].kinds[i] for i in index.flatten().tolist()]
        assert set(kinds) == {"copy"}
        torch.testing.assert_close(weight.sum(-1), torch.ones(index.shape[0]))
    out = moe(hidden, row_group, routing, sequence_features(hidden))
    torch.testing.assert_close(out, hidden, rtol=0, atol=1e-6)
    assert set(balances) == {"t2i", "mmu"}


def test_sequence_moe_experts_compute_their_definitions():
    config = tiny_config(sequence_moe_top_k=1)
    moe = UniF2aceSequenceMoE(config).eval()
    hidden = torch.randn(2, 5, 64)
    kinds_t2i = moe.groups["t2i"].kinds
    feats = sequence_features(hidden)
    # route each of the two t2i rows to a chosen expert with weight 1
    zero, noise = kinds_t2i.index("zero"), kinds_t2i.index("noise")
    routing = {"t2i": (torch.tensor([[zero], [noise]]), torch.ones(2, 1))}
    out = moe(hidden, torch.tensor([0, 0]), routing, feats)
    assert out[0].abs().max() == 0  # Zero expert
    expert = moe.groups["t2i"].experts[noise]
    w = torch.softmax(expert.gate_logits, 0)[0]
    expected = w * hidden[1:] + (1 - w) * expert.resampler(
        hidden[1:], torch.zeros(1, config.noise_num_tokens, 64), None
    )
    torch.testing.assert_close(out[1:], expected)  # eval mode: noise tokens at their mean
