"""Inputs for UniF²ace: any image people have -> pixels in [-1, 1], and prompts -> Show-o-layout token sequences.

The processor cannot turn pixels into image codes (that needs the model's VQ tokenizer), so understanding prompts
carry `<|mask|>` placeholders in the image block plus `pixel_values`; the model fills the placeholders with the codes
of the image. Generation prompts carry `<|mask|>` slots that the diffusion sampler fills.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling

MAX_IMAGE_PIXELS = 89_478_485
"""Images with more pixels are refused: files from their header, before any pixel is decoded (decompression
bombs). Pillow's own warning threshold (~9459², so any 8192×8192 image passes); Pillow itself refuses files over
twice this when opening them."""

DEFAULT_MMU_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: \n{{ message['content'] }} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
"""Show-o's "phi1.5" conversation: `USER: \\n{question} ASSISTANT:`."""

DEFAULT_CAPTION_PROMPT = "Describe this face in detail."
PROCESSOR_FILES = ("tokenizer.json", "processor_config.json")
"""What a saved processor folder must hold (the tokenizer, and the image processor + prompt settings)."""


def load_image(image, name: str = "image", background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any image input -> an RGB PIL image, upright (EXIF orientation applied).

    Accepts a PIL image, a file path, bytes, a numpy array or torch tensor (HWC or CHW; uint8, or float in [0, 1]).
    Alpha is composited on `background`; palette, greyscale, CMYK and 16-bit images are converted.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{name}: no such image file {str(image)!r}")
        return _to_rgb(_decode(path, name, f"cannot read image file {str(path)!r}"), name, background)
    if isinstance(image, (bytes, bytearray)):
        return _to_rgb(_decode(io.BytesIO(image), name, "cannot decode image bytes"), name, background)
    if isinstance(image, Image.Image):  # may be lazily opened: its pixels are decoded here
        return _to_rgb(_decode_opened(image, name, "cannot decode the image"), name, background)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.float().numpy() if image.dtype in (torch.bfloat16, torch.float16) else image.numpy()
    if isinstance(image, np.ndarray):
        return _to_rgb(_array_to_pil(image, name), name, background)
    raise ValueError(
        f"{name}: expected a PIL image, a file path, bytes, a numpy array or a torch tensor, got {type(image).__name__}"
    )


def _check_pixel_count(width: int, height: int, name: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{name}: {width}x{height} is larger than {MAX_IMAGE_PIXELS} pixels (a decompression bomb?); refused"
        )


def _decode(source, name: str, what: str) -> Image.Image:
    """Open, check the size from the header (a decompression bomb is refused before its pixels are decoded), then
    decode. Any decoder failure on untrusted bytes becomes a ValueError naming the argument."""
    try:
        with Image.open(source) as opened:
            return _decode_opened(opened, name, what)
    except Image.UnidentifiedImageError:
        raise ValueError(f"{name}: {what}: not an image format Pillow can read") from None
    except Exception as error:  # noqa: BLE001 - header parsers raise ValueError, OSError, SyntaxError, struct.error
        _raise_named(error, name, what)


def _decode_opened(opened: Image.Image, name: str, what: str) -> Image.Image:
    try:
        _check_pixel_count(opened.width, opened.height, name)
        opened.load()
        return ImageOps.exif_transpose(opened)
    except Exception as error:  # noqa: BLE001 - decoders raise OSError, SyntaxError, EOFError, struct.error, ...
        _raise_named(error, name, what)


def _raise_named(error: Exception, name: str, what: str) -> NoReturn:
    """Re-raise a decoding failure as a ValueError that starts with the argument's name (ours already does)."""
    if isinstance(error, ValueError) and str(error).startswith(f"{name}: "):
        raise error
    if isinstance(error, Image.DecompressionBombError):
        raise ValueError(f"{name}: {what}: {error}; refused") from None
    raise ValueError(f"{name}: {what}: {error or type(error).__name__}") from error


def _array_to_pil(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"{name}: expected an array of shape (H, W), (H, W, 3|4) or (3|4, H, W), got {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: the image is empty (shape {array.shape})")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"{name}: unsupported array dtype {array.dtype} (use uint8, another integer type or float)")
    _check_pixel_count(array.shape[1], array.shape[0], name)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: the image contains NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"{name}: float images must be in [0, 1], got [{array.min():.3g}, {array.max():.3g}]")
        array = (array * 255).round().astype(np.uint8)
    elif array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise ValueError(f"{name}: integer images must be in [0, 255], got [{array.min()}, {array.max()}]")
        array = array.astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def _to_rgb(image: Image.Image, name: str, background: tuple[int, int, int]) -> Image.Image:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name}: the image is empty ({image.width}x{image.height})")
    _check_pixel_count(image.width, image.height, name)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode == "La":  # premultiplied; Pillow converts it only to "LA"
        image = image.convert("LA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.int64)
        top = max(int(array.max()), 1)
        image = Image.fromarray((array * 255 // (65535 if top > 255 else 255)).clip(0, 255).astype(np.uint8))
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: the image contains NaN or infinite values")
        image = Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))
    if image.mode in ("LA", "RGBA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(canvas, rgba)
    try:
        return image.convert("RGB")
    except ValueError as error:  # modes Pillow cannot convert, e.g. "La"
        raise ValueError(f"{name}: unsupported image mode {image.mode!r}: {error}") from error


class UniF2aceImageProcessor(PilBackend):
    """Resize the shorter side, centre-crop, normalise to [-1, 1] (Show-o's transform), for any input image."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    size = {"shortest_edge": 256}
    crop_size = {"height": 256, "width": 256}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_convert_rgb = True

    def preprocess(self, images, **kwargs) -> BatchFeature:
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if not items:
            raise ValueError("images: got an empty list")
        names = ["image"] if single else [f"images[{i}]" for i in range(len(items))]
        crop = kwargs.get("crop_size") or self.crop_size
        target = max(
            crop.get("height", 0), crop.get("width", 0), (kwargs.get("size") or self.size).get("shortest_edge", 0)
        )
        pil_images = [self._bounded(load_image(item, name), target) for item, name in zip(items, names)]
        kwargs.setdefault("return_tensors", "pt")
        return super().preprocess(pil_images, **kwargs)

    @staticmethod
    def _bounded(image: Image.Image, target: int) -> Image.Image:
        """Shrink huge images by an integer factor first, so resizing costs O(target²) rather than O(image)."""
        factor = min(image.size) // max(2 * target, 1)
        return image.reduce(factor) if factor >= 2 else image


class UniF2aceProcessor(ProcessorMixin):
    """Tokenizer + image processor: Show-o-layout prompts for understanding (mmu) and generation (t2i).

    mmu: `[pad]* [mmu][soi] <mask>×N [eoi][sot] USER: \\n{question} ASSISTANT:` (left padded; the `<mask>` slots
    are filled by the model from `pixel_values`).
    t2i: `[pad]* [t2i][sot] text [eot] [soi] <mask>×N [eoi]`, the text part left padded to `max_text_length`.
    """

    attributes = ["image_processor", "tokenizer"]
    image_processor_class = "AutoImageProcessor"
    tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        num_image_tokens: int = 256,
        image_token_offset: int | None = None,
        codebook_size: int | None = None,
        mask_token_id: int | None = None,
        max_text_length: int = 128,
        max_question_length: int = 128,
        caption_prompt: str = DEFAULT_CAPTION_PROMPT,
        **kwargs,
    ):
        self.num_image_tokens = num_image_tokens
        self.image_token_offset = image_token_offset
        self.codebook_size = codebook_size
        self.mask_token_id = mask_token_id
        self.max_text_length = max_text_length
        self.max_question_length = max_question_length
        self.caption_prompt = caption_prompt
        super().__init__(image_processor, tokenizer, chat_template=chat_template or DEFAULT_MMU_CHAT_TEMPLATE, **kwargs)

    # special-token ids come from the tokenizer, so the two can never disagree
    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer: has no special token {token}; add Show-o's special tokens first")
        return token_id

    @property
    def special_ids(self) -> dict[str, int]:
        return {name: self._token_id(f"<|{name}|>") for name in ("soi", "eoi", "t2i", "mmu")} | {
            "pad": self.tokenizer.pad_token_id,
            "sot": self.tokenizer.bos_token_id,
            "eot": self.tokenizer.eos_token_id,
        }

    def __call__(self, images=None, text=None, task: str = "mmu", return_tensors: str = "pt", **kwargs) -> BatchFeature:
        """Build a left-padded batch.

        Args:
            images: one image or a list (mmu: one per row; t2i: ignored unless editing code fills slots itself).
            text: question(s) for mmu (None or "" asks for a caption), prompt(s) for t2i.
            task: `"mmu"` or `"t2i"`.
        """
        if task == "mmu":
            return self.build_mmu_inputs(images, text, **kwargs)
        if task == "t2i":
            return self.build_t2i_inputs(text)
        raise ValueError(f"task: {task!r} is not one of ('mmu', 't2i')")

    def _mask_id(self) -> int:
        if self.mask_token_id is None:
            raise ValueError("mask_token_id: the processor was built without the model's mask token id")
        return self.mask_token_id

    def build_mmu_inputs(self, images, questions=None, **image_kwargs) -> BatchFeature:
        if images is None:
            raise ValueError("images: understanding (task='mmu') needs an image per row")
        image_list = images if isinstance(images, (list, tuple)) else [images]
        if questions is None or isinstance(questions, str):
            questions = [questions] * len(image_list)
        if len(questions) != len(image_list):
            raise ValueError(f"text: got {len(questions)} questions for {len(image_list)} images")
        pixel_values = self.image_processor(images, **image_kwargs)["pixel_values"]
        ids = self.special_ids
        rows = []
        for index, question in enumerate(questions):
            if question is not None and not isinstance(question, str):
                raise ValueError(f"text[{index}]: expected a string question or None, got {type(question).__name__}")
            question = self.caption_prompt if question is None or not str(question).strip() else str(question)
            text_ids = self._chat_prompt_ids(question, index)
            rows.append(
                [ids["mmu"], ids["soi"], *[self._mask_id()] * self.num_image_tokens, ids["eoi"], ids["sot"], *text_ids]
            )
        batch = self._left_pad(rows, ids["pad"])
        batch["pixel_values"] = pixel_values
        return batch

    def build_mmu_training_inputs(
        self, image_codes: torch.Tensor, questions: list[str | None], answers: list[str], max_answer_length: int = 256
    ) -> BatchFeature:
        """Understanding rows for training: the inference prompt (codes in the image block instead of `<mask>`
        placeholders) followed by the answer and eos, with `labels` on the answer and eos only (-100 elsewhere,
        unshifted: position i is labelled with token i). Built from the same template as `build_mmu_inputs`, so
        training and inference prompts cannot drift apart. An answer longer than `max_answer_length` tokens keeps
        its first tokens, with a warning."""
        if image_codes.ndim != 2 or len(questions) != image_codes.shape[0] or len(answers) != image_codes.shape[0]:
            raise ValueError(
                f"image_codes: expected (B, N) codes with B questions and answers, got {tuple(image_codes.shape)}, "
                f"{len(questions)} questions, {len(answers)} answers"
            )
        # one segment per row: the packed layout's positions and segment ids then equal the defaults, so drop them
        conversations = [[(question, answer)] for question, answer in zip(questions, answers)]
        batch = self.build_packed_mmu_training_inputs(image_codes, conversations, max_answer_length)
        del batch["segment_ids"], batch["position_ids"]
        return batch

    def build_packed_mmu_training_inputs(
        self,
        image_codes: torch.Tensor,
        conversations: list[list[tuple[str | None, str]]],
        max_answer_length: int = 256,
    ) -> BatchFeature:
        """Understanding rows that share one image among several `(question, answer)` segments.

        Row `i` is the image prefix of `image_codes[i]` followed by one segment per pair of `conversations[i]`, each
        rendered exactly as `build_mmu_training_inputs` renders it. Besides `input_ids`, `attention_mask` and `labels`
        it returns `segment_ids` (0 on the prefix and padding, k on the k-th segment) and `position_ids` (every
        segment starts where the prefix ends), so that with `omni_attention.segment_visibility` each segment sees the
        image and itself only: the same losses as one row per pair, for one pass over the image tokens.
        """
        if image_codes.ndim != 2 or len(conversations) != image_codes.shape[0]:
            raise ValueError(
                f"image_codes: expected (B, N) codes with B conversations, got {tuple(image_codes.shape)} and "
                f"{len(conversations)} conversations"
            )
        rows, label_rows, segment_rows, position_rows = [], [], [], []
        for index, (codes, pairs) in enumerate(zip(image_codes, conversations)):
            if not pairs:
                raise ValueError(f"conversations[{index}]: needs at least one (question, answer) pair")
            prompt = self._mmu_image_prefix(codes)
            row, labels = list(prompt), [-100] * len(prompt)
            segments, positions = [0] * len(prompt), list(range(len(prompt)))
            for number, (question, answer) in enumerate(pairs, start=1):
                segment, segment_labels = self._mmu_training_segment(question, answer, index, max_answer_length)
                row += segment
                labels += segment_labels
                segments += [number] * len(segment)
                positions += range(len(prompt), len(prompt) + len(segment))
            rows.append(row)
            label_rows.append(labels)
            segment_rows.append(segments)
            position_rows.append(positions)
        batch = self._left_pad(rows, self.special_ids["pad"])
        length = batch["input_ids"].shape[1]
        for key, values in (("labels", label_rows), ("segment_ids", segment_rows), ("position_ids", position_rows)):
            tensor = torch.full((len(rows), length), -100 if key == "labels" else 0, dtype=torch.long)
            for i, row in enumerate(values):
                tensor[i, length - len(row) :] = torch.tensor(row)
            batch[key] = tensor
        return batch

    def _mmu_image_prefix(self, codes: torch.Tensor) -> list[int]:
        """`<|mmu|><|soi|> codes <|eoi|><|sot|>`: the part of an understanding row every question shares."""
        ids = self.special_ids
        return [ids["mmu"], ids["soi"], *(codes + self.image_token_offset).tolist(), ids["eoi"], ids["sot"]]

    def _mmu_training_segment(
        self, question: str | None, answer: str, index: int, max_answer_length: int
    ) -> tuple[list[int], list[int]]:
        """The chat-templated question, the answer and eos, with labels on the answer and eos only."""
        question = self.caption_prompt if question is None or not str(question).strip() else str(question)
        prompt = self._chat_prompt_ids(question, index)
        # the template renders `ASSISTANT: {answer}{eos}`; the generation prompt stops after `ASSISTANT:`
        answer_ids = self._user_text_ids(" " + str(answer).strip())
        if len(answer_ids) > max_answer_length:
            warnings.warn(
                f"answers[{index}]: {len(answer_ids)} tokens long; keeping the first {max_answer_length}",
                stacklevel=3,
            )
            answer_ids = answer_ids[:max_answer_length]
        target = [*answer_ids, self.special_ids["eot"]]
        return prompt + target, [-100] * len(prompt) + target

    def _chat_prompt_ids(self, question: str, index: int) -> list[int]:
        """Template ids around the question; an over-long question loses its end (with a warning), never the
        template, so the answer always follows `ASSISTANT:`."""
        marker = "\x00QUESTION\x00"
        rendered = self.apply_chat_template(
            [{"role": "user", "content": marker}], add_generation_prompt=True, tokenize=False
        )
        prefix, suffix = rendered.split(marker)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
        question_ids = self._user_text_ids(question)
        if len(question_ids) > self.max_question_length:
            warnings.warn(
                f"text[{index}]: the question is {len(question_ids)} tokens long; keeping its first "
                f"{self.max_question_length} (max_question_length)",
                stacklevel=3,
            )
            question_ids = question_ids[: self.max_question_length]
        return encode(prefix) + question_ids + encode(suffix)

    def _user_text_ids(self, text: str) -> list[int]:
        """Token ids of text a user wrote: special-token strings in it (`<|soi|>`, `<|endoftext|>`, ...) stay plain
        text, so a prompt cannot inject structure into the sequence."""
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def build_t2i_inputs(self, prompts, image_ids: torch.Tensor | None = None) -> BatchFeature:
        """Generation prompts; `image_ids` (B, N) pre-fills the slots (editing), else all slots are `<mask>`."""
        prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
        ids = self.special_ids
        rows = []
        for index, prompt in enumerate(prompts):
            if prompt is not None and not isinstance(prompt, str):
                raise ValueError(f"text[{index}]: expected a string prompt, got {type(prompt).__name__}")
            text_ids = self._user_text_ids(prompt or "")
            room = self.max_text_length - 3  # [t2i][sot] ... [eot]
            if len(text_ids) > room:
                warnings.warn(
                    f"text[{index}]: the prompt is {len(text_ids)} tokens long; keeping the first {room}", stacklevel=2
                )
                text_ids = text_ids[:room]
            text_part = [ids["t2i"], ids["sot"], *text_ids, ids["eot"]]
            text_part = [ids["pad"]] * (self.max_text_length - len(text_part)) + text_part
            slots = (
                [self._mask_id()] * self.num_image_tokens
                if image_ids is None
                else (image_ids[index] + self.image_token_offset).tolist()
            )
            rows.append(text_part + [ids["soi"], *slots, ids["eoi"]])
        return self._left_pad(rows, ids["pad"])

    @staticmethod
    def _left_pad(rows: list[list[int]], pad_id: int) -> BatchFeature:
        length = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, length - len(row) :] = torch.tensor(row)
            attention_mask[i, length - len(row) :] = 1
        # t2i rows pad their text part inside the row: those pads are padding too
        attention_mask &= (input_ids != pad_id).long()
        return BatchFeature({"input_ids": input_ids, "attention_mask": attention_mask})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, with a missing or damaged tokenizer / processor file named rather than reported as a
        failure to build some tokenizer backend."""
        folder = (
            Path(pretrained_model_name_or_path)
            if isinstance(pretrained_model_name_or_path, (str, os.PathLike))
            else None
        )
        if folder is not None and folder.is_dir():
            base = folder / kwargs["subfolder"] if kwargs.get("subfolder") else folder
            missing = [name for name in PROCESSOR_FILES if not (base / name).is_file()]
            if missing:
                raise OSError(
                    f"{pretrained_model_name_or_path}: the processor needs {', '.join(missing)}, which the folder "
                    "lacks; save the processor (processor.save_pretrained) into it again."
                )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{pretrained_model_name_or_path}: cannot load the processor; {' or '.join(PROCESSOR_FILES)} is "
                f"damaged ({type(error).__name__}: {error})"
            ) from error

    def batch_decode(self, *args, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs) -> str:
        return self.tokenizer.decode(*args, **kwargs)


__all__ = ["UniF2aceImageProcessor", "UniF2aceProcessor", "load_image"]
