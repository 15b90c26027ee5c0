"""Muon for convolution kernels (`training/muon.py`) and the tokenizer trainer's `optimizer="muon"`."""

import pytest
import torch

from unif2ace_hf.training.muon import ConvMuon, hidden_weight_names, orthogonalize
from unif2ace_hf.training.tokenizer_trainer import TokenizerTrainingArguments, train_tokenizer


@pytest.mark.parametrize("shape", [(64, 288), (288, 64), (16, 144)])
def test_orthogonalize_flattens_the_spectrum_and_keeps_the_singular_vectors(shape):
    torch.manual_seed(0)
    # a gradient-like matrix: one direction dominates
    matrix = torch.randn(shape) + 20 * torch.randn(shape[0], 1) @ torch.randn(1, shape[1])
    result = orthogonalize(matrix)
    assert result.shape == matrix.shape and result.dtype == matrix.dtype
    singular_values = torch.linalg.svdvals(result)
    assert singular_values.min() > 0.5 and singular_values.max() < 1.25
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    polar = u @ vh
    cosine = (result * polar).sum() / (result.norm() * polar.norm())
    assert cosine > 0.95


def test_update_has_the_rms_of_an_adamw_update():
    """Moonshot's scaling: an update whose entries have RMS 0.2·lr, whatever the kernel's shape."""
    for out_channels, in_channels in ((32, 64), (128, 16)):
        kernel = torch.nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))
        kernel.grad = torch.randn_like(kernel)
        ConvMuon([kernel], lr=0.01, momentum=0.0).step()
        assert kernel.detach().pow(2).mean().sqrt().item() == pytest.approx(0.2 * 0.01, rel=0.25)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="params.*ndim >= 2"):
        ConvMuon([torch.nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match="momentum"):
        ConvMuon([torch.nn.Parameter(torch.zeros(4, 4))], momentum=1.0)
    with pytest.raises(ValueError, match="optimizer.*'lion'"):
        train_tokenizer(TokenizerTrainingArguments(data="unused", output_dir="unused", optimizer="lion"))


def test_hidden_weights_leave_out_vectors_single_channels_and_the_excluded():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3), torch.nn.Conv2d(8, 1, 1))
    assert hidden_weight_names(model) == ["0.weight", "1.weight"]
    assert hidden_weight_names(model, exclude=["0.weight"]) == ["1.weight"]


def test_a_stack_of_matrices_is_orthogonalised_one_matrix_at_a_time():
    torch.manual_seed(0)
    stack = torch.randn(4, 32, 16) + 10 * torch.randn(4, 32, 1) @ torch.randn(4, 1, 16)
    together = orthogonalize(stack)
    for index in range(4):
        torch.testing.assert_close(together[index], orthogonalize(stack[index]), atol=2e-2, rtol=0)


def test_a_stacked_group_updates_each_expert_with_its_own_rms_and_refuses_non_stacks():
    experts = torch.nn.Parameter(torch.zeros(3, 64, 16))
    experts.grad = torch.randn_like(experts) * torch.tensor([1.0, 100.0, 0.01])[:, None, None]
    ConvMuon([{"params": [experts], "stacked": True}], lr=0.01, momentum=0.0).step()
    rms = experts.detach().pow(2).mean(dim=(1, 2)).sqrt()
    # whatever the scale of each expert's gradient, each gets an AdamW-sized step of its own
    torch.testing.assert_close(rms, torch.full((3,), 0.2 * 0.01), rtol=0.25, atol=0)
    with pytest.raises(ValueError, match="stacked.*\\(E, m, n\\)"):
        ConvMuon([{"params": [torch.nn.Parameter(torch.zeros(4, 4))], "stacked": True}])


@pytest.mark.parametrize("batch_by_shape", [True, False])
def test_matrices_of_one_shape_are_orthogonalised_together_with_the_same_result_as_one_by_one(batch_by_shape):
    torch.manual_seed(0)
    shapes = [(32, 16), (32, 16), (16, 8, 3, 3), (16, 72), (32, 16)]  # a kernel reshapes to (16, 72) too
    parameters = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    reference = [p.detach().clone() for p in parameters]
    buffers = [torch.zeros_like(p) for p in reference]
    lr, momentum, decay = 0.02, 0.9, 0.1
    optimizer = ConvMuon(parameters, lr=lr, momentum=momentum, weight_decay=decay, batch_by_shape=batch_by_shape)
    for _ in range(2):
        grads = [torch.randn_like(p) for p in parameters]
        for parameter, grad in zip(parameters, grads):
            parameter.grad = grad.clone()
        optimizer.step()
        for index, grad in enumerate(grads):  # Muon one weight at a time, as written in the papers
            buffers[index] = buffers[index] * momentum + grad
            matrix = (grad + momentum * buffers[index]).reshape(grad.shape[0], -1)
            direction = orthogonalize(matrix).view_as(grad)
            reference[index] = reference[index] * (1 - lr * decay) - lr * 0.2 * max(matrix.shape) ** 0.5 * direction
    for parameter, expected in zip(parameters, reference):
        torch.testing.assert_close(parameter.detach(), expected, atol=2e-3, rtol=0)
