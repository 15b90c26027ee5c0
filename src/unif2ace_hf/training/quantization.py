"""8-bit and 4-bit (nf4) loading of UniF²ace with bitsandbytes: which layers must stay in full precision, and why.

Usage:

```python
from unif2ace_hf import UniF2aceForConditionalGeneration
from unif2ace_hf.training.quantization import quantization_config

model = UniF2aceForConditionalGeneration.from_pretrained(path, quantization_config=quantization_config(4, model_config))
```

A plain `BitsAndBytesConfig(load_in_8bit=True)` also works for our models (transformers leaves the output head
alone); `quantization_config` adds the skips that matter for UniF²ace (`hf-stack-notes.md` §7):

* `lm_head`: the t2i pipeline slices `lm_head.weight` to the codebook columns (`codebook_logits`), which needs a
  plain float weight; the vocabulary is also rarely a multiple of 32.
* `vq_model`: the image tokenizer defines the codes; it must reproduce them exactly (it holds convolutions anyway).
* `semantic_encoder`: a small frozen convolutional encoder whose one linear layer is not worth a precision loss.
* `router` (token and sequence MoE): a handful of outputs (E = 4 or 8), which the 4-bit CPU kernel cannot run
  (`out_features % 32`), and whose top-k decisions are discrete: quantisation noise would flip experts.
* 4-bit only: every other linear layer whose shape the bitsandbytes 4-bit CPU path cannot run (`in_features % 64`,
  `out_features % 32`, e.g. a 32-wide shared expert of a tiny model), found from the config, not guessed.

The fused routed experts (`[E, in, out]` `nn.Parameter`s) are not linear layers: bitsandbytes leaves them in the
model's dtype. QLoRA adapts them in full precision (`target_parameters`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn
from transformers import BitsAndBytesConfig

ALWAYS_SKIPPED = ("lm_head", "vq_model", "semantic_encoder", "router")
"""Module-name patterns (transformers' `llm_int8_skip_modules`: a prefix, a suffix, or a regex) kept unquantised."""

FOUR_BIT_IN_MULTIPLE = 64
FOUR_BIT_OUT_MULTIPLE = 32
"""bitsandbytes' packed CPU kernel for 4-bit inference (AVX512-BF16 CPUs) needs these divisibilities."""


def four_bit_incompatible_linears(config) -> list[str]:
    """Names (without the `model.` prefix, so they match the backbone and the full model) of the linear layers
    outside the always-skipped ones whose shape bitsandbytes' 4-bit CPU kernel cannot run.

    The model is built on the meta device, so this costs no memory even for a Show-o-sized config.
    """
    from ..modeling import UniF2aceForConditionalGeneration

    config = config.__class__.from_dict(config.to_dict())
    config.vq_config = None  # the image tokenizer is skipped as a whole
    with torch.device("meta"):
        model = UniF2aceForConditionalGeneration(config)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or _skipped(name, ALWAYS_SKIPPED):
            continue
        if module.in_features % FOUR_BIT_IN_MULTIPLE or module.out_features % FOUR_BIT_OUT_MULTIPLE:
            names.append(name.removeprefix("model."))
    return names


def _skipped(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") or name.endswith("." + p) for p in patterns)


def quantization_config(
    bits: int,
    config=None,
    *,
    quant_type: str = "nf4",
    compute_dtype: torch.dtype = torch.float32,
    double_quant: bool = True,
    extra_skip_modules: Iterable[str] = (),
) -> BitsAndBytesConfig:
    """A `BitsAndBytesConfig` for UniF²ace.

    Args:
        bits: 8 (LLM.int8, outlier threshold 6.0) or 4 (`quant_type`, default nf4 as in QLoRA).
        config: the model's `UniF2aceConfig`; with 4 bits it is used to also skip layers the kernel cannot run
            (without it, the caller is responsible for aligned shapes).
        compute_dtype: 4-bit matmul dtype; float32 on CPU (bf16 is the usual choice on a GPU).
        double_quant: also quantise the 4-bit block scales (QLoRA's default; ~0.4 bit/weight less).
        extra_skip_modules: further names/patterns to keep in full precision.
    """
    skip = [*ALWAYS_SKIPPED, *extra_skip_modules]
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    if bits == 4:
        if quant_type not in ("nf4", "fp4"):
            raise ValueError(f"quant_type: expected 'nf4' or 'fp4', got {quant_type!r}")
        if config is not None:
            skip += [name for name in four_bit_incompatible_linears(config) if name not in skip]
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_type,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=double_quant,
            llm_int8_skip_modules=skip,
        )
    raise ValueError(f"bits: expected 8 or 4, got {bits!r}")


class _DropInt8CastMessage(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "inputs will be cast from" not in record.getMessage()


def silence_int8_cast_message() -> None:
    """bitsandbytes logs `MatMul8bitLt: inputs will be cast ... to float16` on every 8-bit matmul with fp32 inputs
    (expected on CPU: LLM.int8 quantises activations from fp16); drop just that message, idempotently."""
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropInt8CastMessage) for f in logger.filters):
        logger.addFilter(_DropInt8CastMessage())


def prepare_4bit_for_training(model: nn.Module) -> int:
    """Keep bitsandbytes' 4-bit layers on the differentiable path; returns how many layers were changed.

    On AVX512-BF16 CPUs, `Linear4bit.forward` repacks its weight into a CPU-kernel layout the first time it runs in
    eval mode on an input without grad (any `no_grad` evaluation or `generate`), and from then on always takes the
    kernel path, whose in-place bias add fails in backward (`a view of a leaf Variable that requires grad is being
    used in an in-place operation`). A QLoRA run that evaluates between steps would crash at the next step. This
    undoes any packing already done and switches the repacking off for these layers (the plain path is what
    training uses anyway; 4-bit inference of this model on CPU is then somewhat slower).
    """
    try:
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # bitsandbytes not installed: nothing can be 4-bit
        return 0
    changed = 0
    for module in model.modules():
        if not isinstance(module, Linear4bit):
            continue
        state = getattr(module.weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                module.weight.data, state
            )
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def quantized_module_count(model: nn.Module) -> dict[str, int]:
    """How many linear layers bitsandbytes replaced, by class (`Linear8bitLt`, `Linear4bit`)."""
    counts: dict[str, int] = {}
    for module in model.modules():
        name = type(module).__name__
        if name in ("Linear8bitLt", "Linear4bit"):
            counts[name] = counts.get(name, 0) + 1
    return counts


__all__ = [
    "ALWAYS_SKIPPED",
    "four_bit_incompatible_linears",
    "prepare_4bit_for_training",
    "quantization_config",
    "quantized_module_count",
    "silence_int8_cast_message",
]
