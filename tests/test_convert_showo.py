"""Show-o conversion: parity with transformers' PhiForCausalLM (the public implementation Show-o wraps)."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import PhiConfig, PhiForCausalLM

from unif2ace_hf import UniF2aceForConditionalGeneration
from unif2ace_hf.cli import main as cli

TEXT_VOCAB, CODEBOOK = 100, 64
VOCAB = TEXT_VOCAB + 10 + CODEBOOK + 1


def make_showo_folder(root, weights: str = "safetensors", **phi_overrides):
    """A tiny random Phi (q/k LayerNorm, partial rotary 0.5) saved the way Show-o saves itself."""
    phi_config = PhiConfig(
        **{
            "vocab_size": VOCAB,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "qk_layernorm": True,
            "partial_rotary_factor": 0.5,
            "bos_token_id": 0,
            "eos_token_id": 0,
            **phi_overrides,
        }
    )
    phi = PhiForCausalLM(phi_config).eval()
    with torch.no_grad():
        for name, p in phi.named_parameters():
            if "layernorm" in name:
                p.normal_(mean=1.0 if name.endswith("weight") else 0.0, std=0.1)
    showo = root / "showo"
    showo.mkdir()
    state = {f"showo.{k}": v.contiguous() for k, v in phi.state_dict().items()}
    if weights == "safetensors":
        save_file(state, str(showo / "pytorch_model.safetensors"))
    else:
        torch.save(state, showo / "pytorch_model.bin")
    showo_config = {
        "_class_name": "Showo",
        "_diffusers_version": "0.30.1",
        "codebook_size": CODEBOOK,
        "llm_model_path": "microsoft/phi-1_5",
        "llm_vocab_size": TEXT_VOCAB,
        "mask_token_id": VOCAB - 1,
        "num_vq_tokens": 16,
        "vocab_size": VOCAB,
        "w_clip_vit": False,
    }
    (showo / "config.json").write_text(json.dumps(showo_config))
    phi_config.save_pretrained(root / "phi")
    return phi, showo


def phi_inputs(batch: int = 3, length: int = 24):
    """Text rows (the task Phi computes as is) with explicit position ids, including a shifted row."""
    input_ids = torch.randint(0, TEXT_VOCAB, (batch, length))
    position_ids = torch.arange(length).repeat(batch, 1)
    position_ids[-1] += 7
    return input_ids, position_ids


@pytest.mark.parametrize("moe", ["dense", "upcycle"])
def test_converted_model_matches_phi(tmp_path, moe):
    phi, showo = make_showo_folder(tmp_path)
    output = tmp_path / f"converted-{moe}"
    assert (
        cli(
            [
                "convert-showo",
                "--showo-dir",
                str(showo),
                "--llm-config",
                str(tmp_path / "phi"),
                "--output-dir",
                str(output),
                "--moe",
                moe,
                "--num-routed-experts",
                "4",
                "--experts-per-token",
                "2",
            ]
        )
        == 0
    )
    model = UniF2aceForConditionalGeneration.from_pretrained(output).eval()
    assert bool(model.config.token_moe_layers) == (moe == "upcycle")
    assert bool(model.config.sequence_moe_layers) == (moe == "upcycle")
    input_ids, position_ids = phi_inputs()
    with torch.no_grad():
        expected = phi(input_ids=input_ids, position_ids=position_ids).logits
        got = model(input_ids=input_ids, position_ids=position_ids).logits
    assert (got - expected).abs().max() < 1e-4
    # the converted model keeps Show-o's vocabulary layout
    assert (model.config.pad_token_id, model.config.soi_token_id, model.config.t2i_token_id) == (100, 101, 105)
    assert model.config.image_token_offset == 110 and model.config.mask_token_id == VOCAB - 1


def test_upcycled_model_matches_dense_on_multimodal_rows(tmp_path):
    """Omni-attention rows too: the upcycled MoE computes exactly what the dense conversion computes."""
    _, showo = make_showo_folder(tmp_path)
    for moe in ("dense", "upcycle"):
        cli(
            [
                "convert-showo",
                "--showo-dir",
                str(showo),
                "--llm-config",
                str(tmp_path / "phi"),
                "--output-dir",
                str(tmp_path / moe),
                "--moe",
                moe,
            ]
        )
    dense = UniF2aceForConditionalGeneration.from_pretrained(tmp_path / "dense").eval()
    upcycled = UniF2aceForConditionalGeneration.from_pretrained(tmp_path / "upcycle").eval()
    c = dense.config
    image = torch.randint(c.image_token_offset, c.image_token_offset + c.codebook_size, (2, 16))
    t2i = torch.cat(
        [
            torch.tensor([[c.t2i_token_id, 0, 5, 6, 7, 0, c.soi_token_id]] * 2),
            image,
            torch.tensor([[c.eoi_token_id]] * 2),
        ],
        1,
    )
    mmu = torch.cat(
        [
            torch.tensor([[c.mmu_token_id, c.soi_token_id]] * 2),
            image,
            torch.tensor([[c.eoi_token_id, 0, 7, 8, 9, 3]] * 2),
        ],
        1,
    )
    ids = torch.cat([t2i, mmu])
    with torch.no_grad():
        torch.testing.assert_close(upcycled(input_ids=ids).logits, dense(input_ids=ids).logits, atol=1e-4, rtol=0)


def test_bin_weights_are_read_safely(tmp_path):
    phi, showo = make_showo_folder(tmp_path, weights="bin")
    cli(
        [
            "convert-showo",
            "--showo-dir",
            str(showo),
            "--llm-config",
            str(tmp_path / "phi" / "config.json"),
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    model = UniF2aceForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    input_ids, position_ids = phi_inputs(1)
    with torch.no_grad():
        assert (
            model(input_ids=input_ids, position_ids=position_ids).logits
            - phi(input_ids=input_ids, position_ids=position_ids).logits
        ).abs().max() < 1e-4


def test_weights_that_do_not_match_the_llm_config_are_named(tmp_path):
    _, showo = make_showo_folder(tmp_path)
    wrong = PhiConfig.from_pretrained(tmp_path / "phi")
    wrong.intermediate_size = 96
    wrong.save_pretrained(tmp_path / "wrong")
    with pytest.raises(
        ValueError, match=r"weight showo\.model\.layers\.0\.mlp\.fc1\.bias has shape \(128,\).*expects \(96,\)"
    ):
        cli(
            [
                "convert-showo",
                "--showo-dir",
                str(showo),
                "--llm-config",
                str(tmp_path / "wrong"),
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )


def test_unsupported_checkpoints_are_refused(tmp_path):
    _, showo = make_showo_folder(tmp_path)
    config = json.loads((showo / "config.json").read_text())
    (showo / "config.json").write_text(json.dumps({**config, "w_clip_vit": True}))
    with pytest.raises(ValueError, match="CLIP-ViT"):
        cli(
            [
                "convert-showo",
                "--showo-dir",
                str(showo),
                "--llm-config",
                str(tmp_path / "phi"),
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )
    with pytest.raises(FileNotFoundError, match="showo_dir: no config.json"):
        cli(
            [
                "convert-showo",
                "--showo-dir",
                str(tmp_path),
                "--llm-config",
                str(tmp_path / "phi"),
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )


def test_tokenizer_gets_showo_special_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(TEXT_VOCAB - 1)} | {"<|endoftext|>": TEXT_VOCAB - 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    fast.save_pretrained(tmp_path / "tok")
    _, showo = make_showo_folder(tmp_path, bos_token_id=1, eos_token_id=1)
    cli(
        [
            "convert-showo",
            "--showo-dir",
            str(showo),
            "--llm-config",
            str(tmp_path / "phi"),
            "--output-dir",
            str(tmp_path / "out"),
            "--tokenizer-dir",
            str(tmp_path / "tok"),
        ]
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    model = UniF2aceForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert tokenizer.convert_tokens_to_ids(["<|pad|>", "<|soi|>", "<|eoi|>", "<|t2i|>", "<|mmu|>", "<|lvg|>"]) == [
        100,
        101,
        102,
        105,
        106,
        109,
    ]
    assert model.config.bos_token_id == model.config.eos_token_id == TEXT_VOCAB - 1  # sot/eot = the tokenizer's bos/eos
    assert tokenizer.padding_side == "left"
