"""unif2ace_hf: UniF²ace as a Hugging Face-native model.

Importing the package registers the model with transformers' Auto classes, so `AutoConfig`, `AutoModel`,
`AutoModelForCausalLM` and `AutoModelForImageTextToText` resolve `model_type="unif2ace"`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

from .modeling import (
    UniF2aceCausalLMOutputWithPast,
    UniF2aceConfig,
    UniF2aceForConditionalGeneration,
    UniF2aceModel,
    UniF2aceModelOutputWithPast,
    UniF2acePreTrainedModel,
    build_omni_attention_mask,
)

__version__ = "0.1.0"


def _register_auto_classes() -> None:
    """Local registration (this process) and remote-code registration (saved folders carry the code)."""
    AutoConfig.register(UniF2aceConfig.model_type, UniF2aceConfig, exist_ok=True)
    AutoModel.register(UniF2aceConfig, UniF2aceModel, exist_ok=True)
    AutoModelForCausalLM.register(UniF2aceConfig, UniF2aceForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(UniF2aceConfig, UniF2aceForConditionalGeneration, exist_ok=True)
    UniF2aceConfig.register_for_auto_class()
    UniF2aceModel.register_for_auto_class("AutoModel")
    UniF2aceForConditionalGeneration.register_for_auto_class("AutoModelForCausalLM")


_register_auto_classes()

__all__ = [
    "UniF2aceConfig",
    "UniF2aceModel",
    "UniF2aceForConditionalGeneration",
    "UniF2acePreTrainedModel",
    "UniF2aceModelOutputWithPast",
    "UniF2aceCausalLMOutputWithPast",
    "build_omni_attention_mask",
    "__version__",
]
