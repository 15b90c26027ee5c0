"""MAGVIT-v2 (showlab/magvitv2 layout) -> UniF2aceVQModel: key names, size inference, exact decoding."""

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from unif2ace_hf import UniF2aceVQConfig, UniF2aceVQModel
from unif2ace_hf.cli import main
from unif2ace_hf.modeling.convert_magvit import convert_magvit_checkpoint


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine an oversubscribed second thread slows small convolutions ~10x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# The public checkpoint's layout (reference facts §1.3, §1.9): encoder ch 128, ch_mult [1,2,2,4,4], blocks
# [4,3,4,3,4]; decoder ch_mult [1,1,2,2,4], blocks [4,4,3,4,3]; 13 latent channels; no attention outside the middle.
MAGVIT_BLOCKS = {"encoder.down": [4, 3, 4, 3, 4], "decoder.up": [4, 4, 3, 4, 3]}
MAGVIT_WIDTHS = {"encoder.down": [128, 256, 256, 512, 512], "decoder.up": [128, 128, 256, 256, 512]}
MAGVIT_CONFIG_JSON = {"_class_name": "MAGVITv2", "_diffusers_version": "0.25.1"}  # the original takes no arguments


def write_magvit_folder(folder, state, weights_name="pytorch_model.safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(MAGVIT_CONFIG_JSON))
    state = {k: v.contiguous() for k, v in state.items()}
    if weights_name.endswith(".safetensors"):
        save_file(state, str(folder / weights_name))
    else:
        torch.save(state, folder / weights_name)


def test_full_size_magvit_converts_and_decodes_identically(tmp_path):
    torch.manual_seed(0)
    original = UniF2aceVQModel(UniF2aceVQConfig()).eval()  # the full MAGVIT-v2 sizes are the defaults
    state = original.state_dict()

    # The key names are the public checkpoint's.
    for prefix, blocks in MAGVIT_BLOCKS.items():
        for level, count in enumerate(blocks):
            found = {int(m[1]) for k in state if (m := re.match(rf"{prefix}\.{level}\.block\.(\d+)\.conv1\.weight", k))}
            assert found == set(range(count)), (prefix, level)
            assert state[f"{prefix}.{level}.block.0.conv2.weight"].shape[0] == MAGVIT_WIDTHS[prefix][level]
    for key in (
        "encoder.conv_in.weight",
        "encoder.down.0.block.0.norm1.weight",
        "encoder.down.0.block.1.conv2.bias",
        "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.down.3.downsample.conv.weight",
        "encoder.mid.block_1.norm2.weight",
        "encoder.mid.attn_1.q.weight",
        "encoder.mid.attn_1.proj_out.bias",
        "encoder.mid.block_2.conv1.weight",
        "encoder.norm_out.weight",
        "encoder.conv_out.weight",
        "encoder.quant_conv.weight",
        "decoder.post_quant_conv.weight",
        "decoder.conv_in.weight",
        "decoder.mid.attn_1.norm.weight",
        "decoder.up.4.upsample.conv.weight",
        "decoder.up.1.upsample.conv.weight",
        "decoder.up.0.block.3.conv2.weight",
        "decoder.norm_out.bias",
        "decoder.conv_out.weight",
        "quantize.embedding",
        "quantize.power_vals",
    ):
        assert key in state, key
    assert "encoder.down.4.downsample.conv.weight" not in state and "decoder.up.0.upsample.conv.weight" not in state
    assert not any(".attn." in k for k in state)
    assert state["encoder.quant_conv.weight"].shape == (13, 13, 1, 1)
    assert state["quantize.embedding"].shape == (8192, 13) and state["quantize.power_vals"].dtype == torch.long

    write_magvit_folder(tmp_path / "magvitv2", state)
    converted = convert_magvit_checkpoint(tmp_path / "magvitv2")  # saving is covered by the CLI test below
    for field in ("image_size", "base_channels", "codebook_dim", "codebook_size", "attn_resolutions"):
        assert getattr(converted.config, field) == getattr(original.config, field), field
    for side in ("encoder", "decoder"):
        for field in (f"{side}_channel_multipliers", f"{side}_num_res_blocks"):
            assert getattr(converted.config, field) == getattr(original.config, field), field
    codes = torch.randint(0, 8192, (1, 4))
    with torch.no_grad():
        assert torch.equal(converted.decode(codes), original.decode(codes))


def micro_state(**overrides):
    config = UniF2aceVQConfig(
        **{
            "image_size": 32,
            "base_channels": 32,
            "encoder_channel_multipliers": [1, 2, 2],
            "encoder_num_res_blocks": [2, 1, 1],
            "decoder_channel_multipliers": [1, 1, 2],
            "decoder_num_res_blocks": [1, 2, 1],
            "attn_resolutions": [8],
            "codebook_dim": 5,
            **overrides,
        }
    )
    return UniF2aceVQModel(config).eval()


@pytest.mark.parametrize("weights_name", ["pytorch_model.safetensors", "pytorch_model.bin"])
def test_cli_infers_sizes_and_encodes_identically(tmp_path, weights_name, capsys):
    original = micro_state()
    write_magvit_folder(tmp_path / "src", original.state_dict(), weights_name)
    command = ["convert-magvit", "--src", str(tmp_path / "src"), "--output-dir", str(tmp_path / "out")]
    assert main([*command, "--image-size", "32"]) == 0
    assert "32 codes" in capsys.readouterr().out
    converted = UniF2aceVQModel.from_pretrained(tmp_path / "out").eval()
    assert converted.config.attn_resolutions == [8] and converted.config.decoder_num_res_blocks == [1, 2, 1]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(converted.encode(x), original.encode(x))
        assert torch.equal(converted(x).reconstruction, original(x).reconstruction)


def test_converter_refuses_foreign_weights_and_bit_orders(tmp_path, capsys):
    state = micro_state().state_dict()
    write_magvit_folder(tmp_path / "extra", {**state, "loss.discriminator.weight": torch.zeros(1)})
    assert main(["convert-magvit", "--src", str(tmp_path / "extra"), "--output-dir", str(tmp_path / "o1")]) == 2
    assert "loss.discriminator.weight" in capsys.readouterr().err

    flipped = dict(state, **{"quantize.power_vals": state["quantize.power_vals"].flip(0)})  # LSB first
    write_magvit_folder(tmp_path / "lsb", flipped)
    with pytest.raises(ValueError, match="most significant first"):
        convert_magvit_checkpoint(tmp_path / "lsb")

    missing = {k: v for k, v in state.items() if k != "decoder.conv_out.bias"}
    write_magvit_folder(tmp_path / "missing", missing)
    with pytest.raises(ValueError, match="decoder.conv_out.bias"):
        convert_magvit_checkpoint(tmp_path / "missing")

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="src.*pytorch_model.safetensors"):
        convert_magvit_checkpoint(tmp_path / "empty")
