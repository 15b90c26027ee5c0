"""UniF²ace's image tokenizer: a MAGVIT-v2 style conv encoder/decoder with lookup-free quantisation (LFQ).

Images in [-1, 1] become a grid of integer codes (`encode`) and codes become images (`decode`). Each code is the
sign pattern of `codebook_dim` latent channels read as a binary number, most significant bit first (channel 0 is
the MSB), so the codebook is implicit: code `i` is the ±1 vector of `i`'s bits. Module and buffer names follow the
public MAGVIT-v2 checkpoint used by Show-o (`encoder.*`, `decoder.*`, `quantize.embedding`, `quantize.power_vals`),
so that checkpoint converts by a shape check (`convert_magvit.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_unif2ace import UniF2aceVQConfig
from .strict_loading import check_loading_report, strict_from_pretrained


def _group_norm(channels: int, config: UniF2aceVQConfig) -> nn.GroupNorm:
    return nn.GroupNorm(config.norm_num_groups, channels, eps=config.norm_eps, affine=True)


class UniF2aceVQResnetBlock(nn.Module):
    """Pre-activation residual block (GroupNorm, swish, 3×3 conv, twice); a 1×1 `nin_shortcut` when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, config: UniF2aceVQConfig):
        super().__init__()
        self.norm1 = _group_norm(in_channels, config)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels, config)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class UniF2aceVQAttnBlock(nn.Module):
    """Single-head self-attention over all positions, with 1×1 conv projections and a residual."""

    def __init__(self, channels: int, config: UniF2aceVQConfig):
        super().__init__()
        self.norm = _group_norm(channels, config)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hidden = self.norm(x)
        q, k, v = (proj(hidden).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(c), as in taming's AttnBlock
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class UniF2aceVQDownsample(nn.Module):
    """Stride-2 3×3 conv after zero-padding one row/column at the bottom/right (taming's asymmetric padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class UniF2aceVQUpsample(nn.Module):
    """Nearest-neighbour 2× upsampling followed by a 3×3 conv (or by nothing, `with_conv=False`)."""

    def __init__(self, channels: int, with_conv: bool = True):
        super().__init__()
        # an Identity has no weights, so a tokenizer without the convs has no `upsample.conv.*` keys
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each pixel repeated 2×2: exactly `F.interpolate(x, scale_factor=2, mode="nearest")`, whose backward
        # torch.compile (inductor, CPU, bf16 autocast) returns as zeros, cutting every gradient above this layer.
        b, c, h, w = x.shape
        return self.conv(x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w))


class _Level(nn.Module):
    """One resolution level: `block` (residual blocks), `attn` (empty unless the side is in `attn_resolutions`) and
    an optional `downsample`/`upsample`; the attribute names are the checkpoint's."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):
    """Middle of the network: residual block, self-attention, residual block."""

    def __init__(self, channels: int, config: UniF2aceVQConfig):
        super().__init__()
        self.block_1 = UniF2aceVQResnetBlock(channels, channels, config)
        self.attn_1 = UniF2aceVQAttnBlock(channels, config)
        self.block_2 = UniF2aceVQResnetBlock(channels, channels, config)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class UniF2aceVQEncoder(nn.Module):
    """Pixels -> continuous latents with `codebook_dim` channels at 1/`downsample_factor` resolution."""

    def __init__(self, config: UniF2aceVQConfig):
        super().__init__()
        ch, multipliers = config.base_channels, config.encoder_channel_multipliers
        self.patch_size = config.patch_size
        self.conv_in = nn.Conv2d(config.num_channels * config.patch_size**2, ch, 3, padding=1)
        self.down = nn.ModuleList()
        side, block_in = config.image_size // config.patch_size, ch
        for level, (multiplier, num_blocks) in enumerate(zip(multipliers, config.encoder_num_res_blocks)):
            block_out = ch * multiplier
            blocks, attns = [], []
            for _ in range(num_blocks):
                blocks.append(UniF2aceVQResnetBlock(block_in, block_out, config))
                block_in = block_out
                if side in config.attn_resolutions:
                    attns.append(UniF2aceVQAttnBlock(block_in, config))
            stage = _Level(blocks, attns)
            if level != len(multipliers) - 1:
                stage.downsample = UniF2aceVQDownsample(block_in)
                side //= 2
            self.down.append(stage)
        self.mid = _Mid(block_in, config)
        self.norm_out = _group_norm(block_in, config)
        self.conv_out = nn.Conv2d(block_in, config.codebook_dim, 3, padding=1)
        self.quant_conv = nn.Conv2d(config.codebook_dim, config.codebook_dim, 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.patch_size > 1:
            pixel_values = F.pixel_unshuffle(pixel_values, self.patch_size)
        h = self.conv_in(pixel_values)
        for stage in self.down:
            h = stage.run_blocks(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return self.quant_conv(h)


class UniF2aceVQDecoder(nn.Module):
    """Quantised latents (±1) -> pixels (unbounded; `UniF2aceVQModel.decode` clamps to [-1, 1])."""

    def __init__(self, config: UniF2aceVQConfig):
        super().__init__()
        ch, multipliers = config.base_channels, config.decoder_channel_multipliers
        block_in = ch * multipliers[-1]
        side = config.image_size // config.downsample_factor
        self.post_quant_conv = nn.Conv2d(config.codebook_dim, config.codebook_dim, 1)
        self.conv_in = nn.Conv2d(config.codebook_dim, block_in, 3, padding=1)
        self.mid = _Mid(block_in, config)
        stages: list[_Level] = []
        for level in reversed(range(len(multipliers))):
            block_out = ch * multipliers[level]
            blocks, attns = [], []
            for _ in range(config.decoder_num_res_blocks[level]):
                blocks.append(UniF2aceVQResnetBlock(block_in, block_out, config))
                block_in = block_out
                if side in config.attn_resolutions:
                    attns.append(UniF2aceVQAttnBlock(block_in, config))
            stage = _Level(blocks, attns)
            if level != 0:
                stage.upsample = UniF2aceVQUpsample(block_in, config.upsample_with_conv)
                side *= 2
            stages.insert(0, stage)  # `up[i]` is level i, as in the checkpoint
        self.up = nn.ModuleList(stages)
        self.norm_out = _group_norm(block_in, config)
        self.patch_size = config.patch_size
        self.conv_out = nn.Conv2d(block_in, config.num_channels * config.patch_size**2, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.post_quant_conv(latents))
        h = self.mid(h)
        for stage in reversed(self.up):
            h = stage.run_blocks(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(h, self.patch_size) if self.patch_size > 1 else h


def code_bits(codebook_dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """`[2^d, d]` {0, 1} table whose row i is the bits of code i, most significant first (the LFQ code order)."""
    power_vals = 2 ** torch.arange(codebook_dim - 1, -1, -1, dtype=torch.long, device=device)
    return (torch.arange(2**codebook_dim, dtype=torch.long, device=device).unsqueeze(1) // power_vals) % 2


def _codebook(codebook_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(`embedding` [2^d, d] of ±1 with row i = the bits of i, MSB first; `power_vals` [d] = 2^(d-1) … 1)."""
    power_vals = 2 ** torch.arange(codebook_dim - 1, -1, -1, dtype=torch.long)
    return code_bits(codebook_dim).float() * 2 - 1, power_vals


class UniF2aceLFQ(nn.Module):
    """Lookup-free quantiser: each latent channel becomes +1 if > 0 else -1; the code is those bits, MSB first.

    The codebook is implicit; `embedding` and `power_vals` are kept as persistent buffers because the public
    checkpoint stores them (and they make decoding an index lookup).
    """

    def __init__(self, config: UniF2aceVQConfig):
        super().__init__()
        self.codebook_dim = config.codebook_dim
        self.codebook_size = config.codebook_size
        embedding, power_vals = _codebook(config.codebook_dim)
        self.register_buffer("embedding", embedding)
        self.register_buffer("power_vals", power_vals)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, d, h, w)` latents -> (±1 latents with a straight-through gradient, codes `(B, h, w)`)."""
        signs = torch.where(latents > 0, 1.0, -1.0).to(latents.dtype)
        quantized = latents + (signs - latents).detach()
        return quantized, self.bits_to_codes((latents > 0).long(), dim=1)

    def bits_to_codes(self, bits: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """{0, 1} bits along `dim` (MSB first) -> integer codes."""
        shape = [1] * bits.dim()
        shape[dim] = self.codebook_dim
        return (bits.long() * self.power_vals.view(shape)).sum(dim)

    def codes_to_bits(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes -> {0, 1} bits in a new last dimension (MSB first)."""
        return (codes.long().unsqueeze(-1) // self.power_vals) % 2

    def codes_to_latents(self, codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """`(B, h*w)` codes -> `(B, d, h, w)` ±1 latents."""
        latents = self.embedding[codes.reshape(-1)]
        return latents.view(codes.shape[0], height, width, self.codebook_dim).permute(0, 3, 1, 2).contiguous()


@dataclass
class UniF2aceVQOutput(ModelOutput):
    """Output of [`UniF2aceVQModel.forward`].

    Args:
        reconstruction (`torch.FloatTensor` of shape `(B, C, H, W)`): decoded images, not clamped (for losses).
        codes (`torch.LongTensor` of shape `(B, h*w)`): the codes, row-major.
        latents (`torch.FloatTensor` of shape `(B, d, h, w)`): encoder output before quantisation (for the
            commitment and entropy losses, `modeling/tokenizer_losses.py`).
    """

    reconstruction: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    latents: torch.FloatTensor | None = None


class UniF2aceVQModel(PreTrainedModel):
    """MAGVIT-v2 style tokenizer: `encode(pixel_values) -> codes`, `decode(codes) -> pixel_values`."""

    config_class = UniF2aceVQConfig
    config: UniF2aceVQConfig
    base_model_prefix = "vq_model"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = False
    _no_split_modules = ["UniF2aceVQEncoder", "UniF2aceVQDecoder"]
    _supports_sdpa = True

    def __init__(self, config: UniF2aceVQConfig):
        super().__init__(config)
        self.encoder = UniF2aceVQEncoder(config)
        self.decoder = UniF2aceVQDecoder(config)
        self.quantize = UniF2aceLFQ(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default conv initialisation (uniform, fan-in scaled): convolutions trained from scratch with
        GroupNorm, as in taming/MAGVIT; and the LFQ buffers, which are a function of `codebook_dim`."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, UniF2aceLFQ):
            embedding, power_vals = _codebook(module.codebook_dim)
            init.copy_(module.embedding, embedding)
            init.copy_(module.power_vals, power_vals)

    # -- input checks -------------------------------------------------------------------------------------------

    def _check_pixel_values(self, pixel_values: torch.Tensor, check_range: bool = True) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"`pixel_values` must be a floating-point tensor in [-1, 1], got dtype {pixel_values.dtype} "
                "(convert uint8 images with `x / 127.5 - 1`)."
            )
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"`pixel_values` must have shape (batch, {self.config.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}."
            )
        factor = self.config.downsample_factor
        height, width = pixel_values.shape[-2:]
        if height % factor or width % factor or height == 0 or width == 0:
            raise ValueError(
                f"`pixel_values` has size {height}x{width}, which is not divisible by the tokenizer's downsampling "
                f"factor {factor} (expected e.g. {self.config.image_size}x{self.config.image_size})."
            )
        if check_range and pixel_values.numel():  # a host sync: skipped in the training forward
            low, high = pixel_values.aminmax()
            if low < -1.05 or high > 1.05:
                raise ValueError(
                    f"`pixel_values` must lie in [-1, 1], got values in [{low.item():.3g}, {high.item():.3g}] "
                    "(normalise with mean 0.5, std 0.5)."
                )

    def _code_grid(self, codes: torch.Tensor, shape: tuple[int, int] | None) -> tuple[int, int]:
        if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex():
            raise ValueError(f"`codes` must be an integer tensor of shape (batch, h*w), got {codes!r:.80}.")
        if codes.dim() != 2:
            raise ValueError(f"`codes` must have shape (batch, h*w), got {tuple(codes.shape)}.")
        length = codes.shape[1]
        if shape is None:
            side = math.isqrt(length)
            if side * side != length or length == 0:
                raise ValueError(
                    f"`codes` has {length} codes per image, which is not a square grid; pass `shape=(h, w)`."
                )
            height, width = side, side
        else:
            height, width = (int(s) for s in shape)
            if height * width != length or height < 1:
                raise ValueError(
                    f"`codes` has {length} codes per image, but shape={tuple(shape)} needs {height * width}."
                )
        if codes.numel():
            low, high = codes.aminmax()
            if low < 0 or high >= self.config.codebook_size:
                raise ValueError(
                    f"`codes` must lie in [0, {self.config.codebook_size}), got values in [{low.item()}, {high.item()}]."
                )
        return height, width

    # -- public API ---------------------------------------------------------------------------------------------

    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Images `(B, C, H, W)` in [-1, 1] -> codes `(B, (H/f)·(W/f))`, row-major, f = `config.downsample_factor`."""
        self._check_pixel_values(pixel_values)
        latents = self.encoder(pixel_values.to(self.dtype))
        _, codes = self.quantize(latents)
        return codes.flatten(1)

    def decode(self, codes: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.FloatTensor:
        """Codes `(B, h*w)` -> images `(B, C, h·f, w·f)` clamped to [-1, 1]; the grid is square unless `shape=(h, w)`."""
        height, width = self._code_grid(codes, shape)
        latents = self.quantize.codes_to_latents(codes.to(self.device), height, width).to(self.dtype)
        return self.decoder(latents).clamp(-1.0, 1.0)

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None) -> UniF2aceVQOutput:
        """Encode, quantise (straight-through) and decode: the training pass (the value range is not checked)."""
        self._check_pixel_values(pixel_values, check_range=False)
        latents = self.encoder(pixel_values.to(self.dtype))
        quantized, codes = self.quantize(latents)
        output = UniF2aceVQOutput(reconstruction=self.decoder(quantized), codes=codes.flatten(1), latents=latents)
        return output if return_dict is not False else output.to_tuple()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Strict (`strict_loading.py`): safetensors only, damaged files and Hub downloads named."""
        return strict_from_pretrained(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)

    @staticmethod
    def _finalize_model_loading(model, load_config, loading_info):
        """Strict loading: transformers would warn and initialise a missing or mis-shaped weight at random; a
        tokenizer with random layers decodes noise, so both are errors that name the weight."""
        return check_loading_report(model, load_config, loading_info, PreTrainedModel._finalize_model_loading)


__all__ = ["UniF2aceVQModel", "UniF2aceVQOutput", "UniF2aceLFQ", "UniF2aceVQEncoder", "UniF2aceVQDecoder"]
