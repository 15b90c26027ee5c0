"""UniF2acePipeline: reproducibility, batching, exact prefix caching, editing, save/load and bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_models import TINY_TEXTS, tiny_checkpoint
from unif2ace_hf import UniF2aceMaskGITScheduler, UniF2acePipeline

PROMPTS = TINY_TEXTS[:3]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    model, processor = tiny_checkpoint()
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=64, codebook_size=64)
    return UniF2acePipeline(model=model, processor=processor, scheduler=scheduler)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_seed_same_codes_and_all_output_types(pipe):
    a = pipe(PROMPTS[0], num_inference_steps=4, generator=generator(1), output_type="codes").images
    b = pipe(PROMPTS[0], num_inference_steps=4, generator=generator(1), output_type="codes").images
    c = pipe(PROMPTS[0], num_inference_steps=4, generator=generator(2), output_type="codes").images
    assert a.shape == (1, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < 64
    pil = pipe(PROMPTS[0], num_inference_steps=2, generator=generator(1)).images
    assert isinstance(pil[0], Image.Image) and pil[0].size == (16, 16)
    arr = pipe(PROMPTS[0], num_inference_steps=2, generator=generator(1), output_type="np").images
    assert arr.shape == (1, 16, 16, 3) and 0 <= arr.min() and arr.max() <= 1
    pt = pipe(PROMPTS[0], num_inference_steps=2, generator=generator(1), output_type="pt").images
    assert pt.shape == (1, 3, 16, 16)


def test_batch_with_generators_equals_single_calls(pipe):
    batch = pipe(PROMPTS, num_inference_steps=4, generator=[generator(i) for i in range(3)], output_type="codes").images
    for i, prompt in enumerate(PROMPTS):
        single = pipe(prompt, num_inference_steps=4, generator=generator(i), output_type="codes").images
        assert torch.equal(batch[i], single[0]), f"prompt {i}"


def test_prefix_cache_is_exact(pipe):
    kwargs = dict(num_inference_steps=5, guidance_scale=2.5, output_type="codes")
    cached = pipe(PROMPTS[:2], generator=[generator(3), generator(4)], **kwargs).images
    recomputed = pipe(PROMPTS[:2], generator=[generator(3), generator(4)], use_prefix_cache=False, **kwargs).images
    assert torch.equal(cached, recomputed)


def test_guidance_one_is_conditional_only(pipe):
    codes = pipe(
        PROMPTS[0], num_inference_steps=3, guidance_scale=1.0, generator=generator(0), output_type="codes"
    ).images
    assert codes.shape == (1, 64)


def test_editing_keeps_unmasked_codes(pipe):
    face = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    original = pipe.encode_image(face)
    mask = np.zeros((16, 16), np.uint8)
    mask[:8] = 255  # regenerate the top half
    edited = pipe(
        PROMPTS[1],
        image=face,
        mask_image=Image.fromarray(mask),
        num_inference_steps=4,
        generator=generator(0),
        output_type="codes",
    ).images
    grid = torch.zeros(8, 8, dtype=torch.bool)
    grid[:4] = True
    keep = ~grid.reshape(-1)
    assert torch.equal(edited[0, keep], original[0, keep])
    assert not torch.equal(edited[0, ~keep], original[0, ~keep])


def test_editing_a_non_square_image_crops_the_mask_like_the_image(pipe):
    face = Image.fromarray((np.random.default_rng(1).random((16, 24, 3)) * 255).astype(np.uint8))  # 24 wide
    mask = np.zeros((16, 24), np.uint8)
    mask[:, :4] = 255  # only the strip that the centre crop cuts away
    original = pipe.encode_image(face)
    edited = pipe(
        PROMPTS[0], image=face, mask_image=mask, num_inference_steps=2, generator=generator(0), output_type="codes"
    ).images
    assert torch.equal(edited, original)  # nothing inside the crop was masked


def test_loading_by_hub_id_from_the_local_cache(tmp_path, pipe):
    """A repo id resolves through huggingface_hub's cache layout (offline), like any Hub download."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-face" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    pipe.save_pretrained(snapshot)
    (cache / "models--someone--tiny-face" / "refs").mkdir(parents=True)
    (cache / "models--someone--tiny-face" / "refs" / "main").write_text(snapshot.name)
    loaded = UniF2acePipeline.from_pretrained("someone/tiny-face", cache_dir=str(cache))  # HF_HUB_OFFLINE=1 (conftest)
    a = pipe(PROMPTS[0], num_inference_steps=2, generator=generator(9), output_type="codes").images
    b = loaded(PROMPTS[0], num_inference_steps=2, generator=generator(9), output_type="codes").images
    assert torch.equal(a, b)


def test_save_and_load_round_trip(tmp_path, pipe):
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "scheduler" / "scheduler_config.json").is_file()
    loaded = UniF2acePipeline.from_pretrained(tmp_path)
    a = pipe(PROMPTS[0], num_inference_steps=3, generator=generator(5), output_type="codes").images
    b = loaded(PROMPTS[0], num_inference_steps=3, generator=generator(5), output_type="codes").images
    assert torch.equal(a, b)


def test_bad_input_names_the_argument(pipe):
    with pytest.raises(ValueError, match="prompt: expected a string or a non-empty list"):
        pipe([])
    with pytest.raises(ValueError, match="num_inference_steps: must be an integer >= 1"):
        pipe("x", num_inference_steps=0)
    with pytest.raises(ValueError, match="guidance_scale: must be a finite number >= 0"):
        pipe("x", guidance_scale=-1)
    with pytest.raises(ValueError, match=r"height: this model generates 16x16 images"):
        pipe("x", height=32)
    with pytest.raises(ValueError, match="generator: got a list of 2 generators for 1 images"):
        pipe("x", generator=[generator(0), generator(1)])
    with pytest.raises(ValueError, match="image and mask_image: editing needs both"):
        pipe("x", image=Image.new("RGB", (16, 16)))
    with pytest.raises(ValueError, match=r"mask_image\[0\]: mode 'CMYK' is not a mask"):
        pipe("x", image=Image.new("RGB", (16, 16)), mask_image=Image.new("CMYK", (16, 16)))
    with pytest.raises(ValueError, match=r"mask_image\[0\]: expected a 2-D"):
        pipe("x", image=Image.new("RGB", (16, 16)), mask_image=np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match=r"mask_image\[0\]: size \(8, 8\) does not match its image's size \(16, 16\)"):
        pipe("x", image=Image.new("RGB", (16, 16)), mask_image=Image.new("L", (8, 8)))
    with pytest.raises(ValueError, match="output_type"):
        pipe("x", output_type="latent")


def test_callback_negative_prompt_and_images_per_prompt(pipe):
    seen = []

    def on_step_end(pipeline, step, timestep, tensors):
        seen.append((step, int(timestep), tensors["codes"].shape))
        if step == 0:  # a callback may rewrite the codes: fix position 0 to code 7
            codes = tensors["codes"].clone()
            codes[:, 0] = 7
            return {"codes": codes}
        return {}

    out = pipe(
        PROMPTS[0],
        negative_prompt="blurry",
        num_images_per_prompt=2,
        num_inference_steps=3,
        generator=[generator(0), generator(1)],
        output_type="codes",
        callback_on_step_end=on_step_end,
    ).images
    assert out.shape == (2, 64) and (out[:, 0] == 7).all()
    assert [s for s, _, _ in seen] == [0, 1, 2] and seen[0][2] == (2, 64)
    plain = pipe(PROMPTS[0], num_inference_steps=3, generator=generator(0), output_type="codes").images
    negative = pipe(
        PROMPTS[0], negative_prompt="blurry", num_inference_steps=3, generator=generator(0), output_type="codes"
    ).images
    assert not torch.equal(plain, negative)  # the negative prompt is the unconditional branch
