"""Text-to-face generation with UniF²ace as a diffusers pipeline: masked discrete diffusion over image codes.

Speed, by construction:
* the text prefix `[t2i][sot] text [eot]` never attends to image tokens (omni-attention), and the sequence-MoE routing
  reads only the text, so its keys/values are computed once per call and every step runs only `[soi] codes [eoi]`;
* cond and uncond rows run in one batched forward;
* logits are computed only at image positions and only over the codebook columns;
* the sampling step is the scheduler's inverse-CDF + `kthvalue` rule.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from huggingface_hub import CommitInfo, ModelCard
from PIL import Image
from transformers import DynamicCache

from ..hub.download import HUB_DOWNLOAD_KWARGS, resolve_pretrained_folder
from ..hub.model_card import write_model_card
from ..hub.push import push_saved_folder
from ..modeling import UniF2aceForConditionalGeneration
from ..processing_unif2ace import UniF2aceProcessor, load_image
from .scheduling_unif2ace import UniF2aceMaskGITScheduler

SCHEDULER_SUBFOLDER = "scheduler"
OUTPUT_TYPES = ("pil", "np", "pt", "codes")


@dataclass
class UniF2acePipelineOutput(BaseOutput):
    """
    images (`list[PIL.Image.Image]`, `np.ndarray`, or `torch.Tensor`): generated faces (`output_type`), or the
        `(B, h*w)` codes when `output_type="codes"`.
    """

    images: list[Image.Image] | np.ndarray | torch.Tensor


class UniF2acePipeline(DiffusionPipeline):
    r"""
    Text-to-face generation and attribute editing with UniF²ace.

    One checkpoint folder serves this pipeline, `AutoModel` and `pipeline("face-understanding")`: the model weights
    (with the image tokenizer inside), the processor files, and the scheduler config in `scheduler/`.

    Guidance follows diffusers: `uncond + guidance_scale * (cond - uncond)`; Show-o's `guidance_scale = w` is ours
    `w + 1`. `guidance_scale = 1` disables guidance (one forward per step).

    Args:
        model ([`UniF2aceForConditionalGeneration`]): the transformer, holding the VQ image tokenizer as `vq_model`.
        processor ([`UniF2aceProcessor`]): builds the t2i prompts and preprocesses edit images.
        scheduler ([`UniF2aceMaskGITScheduler`]): the MaskGIT sampling rule.
    """

    model_cpu_offload_seq = "model"
    _callback_tensor_inputs = ["codes", "logits"]

    def __init__(
        self, model: UniF2aceForConditionalGeneration, processor: UniF2aceProcessor, scheduler: UniF2aceMaskGITScheduler
    ):
        super().__init__()
        if getattr(model, "vq_model", None) is None:
            raise ValueError(
                "model: this checkpoint has no image tokenizer (config.vq_config is None); it cannot generate images"
            )
        self.register_modules(model=model, processor=processor, scheduler=scheduler)

    # ------------------------------------------------------------------ loading and saving (one folder)
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, torch_dtype: torch.dtype | None = None, **kwargs
    ) -> UniF2acePipeline:
        """Load from a local folder or a Hub repo id.

        A repo id is downloaded with `snapshot_download` (kwargs `revision`, `token`, `cache_dir`,
        `local_files_only`, `force_download`, `proxies`) and every downloaded file is checked against the hash the
        Hub announced before anything is loaded. Other kwargs go to the model's `from_pretrained`.
        """
        hub_kwargs = {k: kwargs.pop(k) for k in HUB_DOWNLOAD_KWARGS if k in kwargs}
        path = resolve_pretrained_folder(pretrained_model_name_or_path, "pretrained_model_name_or_path", hub_kwargs)
        model = UniF2aceForConditionalGeneration.from_pretrained(path, dtype=torch_dtype, **kwargs).eval()
        processor = UniF2aceProcessor.from_pretrained(path)
        if (path / SCHEDULER_SUBFOLDER / "scheduler_config.json").is_file():
            scheduler = UniF2aceMaskGITScheduler.from_pretrained(path, subfolder=SCHEDULER_SUBFOLDER)
        else:
            scheduler = UniF2aceMaskGITScheduler(
                mask_token_id=model.config.codebook_size, codebook_size=model.config.codebook_size
            )
        pipe = cls(model=model, processor=processor, scheduler=scheduler)
        readme = path / "README.md"
        # Saved again by save_pretrained unless a new card is given, so re-saving never loses measured numbers.
        pipe.model_card = ModelCard.load(readme) if readme.is_file() else None
        return pipe

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        push_to_hub: bool = False,
        model_card: ModelCard | str | None = None,
        eval_results: dict | list[dict] | None = None,
        repo_id: str | None = None,
        **kwargs,
    ) -> None:
        """Write one folder that every loader reads: the model (with its remote code), the processor, `scheduler/`,
        and `README.md` (the model card: `model_card`, or one built from
        `unif2ace eval` results, or the card this pipeline was loaded with, or an unmeasured card).
        `push_to_hub=True` then uploads it to `repo_id` (default: the folder's name); kwargs go to `push_to_hub`."""
        save_directory = Path(save_directory)
        self.model.save_pretrained(save_directory)
        self.processor.save_pretrained(save_directory)
        self.scheduler.save_pretrained(save_directory / SCHEDULER_SUBFOLDER)
        card = write_model_card(
            save_directory, model_card, eval_results, previous=getattr(self, "model_card", None), repo_id=repo_id
        )
        if push_to_hub:
            self.push_to_hub(repo_id or save_directory.name, model_card=card, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str = "Upload UniF2acePipeline",
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        revision: str | None = None,
        model_card: ModelCard | str | None = None,
        eval_results: dict | list[dict] | None = None,
    ) -> CommitInfo:
        """Upload the `save_pretrained` folder (our model card as README.md) to `repo_id` as one commit; returns
        the commit (`.oid` is the revision to load this exact upload again)."""
        return push_saved_folder(
            lambda folder: self.save_pretrained(
                folder, model_card=model_card, eval_results=eval_results, repo_id=repo_id
            ),
            repo_id,
            commit_message=commit_message,
            private=private,
            token=token,
            create_pr=create_pr,
            revision=revision,
        )

    # ------------------------------------------------------------------ helpers
    @property
    def grid(self) -> tuple[int, int]:
        vq = self.model.vq_model.config
        side = vq.image_size // vq.downsample_factor
        return side, side

    @torch.no_grad()
    def encode_image(self, image) -> torch.LongTensor:
        """Codes `(B, h*w)` of one image or a list of images, as the pipeline uses them for editing."""
        images = image if isinstance(image, (list, tuple)) else [image]
        pixels = self.processor.image_processor(list(images))["pixel_values"]
        vq = self.model.vq_model
        return vq.encode(pixels.to(device=self._execution_device, dtype=vq.dtype))

    def _mask_to_grid(self, mask_image, images: list, batch_size: int) -> torch.Tensor:
        """White = regenerate. The mask must have its image's size; it goes through the image's own resize and crop,
        then a code cell is regenerated when more than half of its pixels are white."""
        masks = mask_image if isinstance(mask_image, (list, tuple)) else [mask_image] * batch_size
        if len(masks) != batch_size:
            raise ValueError(f"mask_image: got {len(masks)} masks for {batch_size} images")
        prepared = []
        for index, (mask, image) in enumerate(zip(masks, images)):
            name = f"mask_image[{index}]"
            if isinstance(mask, torch.Tensor):
                mask = mask.detach().cpu().float().numpy()
            if isinstance(mask, np.ndarray):
                if mask.ndim != 2:
                    raise ValueError(f"{name}: expected a 2-D (H, W) mask, got shape {mask.shape}")
                mask = Image.fromarray(mask if mask.dtype == np.uint8 else (np.clip(mask, 0, 1) * 255).astype(np.uint8))
            if not isinstance(mask, Image.Image):
                raise ValueError(f"{name}: expected a PIL image, a numpy array or a tensor, got {type(mask).__name__}")
            if mask.mode not in ("L", "1", "RGB", "RGBA", "LA"):
                raise ValueError(f"{name}: mode {mask.mode!r} is not a mask; use 'L' (white = regenerate)")
            image_size = load_image(image, f"image[{index}]").size
            if mask.size != image_size:
                raise ValueError(f"{name}: size {mask.size} does not match its image's size {image_size}")
            prepared.append(mask.convert("L").convert("RGB"))
        pixels = self.processor.image_processor(prepared)["pixel_values"][:, 0]  # (B, H, W) in [-1, 1]
        white = (pixels + 1) / 2
        height, width = self.grid
        batch, size_h, size_w = white.shape
        cells = white.reshape(batch, height, size_h // height, width, size_w // width).mean(dim=(2, 4))
        return (cells > 0.5).reshape(batch, -1)

    def check_inputs(
        self,
        prompt,
        num_inference_steps,
        guidance_scale,
        num_images_per_prompt,
        generator,
        height,
        width,
        image,
        mask_image,
        output_type,
    ):
        if isinstance(prompt, str):
            prompt = [prompt]
        if not isinstance(prompt, (list, tuple)) or not prompt:
            raise ValueError("prompt: expected a string or a non-empty list of strings")
        for index, text in enumerate(prompt):
            if not isinstance(text, str):
                raise ValueError(f"prompt[{index}]: expected a string, got {type(text).__name__}")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps: must be an integer >= 1, got {num_inference_steps!r}")
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale: must be a finite number >= 0, got {guidance_scale!r}")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt: must be an integer >= 1, got {num_images_per_prompt!r}")
        total = len(prompt) * num_images_per_prompt
        if isinstance(generator, (list, tuple)) and len(generator) != total:
            raise ValueError(f"generator: got a list of {len(generator)} generators for {total} images")
        size = self.model.vq_model.config.image_size
        for name, value in (("height", height), ("width", width)):
            if value is not None and value != size:
                raise ValueError(
                    f"{name}: this model generates {size}x{size} images (its code grid is {self.grid}), got {value}"
                )
        if (image is None) != (mask_image is None):
            raise ValueError("image and mask_image: editing needs both (white in mask_image = regenerate)")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type: {output_type!r} is not one of {OUTPUT_TYPES}")
        return list(prompt)

    def _codebook_logits(self, chunk_ids, attention_mask, cache, use_cache: bool, num_tokens: int) -> torch.Tensor:
        """Run the model on `chunk_ids` and return logits `(rows, N, C)` at the image positions over codes only."""
        output = self.model.model(input_ids=chunk_ids, attention_mask=attention_mask, cache=cache, use_cache=use_cache)
        hidden = output.last_hidden_state[:, -(num_tokens + 1) : -1]
        return self.model.codebook_logits(hidden)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 12,
        guidance_scale: float = 3.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        return_dict: bool = True,
        image=None,
        mask_image=None,
        height: int | None = None,
        width: int | None = None,
        temperature: float | None = None,
        use_prefix_cache: bool = True,
    ) -> UniF2acePipelineOutput | tuple:
        r"""
        Generate faces from detailed prompts, or edit the masked part of a face.

        Args:
            prompt (`str` or `list[str]`): the description(s).
            negative_prompt (`str` or `list[str]`, *optional*): the unconditional prompt(s) for guidance (default "").
            num_inference_steps (`int`, defaults to 12): MaskGIT decoding steps.
            guidance_scale (`float`, defaults to 3.0): classifier-free guidance, diffusers convention (1 = off).
            num_images_per_prompt (`int`, defaults to 1): images per prompt.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): one for the batch, or one per image
                (then each image equals a single call with its generator).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` (B, H, W, 3) in [0, 1], `"pt"` (B, 3, H, W) in
                [0, 1], or `"codes"` (B, h*w).
            callback_on_step_end (`Callable`, *optional*): `fn(pipe, step, timestep, callback_kwargs) -> dict`; may
                return a new `"codes"` tensor.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): which of `codes`, `logits` to pass.
            return_dict (`bool`, defaults to True): return a [`UniF2acePipelineOutput`] instead of a tuple.
            image, mask_image (*optional*): editing. Positions whose code cell is mostly white in `mask_image` are
                regenerated; all others keep the image's own codes exactly.
            height, width (`int`, *optional*): must equal the model's image size if given.
            temperature (`float`, *optional*): starting temperature of the re-masking noise (scheduler default).
            use_prefix_cache (`bool`, defaults to True): compute the text prefix once (exact); False recomputes the
                whole sequence each step, as Show-o does (for checks and benchmarks).
        """
        prompts = self.check_inputs(
            prompt,
            num_inference_steps,
            guidance_scale,
            num_images_per_prompt,
            generator,
            height,
            width,
            image,
            mask_image,
            output_type,
        )
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        batch_size = len(prompts)
        device = self._execution_device
        config = self.model.config
        num_tokens = self.grid[0] * self.grid[1]
        if self.processor.num_image_tokens != num_tokens:
            raise ValueError(
                f"processor: num_image_tokens={self.processor.num_image_tokens} but the image tokenizer makes {num_tokens} codes"
            )
        mask_id = self.scheduler.config.mask_token_id

        codes = torch.full((batch_size, num_tokens), mask_id, dtype=torch.long, device=device)
        starting_ratio = 1.0
        if image is not None:
            images = image if isinstance(image, (list, tuple)) else [image] * batch_size
            if len(images) != batch_size:
                raise ValueError(f"image: got {len(images)} images for {batch_size} outputs")
            known = self.encode_image(images)
            regenerate = self._mask_to_grid(mask_image, images, batch_size).to(device)
            codes = torch.where(regenerate, torch.full_like(known, mask_id), known)
            starting_ratio = regenerate.float().mean(dim=1).clamp(min=1.0 / num_tokens)

        do_guidance = guidance_scale != 1.0
        if negative_prompt is None:
            negatives = [""] * batch_size
        else:
            negatives = (
                [negative_prompt] * batch_size
                if isinstance(negative_prompt, str)
                else [n for n in negative_prompt for _ in range(num_images_per_prompt)]
            )
            if len(negatives) != batch_size:
                raise ValueError(
                    f"negative_prompt: got {len(negatives) // num_images_per_prompt} for {len(prompts) // num_images_per_prompt} prompts"
                )
        texts = prompts + negatives if do_guidance else prompts
        encoded = self.processor.build_t2i_inputs(texts)
        input_ids = encoded["input_ids"].to(device)
        attention_mask = encoded["attention_mask"].to(device)
        prefix_length = input_ids.shape[1] - num_tokens - 2  # the text part, before [soi]
        rows = input_ids.shape[0]

        cache = None
        if use_prefix_cache:
            cache = DynamicCache(config=config)
            self.model.model(
                input_ids=input_ids[:, :prefix_length],
                attention_mask=attention_mask[:, :prefix_length],
                cache=cache,
                use_cache=True,
            )

        self.scheduler.set_timesteps(num_inference_steps, temperature=temperature)
        tensor_inputs = callback_on_step_end_tensor_inputs or ["codes"]
        offset = config.image_token_offset
        with self.progress_bar(total=num_inference_steps) as progress:
            for step_index, timestep in enumerate(self.scheduler.timesteps):
                image_ids = torch.where(codes == mask_id, torch.full_like(codes, config.mask_token_id), codes + offset)
                image_ids = image_ids.repeat(rows // batch_size, 1)
                if use_prefix_cache:
                    extra = cache.get_seq_length() - prefix_length
                    if extra > 0:
                        cache.crop(-extra)  # drop the previous step's image chunk, keep the text prefix
                    chunk = torch.cat(
                        [input_ids[:, prefix_length : prefix_length + 1], image_ids, input_ids[:, -1:]], dim=1
                    )
                    logits = self._codebook_logits(chunk, attention_mask, cache, True, num_tokens)
                else:
                    full = torch.cat([input_ids[:, : prefix_length + 1], image_ids, input_ids[:, -1:]], dim=1)
                    logits = self._codebook_logits(full, attention_mask, None, False, num_tokens)
                if do_guidance:
                    cond, uncond = logits[:batch_size], logits[batch_size:]
                    logits = uncond + guidance_scale * (cond - uncond)
                codes = self.scheduler.step(
                    logits, timestep, codes, generator=generator, starting_mask_ratio=starting_ratio
                ).prev_sample
                if callback_on_step_end is not None:
                    local = {"codes": codes, "logits": logits}
                    returned = callback_on_step_end(self, step_index, timestep, {k: local[k] for k in tensor_inputs})
                    codes = (returned or {}).get("codes", codes)
                progress.update()

        if output_type == "codes":
            images = codes
        else:
            vq = self.model.vq_model
            pixels = vq.decode(codes.clamp(0, config.codebook_size - 1)).float()
            pixels = ((pixels + 1) / 2).clamp(0, 1)
            if output_type == "pt":
                images = pixels
            else:
                array = pixels.permute(0, 2, 3, 1).cpu().numpy()
                images = (
                    array
                    if output_type == "np"
                    else [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]
                )
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return UniF2acePipelineOutput(images=images)


__all__ = ["UniF2acePipeline", "UniF2acePipelineOutput"]
