"""`pipeline("face-understanding")`: answer a question about a face, or caption it when no question is given.

The image and question form one prefix `[mmu][soi] codes [eoi][sot] USER: … ASSISTANT:` that `generate` computes
once into the KV cache; every answer token then costs one cached step (Show-o recomputes the whole sequence).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from transformers import Pipeline

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, ModelCard


class FaceUnderstandingPipeline(Pipeline):
    """Visual question answering and captioning for faces with a UniF²ace model.

    Example:

    ```python
    >>> import unif2ace_hf
    >>> from transformers import pipeline
    >>> vqa = pipeline("face-understanding", model=unif2ace_hf.DEFAULT_MODEL)
    >>> vqa(image, question="What shape are her eyebrows?")
    {'answer': 'arched'}
    >>> vqa(image)
    {'caption': 'A young woman with ...'}
    ```

    Inputs: an image (PIL, path, numpy, tensor), a dict `{"image", "question"}`, or a list of either.
    Generation kwargs (`max_new_tokens`, `do_sample`, `temperature`, `top_k`, `top_p`, `num_beams`, `streamer`, …)
    are passed to `model.generate`.
    """

    _load_processor = True
    _load_image_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False
    _pipeline_calls_generate = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("processor: the face-understanding pipeline needs a UniF2aceProcessor")
        # Batched collation pads input_ids with the tokenizer's pad id on its padding side (left).
        self.tokenizer = self.processor.tokenizer

    def __call__(self, inputs, question: str | None = None, **kwargs):
        return super().__call__(inputs, question=question, **kwargs)

    def _sanitize_parameters(self, question=None, max_new_tokens=None, generate_kwargs=None, **kwargs):
        preprocess_params = {} if question is None else {"question": question}
        forward_params = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            forward_params["max_new_tokens"] = max_new_tokens
        for name in (
            "do_sample",
            "temperature",
            "top_k",
            "top_p",
            "num_beams",
            "streamer",
            "repetition_penalty",
            "min_new_tokens",
        ):
            if name in kwargs:
                forward_params[name] = kwargs.pop(name)
        if kwargs:
            raise ValueError(f"face-understanding: unknown argument(s) {sorted(kwargs)}")
        return preprocess_params, forward_params, {}

    def preprocess(self, inputs, question: str | None = None):
        if isinstance(inputs, dict):
            if "image" not in inputs:
                raise ValueError(f"inputs: a dict input needs an 'image' key, got keys {sorted(inputs)}")
            image, question = inputs["image"], inputs.get("question", question)
        else:
            image = inputs
        if question is not None and not isinstance(question, str):
            raise ValueError(f"question: expected a string, got {type(question).__name__}")
        is_caption = question is None or not question.strip()
        model_inputs = self.processor(images=image, text=None if is_caption else question)
        model_inputs["is_caption"] = torch.tensor([is_caption])
        return model_inputs

    def _forward(self, model_inputs, **generate_kwargs):
        is_caption = model_inputs.pop("is_caption")
        prompt_length = model_inputs["input_ids"].shape[1]
        generate_kwargs.setdefault("max_new_tokens", 64)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("suppress_tokens", self.model.config.non_text_token_ids())
        if "generation_config" not in generate_kwargs and getattr(self, "generation_config", None) is not None:
            generate_kwargs["generation_config"] = self.generation_config
        sequences = self.model.generate(**model_inputs, **generate_kwargs)
        return {"sequences": sequences[:, prompt_length:], "is_caption": is_caption}

    def postprocess(self, model_outputs):
        text = self.processor.batch_decode(model_outputs["sequences"], skip_special_tokens=True)[0].strip()
        return {"caption" if bool(model_outputs["is_caption"].reshape(-1)[0]) else "answer": text}

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        model_card: ModelCard | str | None = None,
        eval_results: dict | list[dict] | None = None,
        repo_id: str | None = None,
        **kwargs,
    ) -> None:
        """Model, remote code with `config.custom_pipelines` (so `pipeline(model=folder, trust_remote_code=True)` runs
        without the package; transformers then asks for `trust_remote_code=True` even where the package is imported),
        the processor (transformers' Pipeline does not save a ProcessorMixin) and the model card as README.md."""
        super().save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)
        try:  # the card generator lives in the installed package; remote code without it saves no card
            from unif2ace_hf.hub.model_card import write_model_card
        except ImportError:
            return
        write_model_card(save_directory, model_card, eval_results, repo_id=repo_id)

    def push_to_hub(
        self, repo_id: str, commit_message: str = "Upload face-understanding pipeline", **kwargs
    ) -> CommitInfo:
        """Save as `save_pretrained` does (README.md is our card, not transformers' generic one) and upload."""
        try:
            from unif2ace_hf.hub.push import push_saved_folder
        except ImportError:  # remote code without the package: transformers' own upload
            return super().push_to_hub(repo_id, commit_message=commit_message, **kwargs)
        card_kwargs = {k: kwargs.pop(k) for k in ("model_card", "eval_results") if k in kwargs}
        return push_saved_folder(
            lambda folder: self.save_pretrained(folder, repo_id=repo_id, **card_kwargs),
            repo_id,
            commit_message=commit_message,
            **kwargs,
        )


__all__ = ["FaceUnderstandingPipeline"]
