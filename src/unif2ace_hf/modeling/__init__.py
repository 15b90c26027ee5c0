"""UniF²ace model code: configuration, backbone, MoE levels, omni-attention and checkpoint conversion."""

from .configuration_unif2ace import UniF2aceConfig, UniF2aceVQConfig
from .image_tokenizer import UniF2aceVQModel, UniF2aceVQOutput
from .modeling_unif2ace import (
    UniF2aceCausalLMOutputWithPast,
    UniF2aceForConditionalGeneration,
    UniF2aceModel,
    UniF2aceModelOutputWithPast,
    UniF2acePreTrainedModel,
)
from .omni_attention import build_omni_attention_mask

__all__ = [
    "UniF2aceConfig",
    "UniF2aceModel",
    "UniF2aceForConditionalGeneration",
    "UniF2acePreTrainedModel",
    "UniF2aceModelOutputWithPast",
    "UniF2aceCausalLMOutputWithPast",
    "build_omni_attention_mask",
    "UniF2aceVQConfig",
    "UniF2aceVQModel",
    "UniF2aceVQOutput",
]
