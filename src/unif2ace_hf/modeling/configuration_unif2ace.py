"""Configuration of UniF²ace: a Phi-style backbone with omni-attention and a two-level mixture of experts.

Every token id, every size and every MoE choice is a field, so the same code serves a converted Show-o
checkpoint (Phi-1.5 sizes, 58 498-token vocabulary) and the tiny default model trained on SynthFace.
"""

from __future__ import annotations

from transformers import PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

TOKEN_MOE_GROUPS = ("t2i", "mmu")
"""Task groups of the token-level MoE; a row's task decides its group (not a learned choice)."""

SEQUENCE_EXPERT_KINDS = ("copy", "zero", "noise", "semantic", "identity")
"""Experts the sequence-level MoE can hold (UniF²ace: Copy, Zero, Noise, CLIP/semantic, Face/identity)."""

TASKS = ("t2i", "mmu", "lm")
"""Row tasks: text-to-image, multimodal understanding, and plain language modelling."""


NUM_SHOWO_SPECIAL_TOKENS = 10
"""Show-o adds `<|pad|> <|soi|> <|eoi|> <|sov|> <|eov|> <|t2i|> <|mmu|> <|t2v|> <|v2v|> <|lvg|>` after the text."""


def showo_vocabulary_layout(
    text_vocab_size: int, codebook_size: int, mask_token_id: int | None = None, vocab_size: int | None = None
) -> dict:
    """The `UniF2aceConfig` vocabulary fields of Show-o's layout: text ids, the ten special tokens in Show-o's order,
    the image codes, then the mask token (the last id unless given)."""
    offset = text_vocab_size + NUM_SHOWO_SPECIAL_TOKENS
    vocab_size = offset + codebook_size + 1 if vocab_size is None else vocab_size
    return {
        "text_vocab_size": text_vocab_size,
        "pad_token_id": text_vocab_size,
        "soi_token_id": text_vocab_size + 1,
        "eoi_token_id": text_vocab_size + 2,
        "t2i_token_id": text_vocab_size + 5,
        "mmu_token_id": text_vocab_size + 6,
        "reserved_task_token_ids": [text_vocab_size + 7, text_vocab_size + 8, text_vocab_size + 9],
        "image_token_offset": offset,
        "codebook_size": codebook_size,
        "mask_token_id": vocab_size - 1 if mask_token_id is None else mask_token_id,
        "vocab_size": vocab_size,
    }


class UniF2aceVQConfig(PreTrainedConfig):
    r"""
    Configuration of [`UniF2aceVQModel`], a MAGVIT-v2 style image tokenizer: a taming-VQGAN conv encoder/decoder with
    lookup-free quantisation (LFQ). The defaults are the public MAGVIT-v2 tokenizer used by Show-o (256×256 images,
    16×16 codes, 2^13 codes).

    Args:
        image_size (`int`): side of the square images the tokenizer is trained for (any multiple of
            `downsample_factor` is accepted at run time).
        num_channels (`int`): image channels (3).
        base_channels (`int`): width of the first level (`ch`); level `i` has `base_channels * multiplier[i]`.
        encoder_channel_multipliers, decoder_channel_multipliers (`list[int]`): per-level width multipliers; both
            lists have the same length, and every level but the last halves (encoder) or doubles (decoder) the side.
        encoder_num_res_blocks, decoder_num_res_blocks (`list[int]`): residual blocks per level.
        attn_resolutions (`list[int]`): feature-map sides at which every residual block is followed by self-attention
            (the middle block always has one).
        codebook_dim (`int`): latent channels = bits per code (`z_channels`).
        codebook_size (`int`, *optional*): number of codes; derived as `2**codebook_dim` and checked if given.
        norm_num_groups (`int`): GroupNorm groups; every width must be divisible by it.
        norm_eps (`float`): GroupNorm epsilon.
        upsample_with_conv (`bool`): whether the decoder's 2× upsampling is followed by a 3×3 conv (MAGVIT-v2 and
            taming: yes). Without it the next residual block reads the repeated pixels directly, which saves the
            most expensive convolutions of a small decoder; such a tokenizer has no `up.{i}.upsample.conv` weights.
        patch_size (`int`): pixels per side folded into channels before the encoder's first conv (space-to-depth)
            and unfolded after the decoder's last (depth-to-space); 1 (MAGVIT-v2) folds nothing. A patch of 2 lets a
            tokenizer skip its full-resolution level, the most expensive per parameter, without losing a pixel: the
            first conv sees every pixel of the patch. It multiplies `downsample_factor` and changes the shapes of
            `encoder.conv_in` and `decoder.conv_out`.
    """

    model_type = "unif2ace_vq"

    image_size: int = 256
    num_channels: int = 3
    base_channels: int = 128
    encoder_channel_multipliers: list | None = None
    encoder_num_res_blocks: list | None = None
    decoder_channel_multipliers: list | None = None
    decoder_num_res_blocks: list | None = None
    attn_resolutions: list | None = None
    codebook_dim: int = 13
    codebook_size: int | None = None
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    upsample_with_conv: bool = True
    patch_size: int = 1

    def __post_init__(self, **kwargs):
        if self.encoder_channel_multipliers is None:
            self.encoder_channel_multipliers = [1, 2, 2, 4, 4]
        if self.encoder_num_res_blocks is None:
            self.encoder_num_res_blocks = [4, 3, 4, 3, 4]
        if self.decoder_channel_multipliers is None:
            self.decoder_channel_multipliers = [1, 1, 2, 2, 4]
        if self.decoder_num_res_blocks is None:
            self.decoder_num_res_blocks = [4, 4, 3, 4, 3]
        if self.attn_resolutions is None:
            self.attn_resolutions = []
        for field in (
            "encoder_channel_multipliers",
            "encoder_num_res_blocks",
            "decoder_channel_multipliers",
            "decoder_num_res_blocks",
            "attn_resolutions",
        ):
            setattr(self, field, [int(v) for v in getattr(self, field)])
        if self.codebook_size is None:
            self.codebook_size = 2**self.codebook_dim
        super().__post_init__(**kwargs)
        self._validate_vq()

    @property
    def num_levels(self) -> int:
        return len(self.encoder_channel_multipliers)

    @property
    def downsample_factor(self) -> int:
        """Pixels per code along each side."""
        return self.patch_size * 2 ** (self.num_levels - 1)

    @property
    def latent_size(self) -> int:
        """Codes per side at `image_size`."""
        return self.image_size // self.downsample_factor

    def _validate_vq(self) -> None:
        """Reject sizes that would fail deep inside the network or mislabel codes."""

        def fail(field: str, message: str) -> None:
            raise ValueError(f"UniF2aceVQConfig.{field}: {message}")

        if not isinstance(self.patch_size, int) or self.patch_size < 1:
            fail("patch_size", f"{self.patch_size!r} must be a positive integer")
        if not 1 <= self.codebook_dim <= 30:
            fail("codebook_dim", f"{self.codebook_dim} must be in [1, 30]")
        if self.codebook_size != 2**self.codebook_dim:
            fail(
                "codebook_size",
                f"{self.codebook_size} must be 2**codebook_dim = {2**self.codebook_dim} (lookup-free quantisation)",
            )
        for side in ("encoder", "decoder"):
            multipliers = getattr(self, f"{side}_channel_multipliers")
            blocks = getattr(self, f"{side}_num_res_blocks")
            if not multipliers or any(m < 1 for m in multipliers):
                fail(f"{side}_channel_multipliers", f"{multipliers} must be a non-empty list of positive integers")
            if len(blocks) != len(multipliers) or any(b < 1 for b in blocks):
                fail(
                    f"{side}_num_res_blocks",
                    f"{blocks} must give a positive block count for each of the {len(multipliers)} levels",
                )
        if len(self.decoder_channel_multipliers) != self.num_levels:
            fail(
                "decoder_channel_multipliers",
                f"has {len(self.decoder_channel_multipliers)} levels but the encoder has {self.num_levels}; the "
                "decoder must upsample by the factor the encoder downsamples",
            )
        widths = {self.base_channels * m for m in self.encoder_channel_multipliers + self.decoder_channel_multipliers}
        bad = sorted(w for w in widths if w % self.norm_num_groups)
        if self.base_channels < 1 or bad:
            fail("base_channels", f"widths {bad} are not divisible by norm_num_groups={self.norm_num_groups}")
        if self.image_size < 1 or self.image_size % self.downsample_factor:
            fail(
                "image_size",
                f"{self.image_size} is not divisible by the downsampling factor {self.downsample_factor}",
            )


class UniF2aceConfig(PreTrainedConfig):
    r"""
    Configuration of [`UniF2aceForConditionalGeneration`].

    Vocabulary layout (one embedding table): text tokens `[0, text_vocab_size)`, special tokens, image codes at
    `[image_token_offset, image_token_offset + codebook_size)` and the mask token (the last id for Show-o). The text
    tokenizer's bos/eos double as `<|sot|>`/`<|eot|>`, as in Show-o.

    Args:
        text_vocab_size (`int`): number of ids of the text tokenizer, its bos/eos included.
        pad_token_id, soi_token_id, eoi_token_id, t2i_token_id, mmu_token_id (`int`): special token ids.
        bos_token_id, eos_token_id (`int`): the text tokenizer's bos/eos (`<|sot|>`/`<|eot|>`).
        image_token_offset (`int`): id of image code 0.
        codebook_size (`int`): number of image codes.
        mask_token_id (`int`): the absorbing "mask" id of masked image generation.
        reserved_task_token_ids (`list[int]`): task tokens of the vocabulary this model does not serve (Show-o's
            `<|t2v|>`, `<|v2v|>`, `<|lvg|>`); a row that starts with one is rejected.
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads: backbone sizes.
        hidden_act (`str`): activation of the feed-forward branches (`gelu_new` for Phi).
        partial_rotary_factor (`float`): share of each head's dimensions that get rotary embeddings.
        rope_theta (`float`): rotary base.
        qk_layernorm (`bool`): per-head LayerNorm on queries and keys before RoPE (Show-o forces it on).
        token_moe_layers (`list[int]`): layers whose feed-forward branch is the grouped token-level MoE.
        token_moe_groups (`list[str]`): task groups, a subset of `("t2i", "mmu")`.
        num_shared_experts (`int`): always-on experts per group (stored as one MLP of their summed width).
        shared_expert_intermediate_size (`int`): width of one shared expert (defaults to `moe_intermediate_size`).
        num_routed_experts (`int`): routed experts per group.
        num_experts_per_tok (`int`): top-k of the token router.
        moe_intermediate_size (`int`): width of one routed expert.
        norm_topk_prob (`bool`): renormalise the top-k gate weights to sum to one.
        token_moe_balance_coefficients (`dict[str, float]`): per-group λ of the Switch balance loss.
        lm_task_group (`str`): group used by plain-text rows.
        sequence_moe_layers (`list[int]`): layers followed by the grouped sequence-level MoE.
        sequence_moe_experts (`dict[str, list[str]]`): expert kinds per task group.
        sequence_moe_top_k (`int`): experts chosen per sequence.
        sequence_moe_balance_coefficient (`float`): λ of the per-group sequence balance loss.
        resampler_num_heads (`int`): heads of the resampler cross-attention.
        noise_num_tokens (`int`): feature tokens drawn by the Noise expert.
        semantic_feature_dim, identity_feature_dim (`int`, *optional*): widths of external encoder features
            (e.g. CLIP, a face-ID network). `None` means the built-in source: the input embeddings of the condition
            tokens (the image for understanding rows).
        semantic_encoder (`dict`, *optional*): sizes of the frozen image encoder held by
            [`UniF2aceForConditionalGeneration`] as `semantic_encoder` (`semantic_encoder.py`): `{"width", "hidden",
            "image_size"}`. When set, the model computes `semantic_features` itself from the `pixel_values` of
            understanding rows, and `semantic_feature_dim` is its `hidden`.
        image_bit_embedding (`bool`): add to each image code's embedding a learned linear map of its lookup-free
            sign bits, so codes that share bits (similar latents) start out alike (`image_input_embedding.py`).
        image_position_embedding (`bool`): add a learned embedding of each image slot's place in the grid.
        semantic_input_embedding (`bool`): add a learned map of the semantic encoder's features to every image slot
            of understanding rows (needs `semantic_encoder` or `semantic_feature_dim`, and `num_image_tokens`).
        num_image_tokens (`int`, *optional*): image slots per image; required by `image_position_embedding`.
        vq_config ([`UniF2aceVQConfig`] or `dict`, *optional*): the image tokenizer held by
            [`UniF2aceForConditionalGeneration`] as `vq_model`; `None` means the checkpoint has no tokenizer. Its
            `codebook_size` must equal this config's `codebook_size`.
    """

    model_type = "unif2ace"
    sub_configs_defaults = {"vq_config": SubConfigSpec(UniF2aceVQConfig, optional=True)}
    keys_to_ignore_at_inference = ["cache"]

    # vocabulary
    text_vocab_size: int = 1000
    pad_token_id: int | None = 1000
    soi_token_id: int = 1001
    eoi_token_id: int = 1002
    t2i_token_id: int = 1003
    mmu_token_id: int = 1004
    bos_token_id: int | None = 0
    eos_token_id: int | None = 0
    image_token_offset: int = 1005
    codebook_size: int = 1024
    mask_token_id: int = 2029
    vocab_size: int = 2030
    reserved_task_token_ids: list | None = None

    # backbone
    hidden_size: int = 256
    intermediate_size: int = 1024
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    hidden_act: str = "gelu_new"
    layer_norm_eps: float = 1e-5
    partial_rotary_factor: float = 0.5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    qk_layernorm: bool = True
    attention_dropout: float = 0.0
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False

    # token-level MoE
    token_moe_layers: list | None = None
    token_moe_groups: list | None = None
    num_shared_experts: int = 1
    shared_expert_intermediate_size: int | None = None
    num_routed_experts: int = 8
    num_experts_per_tok: int = 4
    moe_intermediate_size: int = 128
    norm_topk_prob: bool = True
    token_moe_balance_coefficients: dict | None = None
    lm_task_group: str = "mmu"

    # sequence-level MoE
    sequence_moe_layers: list | None = None
    sequence_moe_experts: dict | None = None
    sequence_moe_top_k: int = 2
    sequence_moe_balance_coefficient: float = 0.01
    resampler_num_heads: int = 4
    noise_num_tokens: int = 16
    semantic_feature_dim: int | None = None
    identity_feature_dim: int | None = None
    semantic_encoder: dict | None = None

    # image-token input features (not in Show-o; off by default, zero-initialised when on)
    image_bit_embedding: bool = False
    image_position_embedding: bool = False
    semantic_input_embedding: bool = False
    num_image_tokens: int | None = None

    # image tokenizer (None: no tokenizer in this checkpoint)
    vq_config: UniF2aceVQConfig | dict | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.reserved_task_token_ids is None:
            self.reserved_task_token_ids = []
        if self.token_moe_layers is None:
            self.token_moe_layers = []
        if self.token_moe_groups is None:
            self.token_moe_groups = list(TOKEN_MOE_GROUPS)
        if self.shared_expert_intermediate_size is None:
            self.shared_expert_intermediate_size = self.moe_intermediate_size
        if self.token_moe_balance_coefficients is None:
            self.token_moe_balance_coefficients = {group: 0.01 for group in self.token_moe_groups}
        if self.sequence_moe_layers is None:
            self.sequence_moe_layers = []
        if self.sequence_moe_experts is None:
            self.sequence_moe_experts = {
                "t2i": ["copy", "copy", "zero", "noise"],
                "mmu": ["copy", "copy", "semantic", "identity"],
            }
        if isinstance(self.semantic_encoder, dict) and self.semantic_feature_dim is None:
            self.semantic_feature_dim = self.semantic_encoder.get("hidden")
        self.token_moe_layers = [int(i) for i in self.token_moe_layers]
        self.sequence_moe_layers = [int(i) for i in self.sequence_moe_layers]
        super().__post_init__(**kwargs)
        self._validate_unif2ace()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def image_token_range(self) -> tuple[int, int]:
        """Half-open id range `[start, stop)` of the image codes."""
        return self.image_token_offset, self.image_token_offset + self.codebook_size

    def non_text_token_ids(self) -> list[int]:
        """Ids an answer must never contain (padding, task/special tokens, image codes, mask): generation suppresses
        them, since one stray `<|soi|>` would open an image block in the cached sequence."""
        return [i for i in range(self.text_vocab_size, self.vocab_size) if i != self.eos_token_id]

    def _validate_unif2ace(self) -> None:
        """Reject layouts that would silently mis-route or mis-mask tokens."""

        def fail(field: str, message: str) -> None:
            raise ValueError(f"UniF2aceConfig.{field}: {message}")

        if self.hidden_size % self.num_attention_heads:
            fail(
                "hidden_size", f"{self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            fail(
                "num_key_value_heads",
                f"{self.num_key_value_heads} does not divide num_attention_heads={self.num_attention_heads}",
            )
        if not 0.0 < self.partial_rotary_factor <= 1.0 or int(self.head_dim * self.partial_rotary_factor) % 2:
            fail(
                "partial_rotary_factor",
                f"{self.partial_rotary_factor} must give an even number of rotary dims per head",
            )
        specials = {
            "pad_token_id": self.pad_token_id,
            "soi_token_id": self.soi_token_id,
            "eoi_token_id": self.eoi_token_id,
            "t2i_token_id": self.t2i_token_id,
            "mmu_token_id": self.mmu_token_id,
            "mask_token_id": self.mask_token_id,
        }
        start, stop = self.image_token_range
        if stop > self.vocab_size:
            fail("codebook_size", f"image codes [{start}, {stop}) do not fit in vocab_size={self.vocab_size}")
        seen: dict[int, str] = {}
        for name, value in specials.items():
            if value is None:
                if name == "pad_token_id":
                    continue
                fail(name, "is required")
            if not 0 <= value < self.vocab_size:
                fail(name, f"{value} is outside the vocabulary [0, {self.vocab_size})")
            if start <= value < stop:
                fail(name, f"{value} collides with the image codes [{start}, {stop})")
            if value in seen:
                fail(name, f"{value} is also {seen[value]}")
            seen[value] = name
        for i in self.reserved_task_token_ids:
            if i in seen:
                fail("reserved_task_token_ids", f"{i} is also {seen[i]}")
        for field in ("token_moe_layers", "sequence_moe_layers"):
            for layer in getattr(self, field):
                if not 0 <= layer < self.num_hidden_layers:
                    fail(field, f"layer {layer} does not exist (num_hidden_layers={self.num_hidden_layers})")
        if not self.token_moe_groups or any(g not in TOKEN_MOE_GROUPS for g in self.token_moe_groups):
            fail("token_moe_groups", f"{self.token_moe_groups} must be a non-empty subset of {TOKEN_MOE_GROUPS}")
        if self.token_moe_layers:
            if not 1 <= self.num_experts_per_tok <= self.num_routed_experts:
                fail(
                    "num_experts_per_tok",
                    f"{self.num_experts_per_tok} must be in [1, num_routed_experts={self.num_routed_experts}]",
                )
            missing = [g for g in self.token_moe_groups if g not in self.token_moe_balance_coefficients]
            if missing:
                fail("token_moe_balance_coefficients", f"no coefficient for group(s) {missing}")
        if self.vq_config is not None and self.vq_config.codebook_size != self.codebook_size:
            fail(
                "vq_config",
                f"the image tokenizer has {self.vq_config.codebook_size} codes but codebook_size={self.codebook_size}",
            )
        if self.semantic_encoder is not None:
            keys = {"width", "hidden", "image_size"}
            encoder = self.semantic_encoder
            if not isinstance(encoder, dict) or set(encoder) != keys:
                fail("semantic_encoder", f"expected a dict with exactly the keys {sorted(keys)}, got {encoder!r}")
            if any(isinstance(encoder[k], bool) or not isinstance(encoder[k], int) or encoder[k] < 1 for k in keys):
                fail("semantic_encoder", f"width, hidden and image_size must be positive integers, got {encoder!r}")
            if encoder["image_size"] % 16:
                fail("semantic_encoder", f"image_size must be a multiple of 16, got {encoder['image_size']}")
            if self.semantic_feature_dim not in (None, encoder["hidden"]):
                fail(
                    "semantic_feature_dim",
                    f"{self.semantic_feature_dim} differs from the semantic encoder's width {encoder['hidden']}",
                )
        if self.semantic_input_embedding and self.semantic_feature_dim is None:
            fail("semantic_input_embedding", "needs semantic features: set semantic_encoder (or semantic_feature_dim)")
        if self.image_bit_embedding and self.codebook_size & (self.codebook_size - 1):
            fail(
                "image_bit_embedding",
                f"needs a power-of-two codebook (sign bits), got codebook_size={self.codebook_size}",
            )
        slotted = [name for name in ("image_position_embedding", "semantic_input_embedding") if getattr(self, name)]
        if slotted and (not isinstance(self.num_image_tokens, int) or self.num_image_tokens < 1):
            fail("num_image_tokens", f"{slotted[0]} needs the number of image slots, got {self.num_image_tokens!r}")
        if self.lm_task_group not in TOKEN_MOE_GROUPS:
            fail("lm_task_group", f"{self.lm_task_group!r} must be one of {TOKEN_MOE_GROUPS}")
        if self.sequence_moe_layers:
            for group, kinds in self.sequence_moe_experts.items():
                if group not in TOKEN_MOE_GROUPS:
                    fail("sequence_moe_experts", f"unknown group {group!r}; expected groups from {TOKEN_MOE_GROUPS}")
                bad = [k for k in kinds if k not in SEQUENCE_EXPERT_KINDS]
                if bad:
                    fail(
                        "sequence_moe_experts",
                        f"group {group!r} has unknown expert kind(s) {bad}; known: {SEQUENCE_EXPERT_KINDS}",
                    )
                if not 1 <= self.sequence_moe_top_k <= len(kinds):
                    fail(
                        "sequence_moe_top_k",
                        f"{self.sequence_moe_top_k} must be in [1, {len(kinds)}] for group {group!r}",
                    )
            if self.hidden_size % self.resampler_num_heads:
                fail(
                    "resampler_num_heads", f"{self.resampler_num_heads} does not divide hidden_size={self.hidden_size}"
                )


__all__ = [
    "showo_vocabulary_layout",
    "UniF2aceConfig",
    "UniF2aceVQConfig",
    "TOKEN_MOE_GROUPS",
    "SEQUENCE_EXPERT_KINDS",
    "TASKS",
]
