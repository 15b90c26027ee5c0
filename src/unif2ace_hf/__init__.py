"""unif2ace_hf: UniF²ace as a Hugging Face-native model.

Importing the package registers the model with transformers' Auto classes, so `AutoConfig`, `AutoModel`,
`AutoModelForCausalLM` and `AutoModelForImageTextToText` resolve `model_type="unif2ace"`.
"""

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .modeling import (
    UniF2aceCausalLMOutputWithPast,
    UniF2aceConfig,
    UniF2aceForConditionalGeneration,
    UniF2aceModel,
    UniF2aceModelOutputWithPast,
    UniF2acePreTrainedModel,
    UniF2aceVQConfig,
    UniF2aceVQModel,
    build_omni_attention_mask,
)
from .pipelines.face_understanding import FaceUnderstandingPipeline
from .pipelines.pipeline_unif2ace import UniF2acePipeline, UniF2acePipelineOutput
from .pipelines.scheduling_unif2ace import UniF2aceMaskGITScheduler
from .processing_unif2ace import UniF2aceImageProcessor, UniF2aceProcessor
from .tokenization_unif2ace import train_byte_level_bpe

__version__ = "0.1.0"

DEFAULT_MODEL = str(Path(__file__).resolve().parent / "default_models" / "unif2ace-tiny")
"""The embedded default model (`unif2ace train --recipe tiny-synthface` from scratch on SynthFace, 6 minutes of one
H200; `scripts/train_default_model_gpu.sh`, docs/default_model.md): one folder for `AutoModel`,
`pipeline("face-understanding")` and `UniF2acePipeline`, offline."""

DEFAULT_TEXT_TOKENIZER = str(Path(__file__).resolve().parent / "default_models" / "unif2ace-text-tokenizer")
"""The default model's byte-level BPE (Show-o's special tokens appended), trained on SynthFace captions and QA with
`unif2ace train-text-tokenizer --vocab-size 2048` (the merges stop at 1 104 text tokens: the vocabulary is small)."""

DEFAULT_VQ_MODEL = str(Path(__file__).resolve().parent / "default_models" / "unif2ace-vq-tiny")
"""The image tokenizer trained here on SynthFace in 45 minutes of a 2-core CPU (64×64 images, 16×16 codes of 12 bits,
4096 codes; `scripts/train_default_tokenizer_cpu.sh`), shipped in the package:
`UniF2aceVQModel.from_pretrained(DEFAULT_VQ_MODEL)`. The default model was trained on its codes and carries a copy."""


def _register_auto_classes() -> None:
    """Local registration (this process) and remote-code registration (saved folders carry the code)."""
    AutoConfig.register(UniF2aceConfig.model_type, UniF2aceConfig, exist_ok=True)
    AutoModel.register(UniF2aceConfig, UniF2aceModel, exist_ok=True)
    AutoModelForCausalLM.register(UniF2aceConfig, UniF2aceForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(UniF2aceConfig, UniF2aceForConditionalGeneration, exist_ok=True)
    # Unregistered, AutoProcessor silently falls back to the tokenizer (hf-stack-notes §2).
    AutoImageProcessor.register(UniF2aceConfig, image_processor_classes={"pil": UniF2aceImageProcessor}, exist_ok=True)
    AutoProcessor.register(UniF2aceConfig, UniF2aceProcessor, exist_ok=True)
    AutoConfig.register(UniF2aceVQConfig.model_type, UniF2aceVQConfig, exist_ok=True)
    AutoModel.register(UniF2aceVQConfig, UniF2aceVQModel, exist_ok=True)
    UniF2aceConfig.register_for_auto_class()
    UniF2aceVQConfig.register_for_auto_class()
    UniF2aceVQModel.register_for_auto_class("AutoModel")
    UniF2aceModel.register_for_auto_class("AutoModel")
    UniF2aceForConditionalGeneration.register_for_auto_class("AutoModelForCausalLM")
    UniF2aceImageProcessor.register_for_auto_class("AutoImageProcessor")
    UniF2aceProcessor.register_for_auto_class("AutoProcessor")


def _register_pipeline_task() -> None:
    """`pipeline("face-understanding")`; saved pipelines also carry it as remote code (`custom_pipelines`)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    PIPELINE_REGISTRY.register_pipeline(
        "face-understanding",
        pipeline_class=FaceUnderstandingPipeline,
        pt_model=AutoModelForCausalLM,
        type="multimodal",
    )


_register_auto_classes()
_register_pipeline_task()

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
    "DEFAULT_MODEL",
    "DEFAULT_VQ_MODEL",
    "DEFAULT_TEXT_TOKENIZER",
    "FaceUnderstandingPipeline",
    "UniF2acePipeline",
    "UniF2acePipelineOutput",
    "UniF2aceMaskGITScheduler",
    "UniF2aceImageProcessor",
    "UniF2aceProcessor",
    "train_byte_level_bpe",
    "__version__",
]
