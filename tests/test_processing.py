"""Image processor (every input kind and mode), text tokenizer and the mmu / t2i prompt builder."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

from unif2ace_hf.processing_unif2ace import UniF2aceImageProcessor, UniF2aceProcessor, load_image
from unif2ace_hf.tokenization_unif2ace import SHOWO_SPECIAL_TOKENS, train_byte_level_bpe

TEXTS = [
    "a young woman with wavy red hair, freckles and round glasses",
    "an old man with a grey beard and a bald head, smiling",
    "What shape are her eyebrows? arched",
    "Is the person wearing a hat? no",
] * 40


@pytest.fixture(scope="module")
def tokenizer():
    return train_byte_level_bpe(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def image_processor():
    return UniF2aceImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture()
def processor(tokenizer, image_processor):
    text_vocab = len(tokenizer)
    return UniF2aceProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=4,
        image_token_offset=text_vocab,
        codebook_size=16,
        mask_token_id=text_vocab + 16,
        max_text_length=24,
        max_question_length=40,
    )


def gradient(width=48, height=40) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)


def test_text_tokenizer_encodes_any_string_and_has_showo_specials(tokenizer):
    text = "Ünïcode, emoji 😀, control \x07 and tabs\t: never an unknown token"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and tokenizer.unk_token_id is None
    base = len(tokenizer) - len(SHOWO_SPECIAL_TOKENS)
    assert tokenizer.convert_tokens_to_ids(list(SHOWO_SPECIAL_TOKENS)) == list(range(base, base + 10))
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "CMYK", "I;16", "I", "F", "1"])
def test_every_pil_mode_becomes_rgb_in_range(image_processor, mode):
    rgb = Image.fromarray(gradient())
    image = (
        rgb.convert(mode)
        if mode not in ("I;16", "I", "F")
        else Image.fromarray(
            (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
            if mode == "I;16"
            else (np.asarray(rgb.convert("L"), dtype=np.int32))
            if mode == "I"
            else np.asarray(rgb.convert("L"), dtype=np.float32) / 255,
            mode=None,
        )
    )
    assert image.mode == mode or (mode == "I;16" and image.mode.startswith("I;16"))
    pixels = image_processor(image)["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1 and pixels.std() > 0.05


def test_alpha_is_composited_on_white():
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_image(transparent).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("LA", (8, 8), (0, 128))
    assert load_image(half).getpixel((0, 0))[0] in (127, 128)


def test_numpy_torch_paths_and_bytes_agree(tmp_path, image_processor):
    array = gradient()
    path = tmp_path / "face.png"
    Image.fromarray(array).save(path)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    inputs = [
        Image.fromarray(array),
        array,
        array.transpose(2, 0, 1),  # CHW
        torch.from_numpy(array).permute(2, 0, 1),  # CHW uint8 tensor
        torch.from_numpy(array).float() / 255,  # HWC float in [0, 1]
        str(path),
        path,
        buffer.getvalue(),
    ]
    outputs = image_processor(inputs)["pixel_values"]
    for i in range(1, len(inputs)):
        torch.testing.assert_close(outputs[i], outputs[0], atol=1 / 127.5, rtol=0, msg=f"input {i}")


def test_exif_orientation_is_honoured(tmp_path):
    array = gradient(48, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (40, 48)


def test_huge_images_are_reduced_before_resizing(image_processor):
    big = Image.new("RGB", (6000, 4000), (10, 200, 30))
    assert UniF2aceImageProcessor._bounded(big, 32).size[1] <= 4000 // 60
    pixels = image_processor(big)["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)


def test_bad_images_are_named(image_processor, tmp_path):
    with pytest.raises(ValueError, match=r"image: the image is empty"):
        image_processor(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"images\[1\]: expected a PIL image, a file path"):
        image_processor([gradient(), {"not": "an image"}])
    with pytest.raises(ValueError, match="no such image file"):
        image_processor(str(tmp_path / "missing.png"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read image file"):
        image_processor(str(tmp_path / "broken.png"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        image_processor(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\]"):
        image_processor(np.full((4, 4, 3), 3.0, np.float32))
    with pytest.raises(ValueError, match=r"images: got an empty list"):
        image_processor([])


def test_mmu_prompts_are_left_padded_with_image_slots(processor, tokenizer):
    batch = processor(images=[gradient(), gradient()], text=["What colour is her hair?", None])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    specials = processor.special_ids
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    for row in range(2):
        real = ids[row][mask[row].bool()].tolist()
        assert real[:2] == [specials["mmu"], specials["soi"]]
        assert real[2:6] == [processor.mask_token_id] * 4 and real[6:8] == [specials["eoi"], specials["sot"]]
        assert tokenizer.decode(real[8:]).startswith("USER: \n") and tokenizer.decode(real[8:]).endswith("ASSISTANT:")
    assert "Describe this face" in tokenizer.decode(ids[1][8:]) or "Describe this face" in tokenizer.decode(ids[1])
    assert mask[0, 0] == 0 or mask[1, 0] == 0  # the shorter row is padded on the left
    assert (ids[mask == 0] == specials["pad"]).all()


def test_t2i_prompts_have_a_fixed_text_part(processor):
    batch = processor(text=["a smiling woman with glasses", "an old man"], task="t2i")
    ids = batch["input_ids"]
    specials = processor.special_ids
    assert ids.shape == (2, 24 + 1 + 4 + 1)
    assert (ids[:, 24] == specials["soi"]).all() and (ids[:, -1] == specials["eoi"]).all()
    assert (ids[:, 25:29] == processor.mask_token_id).all()
    assert (ids[:, 23] == specials["eot"]).all()
    edit = processor.build_t2i_inputs(["x"], image_ids=torch.tensor([[0, 1, 2, 3]]))
    assert edit["input_ids"][0, 25:29].tolist() == [processor.image_token_offset + i for i in range(4)]


def test_over_long_text_is_truncated_with_a_warning(processor):
    with pytest.warns(UserWarning, match=r"text\[0\]: the question is \d+ tokens long"):
        processor(images=gradient(), text="eyebrows " * 60)
    with pytest.warns(UserWarning, match=r"text\[0\]: the prompt is \d+ tokens long"):
        batch = processor(text="freckles " * 60, task="t2i")
    assert batch["input_ids"].shape[1] == 24 + 6


def test_processor_save_and_load(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    loaded = UniF2aceProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded.image_processor, UniF2aceImageProcessor)
    assert (loaded.num_image_tokens, loaded.mask_token_id, loaded.max_text_length) == (4, processor.mask_token_id, 24)
    image = gradient()
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(loaded(images=image, text="hair?")[key], processor(images=image, text="hair?")[key])


def test_auto_classes_resolve_the_processor(tmp_path, processor):
    from tiny_models import tiny_config

    processor.save_pretrained(tmp_path)
    tiny_config(moe=False).save_pretrained(tmp_path)
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), UniF2aceProcessor)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), UniF2aceImageProcessor)


def test_train_text_tokenizer_command_on_a_face_dataset(tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from unif2ace_hf.cli import main as cli

    rows = {
        "id": [f"f{i}" for i in range(40)],
        "caption": [TEXTS[i % 2] for i in range(40)],
        "qa": [[{"question": "What shape are her eyebrows?", "answer": "arched"}] for _ in range(40)],
    }
    (tmp_path / "data").mkdir()
    Dataset.from_dict(rows).to_parquet(str(tmp_path / "data" / "train.parquet"))
    assert (
        cli(
            [
                "train-text-tokenizer",
                "--data",
                str(tmp_path / "data"),
                "--output-dir",
                str(tmp_path / "tok"),
                "--vocab-size",
                "400",
            ]
        )
        == 0
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tokenizer.convert_tokens_to_ids("<|mmu|>") == len(tokenizer) - 4
    assert (
        tokenizer.decode(tokenizer("arched eyebrows ✓", add_special_tokens=False)["input_ids"]) == "arched eyebrows ✓"
    )
    # frequent face words become single tokens
    assert len(tokenizer("eyebrows", add_special_tokens=False)["input_ids"]) <= 2


def test_the_shipped_text_tokenizer():
    from transformers import AutoTokenizer

    from unif2ace_hf import DEFAULT_TEXT_TOKENIZER

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_TEXT_TOKENIZER)
    text_vocab = len(tokenizer) - len(SHOWO_SPECIAL_TOKENS)
    assert tokenizer.convert_tokens_to_ids(list(SHOWO_SPECIAL_TOKENS)) == list(range(text_vocab, text_vocab + 10))
    caption = "A portrait of a young adult with arched eyebrows, freckles and round glasses."
    ids = tokenizer(caption, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == caption and len(ids) < len(caption) / 3  # face words are whole tokens
    assert tokenizer.decode(tokenizer("Ω ünseen ✓", add_special_tokens=False)["input_ids"]) == "Ω ünseen ✓"
