"""The image tokenizer: shapes, LFQ bit order, save/load, bad input, and its place inside UniF2ace checkpoints."""

import json
import os
from pathlib import Path

import pytest
import torch

from tiny_models import tiny_config
from unif2ace_hf import (
    DEFAULT_VQ_MODEL,
    UniF2aceConfig,
    UniF2aceForConditionalGeneration,
    UniF2aceVQConfig,
    UniF2aceVQModel,
)
from unif2ace_hf.modeling.tokenizer_losses import lfq_entropy_terms


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine an oversubscribed second thread slows small convolutions ~10x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


MICRO = dict(
    image_size=32,
    base_channels=32,
    encoder_channel_multipliers=[1, 1, 2],
    encoder_num_res_blocks=[1, 1],
    decoder_channel_multipliers=[1, 1, 2],
    decoder_num_res_blocks=[1, 1, 1],
    codebook_dim=6,
)


def micro_config(**overrides) -> UniF2aceVQConfig:
    return UniF2aceVQConfig(**{**MICRO, "encoder_num_res_blocks": [1, 1, 1], "attn_resolutions": [16], **overrides})


def images(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size) * 2 - 1


def test_encode_decode_shapes_and_range():
    model = UniF2aceVQModel(micro_config()).eval()
    assert model.config.codebook_size == 2**6 and model.config.downsample_factor == 4
    with torch.no_grad():
        codes = model.encode(images())
        assert codes.dtype == torch.long and codes.shape == (2, 64)
        assert 0 <= codes.min() and codes.max() < 64
        pixels = model.decode(codes)
        assert pixels.shape == (2, 3, 32, 32) and pixels.min() >= -1 and pixels.max() <= 1
        # Non-square grids need `shape`; a 48x32 image gives 12x8 codes.
        rect = model.encode(torch.rand(1, 3, 48, 32) * 2 - 1)
        assert rect.shape == (1, 96) and model.decode(rect, shape=(12, 8)).shape == (1, 3, 48, 32)


def test_attention_blocks_follow_attn_resolutions():
    model = UniF2aceVQModel(micro_config())
    names = set(model.state_dict())
    assert "encoder.down.1.attn.0.q.weight" in names  # level 1 of a 32px encoder is 16px
    assert not any(name.startswith("encoder.down.0.attn") for name in names)
    assert "decoder.up.1.attn.0.proj_out.weight" in names


def test_code_index_and_bits_round_trip_msb_first():
    model = UniF2aceVQModel(micro_config())
    lfq = model.quantize
    codes = torch.arange(64)
    bits = lfq.codes_to_bits(codes)
    assert bits.shape == (64, 6)
    assert bits[1].tolist() == [0, 0, 0, 0, 0, 1] and bits[32].tolist() == [1, 0, 0, 0, 0, 0]  # MSB first
    assert torch.equal(lfq.bits_to_codes(bits), codes)
    assert torch.equal(lfq.embedding, bits.float() * 2 - 1)
    assert lfq.power_vals.tolist() == [32, 16, 8, 4, 2, 1]
    # A latent's sign pattern is its code, and decoding a code feeds exactly its ±1 vector.
    latents = torch.randn(3, 6, 2, 2)
    _, from_latents = lfq(latents)
    expected = ((latents > 0).long() * lfq.power_vals.view(1, 6, 1, 1)).sum(1)
    assert torch.equal(from_latents, expected)
    assert torch.equal(lfq.codes_to_latents(from_latents.flatten(1), 2, 2), torch.where(latents > 0, 1.0, -1.0))


def test_straight_through_gradient_reaches_the_encoder():
    model = UniF2aceVQModel(micro_config())
    output = model(images())
    output.reconstruction.mean().backward()
    assert model.encoder.conv_in.weight.grad is not None and model.encoder.conv_in.weight.grad.abs().sum() > 0


def test_entropy_terms_match_a_direct_computation():
    latents = torch.randn(2, 4, 3, 3)
    sample, codebook = lfq_entropy_terms(latents)
    z = latents.permute(0, 2, 3, 1).reshape(-1, 4)
    codes = torch.tensor([[1.0 if (c >> (3 - k)) & 1 else -1.0 for k in range(4)] for c in range(16)])
    probs = torch.softmax(-((z[:, None, :] - codes[None]) ** 2).sum(-1), dim=-1)
    direct_sample = -(probs * probs.log()).sum(-1).mean() / 4
    mean = probs.mean(0)
    direct_codebook = -(mean * mean.log()).sum() / 4
    torch.testing.assert_close(sample, direct_sample, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(codebook, direct_codebook, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bits", [1, 7, 10])
def test_codebook_entropy_is_exact_for_odd_and_even_bit_counts(bits):
    """The batch-mean code distribution is built from two halves of the bits; check it against all codes at once."""
    latents = 0.7 * torch.randn(3, bits, 4, 4)
    _, codebook = lfq_entropy_terms(latents)
    z = latents.permute(0, 2, 3, 1).reshape(-1, bits).double()
    codes = torch.tensor([[1.0 if (c >> (bits - 1 - k)) & 1 else -1.0 for k in range(bits)] for c in range(2**bits)])
    probs = torch.softmax(-((z[:, None, :] - codes[None].double()) ** 2).sum(-1), dim=-1)
    mean = probs.mean(0)
    torch.testing.assert_close(codebook.double(), -(mean * mean.log()).sum() / bits, rtol=1e-4, atol=1e-6)


def test_save_and_load_is_exact(tmp_path):
    model = UniF2aceVQModel(micro_config()).eval()
    model.save_pretrained(tmp_path / "vq")
    config = json.loads((tmp_path / "vq" / "config.json").read_text())
    assert (
        config["model_type"] == "unif2ace_vq" and config["auto_map"]["AutoModel"] == "image_tokenizer.UniF2aceVQModel"
    )
    loaded = UniF2aceVQModel.from_pretrained(tmp_path / "vq").eval()
    x = images()
    with torch.no_grad():
        codes = model.encode(x)
        assert torch.equal(loaded.encode(x), codes)
        assert torch.equal(loaded.decode(codes), model.decode(codes))
    from transformers import AutoModel

    assert type(AutoModel.from_pretrained(tmp_path / "vq")) is UniF2aceVQModel


def test_upsampling_without_conv_drops_only_those_weights(tmp_path):
    with_conv = UniF2aceVQModel(micro_config())
    without = UniF2aceVQModel(micro_config(upsample_with_conv=False)).eval()
    dropped = set(with_conv.state_dict()) - set(without.state_dict())
    assert dropped == {f"decoder.up.{level}.upsample.conv.{name}" for level in (1, 2) for name in ("weight", "bias")}
    assert set(without.state_dict()) < set(with_conv.state_dict())
    hidden = torch.randn(1, 4, 3, 5)
    upsampled = without.decoder.up[1].upsample(hidden)
    assert torch.equal(upsampled, torch.nn.functional.interpolate(hidden, scale_factor=2, mode="nearest"))

    without.save_pretrained(tmp_path / "vq")
    assert json.loads((tmp_path / "vq" / "config.json").read_text())["upsample_with_conv"] is False
    loaded = UniF2aceVQModel.from_pretrained(tmp_path / "vq").eval()
    with torch.no_grad():
        codes = without.encode(images())
        assert codes.shape == (2, 64)
        assert torch.equal(loaded.decode(codes), without.decode(codes))
    # a checkpoint with the convolutions does not load under a config without them, nor the other way round
    with_conv.save_pretrained(tmp_path / "with_conv")
    for folder, flag in (("with_conv", False), ("vq", True)):
        config = json.loads((tmp_path / folder / "config.json").read_text())
        (tmp_path / folder / "config.json").write_text(json.dumps({**config, "upsample_with_conv": flag}))
    with pytest.raises(ValueError, match="no place for, e.g. 'decoder.up.1.upsample.conv"):
        UniF2aceVQModel.from_pretrained(tmp_path / "with_conv")
    with pytest.raises(ValueError, match="no weight for 'decoder.up.1.upsample.conv"):
        UniF2aceVQModel.from_pretrained(tmp_path / "vq")


def test_patches_fold_into_channels_and_back(tmp_path):
    # two levels and 2x2 patches: the factor of three levels, without a 32x32 level
    patched = UniF2aceVQModel(
        micro_config(
            patch_size=2,
            encoder_channel_multipliers=[1, 2],
            encoder_num_res_blocks=[1, 1],
            decoder_channel_multipliers=[1, 2],
            decoder_num_res_blocks=[1, 1],
        )
    ).eval()
    assert patched.config.downsample_factor == 4 and patched.config.latent_size == 8
    assert patched.encoder.conv_in.weight.shape == (32, 12, 3, 3)
    assert patched.decoder.conv_out.weight.shape == (12, 32, 3, 3)
    assert "encoder.down.0.attn.0.q.weight" in patched.state_dict()  # level 0 is 16px, where attention is asked
    # the decoder's last conv writes every pixel of a patch: pixel (2i + a, 2j + b) of colour c is channel 4c + 2a + b
    with torch.no_grad():
        patched.decoder.conv_out.weight.zero_()
        patched.decoder.conv_out.bias.copy_(torch.arange(12.0))
        pixels = patched.decoder(torch.ones(1, 6, 8, 8))
    assert pixels.shape == (1, 3, 32, 32)
    assert pixels[0, :, :2, :2].flatten().tolist() == list(range(12))
    x = images()
    with torch.no_grad():
        codes = patched.encode(x)
        assert codes.shape == (2, 64)
        assert patched.decode(codes).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="pixel_values.*not divisible by .* factor 4"):
        patched.encode(torch.zeros(1, 3, 30, 32))

    patched.save_pretrained(tmp_path / "vq")
    assert json.loads((tmp_path / "vq" / "config.json").read_text())["patch_size"] == 2
    loaded = UniF2aceVQModel.from_pretrained(tmp_path / "vq").eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), codes)
        assert torch.equal(loaded.decode(codes), patched.decode(codes))
    config = json.loads((tmp_path / "vq" / "config.json").read_text())
    (tmp_path / "vq" / "config.json").write_text(json.dumps({**config, "patch_size": 1, "image_size": 16}))
    with pytest.raises(ValueError, match="conv_.*has shape .* in the checkpoint"):
        UniF2aceVQModel.from_pretrained(tmp_path / "vq")
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="patch_size"):
            micro_config(patch_size=bad)
    with pytest.raises(ValueError, match="image_size.*factor 8"):
        micro_config(patch_size=2, image_size=36)


def test_loading_is_strict(tmp_path):
    UniF2aceVQModel(micro_config()).save_pretrained(tmp_path / "vq")
    config = json.loads((tmp_path / "vq" / "config.json").read_text())
    config["decoder_num_res_blocks"] = [1, 1, 2]
    (tmp_path / "vq" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no weight for 'decoder.up.2.block.1"):
        UniF2aceVQModel.from_pretrained(tmp_path / "vq")


def test_bad_input_names_the_argument():
    model = UniF2aceVQModel(micro_config())
    with pytest.raises(ValueError, match="pixel_values.*shape"):
        model.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="pixel_values.*not divisible by .* factor 4"):
        model.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match="pixel_values.*floating-point"):
        model.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"pixel_values.*\[-1, 1\]"):
        model.encode(torch.full((1, 3, 32, 32), 255.0))
    with pytest.raises(ValueError, match=r"codes.*\[0, 64\)"):
        model.decode(torch.full((1, 64), 64))
    with pytest.raises(ValueError, match="codes.*not a square grid"):
        model.decode(torch.zeros(1, 60, dtype=torch.long))
    with pytest.raises(ValueError, match="codes.*shape=.*needs"):
        model.decode(torch.zeros(1, 60, dtype=torch.long), shape=(8, 8))
    with pytest.raises(ValueError, match="codes.*integer"):
        model.decode(torch.zeros(1, 64))


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="codebook_size"):
        UniF2aceVQConfig(codebook_dim=10, codebook_size=1000)
    with pytest.raises(ValueError, match="image_size"):
        UniF2aceVQConfig(**{**MICRO, "encoder_num_res_blocks": [1, 1, 1], "image_size": 30})
    with pytest.raises(ValueError, match="decoder_channel_multipliers"):
        UniF2aceVQConfig(
            **{
                **MICRO,
                "encoder_num_res_blocks": [1, 1, 1],
                "decoder_channel_multipliers": [1, 2],
                "decoder_num_res_blocks": [1, 1],
            }
        )
    with pytest.raises(ValueError, match="encoder_num_res_blocks"):
        UniF2aceVQConfig(**MICRO)  # two block counts for three levels
    with pytest.raises(ValueError, match="norm_num_groups"):
        UniF2aceVQConfig(**{**MICRO, "encoder_num_res_blocks": [1, 1, 1], "base_channels": 48})


def with_tokenizer(**overrides) -> UniF2aceConfig:
    return tiny_config(vq_config=micro_config().to_dict(), **overrides)


def test_vq_config_nests_in_the_model_config(tmp_path):
    assert tiny_config().vq_config is None
    config = with_tokenizer()
    assert isinstance(config.vq_config, UniF2aceVQConfig) and config.vq_config.codebook_size == config.codebook_size
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["vq_config"]["model_type"] == "unif2ace_vq" and saved["vq_config"]["codebook_dim"] == 6
    loaded = UniF2aceConfig.from_pretrained(tmp_path)
    assert isinstance(loaded.vq_config, UniF2aceVQConfig)
    assert loaded.vq_config.to_dict() == config.vq_config.to_dict()
    assert UniF2aceConfig(**config.to_dict()).vq_config.to_dict() == config.vq_config.to_dict()
    with pytest.raises(ValueError, match="vq_config.*128 codes but codebook_size=64"):
        tiny_config(vq_config={**MICRO, "encoder_num_res_blocks": [1, 1, 1], "codebook_dim": 7})


def test_conditional_generation_model_holds_and_saves_the_tokenizer(tmp_path):
    model = UniF2aceForConditionalGeneration(with_tokenizer()).eval()
    assert isinstance(model.vq_model, UniF2aceVQModel)
    assert UniF2aceForConditionalGeneration(tiny_config()).vq_model is None
    model.save_pretrained(tmp_path / "full")
    assert "image_tokenizer.py" in os.listdir(tmp_path / "full")
    loaded = UniF2aceForConditionalGeneration.from_pretrained(tmp_path / "full").eval()
    x = images()
    with torch.no_grad():
        codes = model.vq_model.encode(x)
        assert torch.equal(loaded.vq_model.encode(x), codes)
        assert torch.equal(loaded.vq_model.decode(codes), model.vq_model.decode(codes))
    # The tokenizer alone loads from the full checkpoint through its `vq_model.` prefix.
    alone = UniF2aceVQModel.from_pretrained(tmp_path / "full", config=model.config.vq_config).eval()
    with torch.no_grad():
        assert torch.equal(alone.encode(x), codes)


def test_default_tokenizer_is_shipped_at_its_sizes():
    """The CPU-trained tokenizer (docs/decisions.md, "Muon for the kernels"): 64 px faces, 16×16 codes of 12 bits."""
    model = UniF2aceVQModel.from_pretrained(DEFAULT_VQ_MODEL).eval()
    assert model.config.image_size == 64 and model.config.codebook_size == 4096
    assert os.path.getsize(Path(DEFAULT_VQ_MODEL, "model.safetensors")) <= 15_000_000
    with torch.no_grad():
        codes = model.encode(images(1, 64))
        assert codes.shape == (1, 256) and model.decode(codes).shape == (1, 3, 64, 64)


REMOTE_LOADER = r"""
import sys
sys.modules["unif2ace_hf"] = None  # the package is not importable here
import torch
from transformers import AutoModel, AutoModelForCausalLM
full = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
alone = AutoModel.from_pretrained(sys.argv[2], trust_remote_code=True).eval()
x = torch.load(sys.argv[3])
with torch.no_grad():
    torch.save({"full": full.vq_model.encode(x), "alone": alone.encode(x), "class": type(alone).__module__}, sys.argv[4])
"""


def test_remote_code_carries_the_tokenizer(tmp_path):
    import subprocess
    import sys

    model = UniF2aceForConditionalGeneration(with_tokenizer()).eval()
    model.save_pretrained(tmp_path / "full")
    model.vq_model.save_pretrained(tmp_path / "vq")
    x = images()
    torch.save(x, tmp_path / "x.pt")
    paths = [str(tmp_path / name) for name in ("full", "vq", "x.pt", "out.pt")]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    process = subprocess.run(
        [sys.executable, "-c", REMOTE_LOADER, *paths], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt")
    assert result["class"].startswith("transformers_modules.")
    with torch.no_grad():
        codes = model.vq_model.encode(x)
    assert torch.equal(result["full"], codes) and torch.equal(result["alone"], codes)
