"""UniF²ace for transformers: a Phi-style backbone with omni-attention, grouped token-level MoE and grouped
sequence-level MoE.

With both MoE levels switched off, the network is exactly transformers' `PhiForCausalLM(qk_layernorm=True)`, with the
same parameter names, so Show-o checkpoints convert by dropping their `showo.` prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_unif2ace import TASKS, UniF2aceConfig
from .image_input_embedding import UniF2aceImageInputEmbedding, ZeroInitLinear
from .image_tokenizer import UniF2aceVQModel
from .moe import (
    UniF2aceGatedResamplerExpert,
    UniF2aceMLP,
    UniF2aceRoutedExperts,
    UniF2aceSequenceMoE,
    UniF2aceTokenMoE,
)
from .omni_attention import (
    TASK_LM,
    TASK_MMU,
    build_omni_attention_mask,
    find_bidirectional_blocks,
    first_token_of_rows,
    infer_tasks,
    validate_4d_mask,
)
from .semantic_encoder import UniF2aceSemanticEncoder
from .strict_loading import check_loading_report, strict_from_pretrained

_CACHE_STATE_ATTRIBUTE = "unif2ace_state"
"""Per-generation state kept on the KV cache: row tasks, sequence routing and condition features from prefill."""


@dataclass
class UniF2aceModelOutputWithPast(BaseModelOutputWithPast):
    """
    aux_loss (`torch.FloatTensor`): sum over groups of λ times the layer-averaged balance term.
    balance_losses (`dict[str, torch.FloatTensor]`): unweighted layer-averaged balance terms, keyed
        `"token/<group>"` and `"sequence/<group>"`.
    """

    aux_loss: torch.FloatTensor | None = None
    balance_losses: dict | None = None


@dataclass
class UniF2aceCausalLMOutputWithPast(CausalLMOutputWithPast):
    """
    aux_loss (`torch.FloatTensor`): weighted MoE balance loss (already added to `loss` when labels are given).
    balance_losses (`dict[str, torch.FloatTensor]`): unweighted balance terms per MoE level and group.
    """

    aux_loss: torch.FloatTensor | None = None
    balance_losses: dict | None = None


class UniF2aceRotaryEmbedding(nn.Module):
    """Rotary embedding on the first `partial_rotary_factor` share of each head's dimensions (Phi's layout).

    The inverse frequencies are recomputed in float32 on every call (a few dozen numbers) instead of living in a
    buffer, so casting the model to bf16 cannot round them and shift every rotary angle.
    """

    def __init__(self, config: UniF2aceConfig):
        super().__init__()
        self.rotary_dim = int(config.head_dim * config.partial_rotary_factor)
        self.rope_theta = config.rope_theta

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        exponent = torch.arange(0, self.rotary_dim, 2, dtype=torch.float32, device=x.device) / self.rotary_dim
        inv_freq = 1.0 / (self.rope_theta**exponent)
        freqs = position_ids[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_partial_rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.shape[-1]` dims of `(B, heads, L, D)` states; pass the rest through."""
    rotary_dim = cos.shape[-1]
    rotary, passthrough = states[..., :rotary_dim], states[..., rotary_dim:]
    cos, sin = cos[:, None], sin[:, None]
    return torch.cat((rotary * cos + rotate_half(rotary) * sin, passthrough), dim=-1)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention; takes a boolean (True = attend) or an additive float mask."""
    groups = module.num_key_value_groups
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class UniF2aceAttention(nn.Module):
    """Multi-head attention with per-head q/k LayerNorm (before RoPE) and partial rotary embedding."""

    def __init__(self, config: UniF2aceConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim)
        self.dense = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size)
        if config.qk_layernorm:
            self.q_layernorm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)
            self.k_layernorm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        if self.config.qk_layernorm:
            query = self.q_layernorm(query)
            key = self.k_layernorm(key)
        cos, sin = position_embeddings
        query = apply_partial_rotary(query, cos, sin)
        key = apply_partial_rotary(key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
            **kwargs,
        )
        attn_output = self.dense(attn_output.reshape(*input_shape, -1).contiguous())
        return attn_output, attn_weights


@dataclass
class MoEContext:
    """What the MoE levels need to know about the batch, computed once per forward pass."""

    token_row_group: torch.LongTensor  # (B,) index into config.token_moe_groups
    sequence_row_group: torch.LongTensor  # (B,) index into sequence MoE groups, -1 = bypass
    token_valid: torch.Tensor  # (B, L) real tokens of this chunk
    condition_mask: torch.Tensor | None  # (B, L) condition tokens of this chunk (None: none here)
    features: dict  # kind -> (features, mask) for the resampler experts
    stored_routing: dict | None  # layer -> routing, recorded on the cache at prefill
    resampler_key_values: dict | None = None  # resampler expert -> feature keys/values, kept for one generation


class UniF2aceDecoderLayer(GradientCheckpointingLayer):
    """Phi's parallel block (attention and feed-forward read one LayerNorm), with the token MoE as the feed-forward
    branch where configured and the sequence MoE on the residual stream after it."""

    def __init__(self, config: UniF2aceConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = UniF2aceAttention(config, layer_idx)
        if layer_idx in config.token_moe_layers:
            self.token_moe = UniF2aceTokenMoE(config)
        else:
            self.mlp = UniF2aceMLP(config.hidden_size, config.intermediate_size, config.hidden_act)
        if layer_idx in config.sequence_moe_layers:
            self.sequence_moe = UniF2aceSequenceMoE(config)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        moe_context: MoEContext | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, dict, dict, torch.Tensor | None]:
        """Returns the new hidden states, token-MoE balance terms, sequence-MoE routing and balance terms, and the
        attention weights (eager attention only)."""
        residual = hidden_states
        normed = self.input_layernorm(hidden_states)
        attn_output, attn_weights = self.self_attn(normed, position_embeddings, attention_mask, cache=cache, **kwargs)
        token_balances: dict = {}
        if hasattr(self, "token_moe"):
            feed_forward, token_balances = self.token_moe(normed, moe_context.token_row_group, moe_context.token_valid)
        else:
            feed_forward = self.mlp(normed)
        hidden_states = self.resid_dropout(attn_output) + self.resid_dropout(feed_forward) + residual

        sequence_routing: dict = {}
        sequence_balances: dict = {}
        if hasattr(self, "sequence_moe"):
            if moe_context.stored_routing is not None:  # decoding: the routing made at prefill (empty for text rows)
                sequence_routing = moe_context.stored_routing.get(self.layer_idx, {})
            else:
                condition_mean = masked_mean(hidden_states, moe_context.condition_mask)
                sequence_routing, sequence_balances = self.sequence_moe.route(
                    condition_mean, moe_context.sequence_row_group
                )
            hidden_states = self.sequence_moe(
                hidden_states,
                moe_context.sequence_row_group,
                sequence_routing,
                moe_context.features,
                moe_context.resampler_key_values,
            )
        return hidden_states, token_balances, (sequence_routing, sequence_balances), attn_weights


def masked_mean(hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where `mask` is True (rows with no such position give zeros)."""
    weights = mask.to(hidden_states.dtype)[..., None]
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class UniF2acePreTrainedModel(PreTrainedModel):
    config_class = UniF2aceConfig
    config: UniF2aceConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["UniF2aceDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    # Every Auto class a saved folder should answer with trust_remote_code=True (only the saved object's own
    # class is written by transformers; see save_pretrained).
    _remote_auto_map = {
        "AutoModel": "modeling_unif2ace.UniF2aceModel",
        "AutoModelForCausalLM": "modeling_unif2ace.UniF2aceForConditionalGeneration",
        "AutoModelForImageTextToText": "modeling_unif2ace.UniF2aceForConditionalGeneration",
    }

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, UniF2aceRoutedExperts):
            init.normal_(module.up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
            init.zeros_(module.up_bias)
            init.zeros_(module.down_bias)
        elif isinstance(module, UniF2aceGatedResamplerExpert):
            init.zeros_(module.gate_logits)
        elif isinstance(module, ZeroInitLinear):
            init.zeros_(module.weight)
        elif isinstance(module, UniF2aceImageInputEmbedding) and module.slot_embedding is not None:
            init.zeros_(module.slot_embedding)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, strict (`strict_loading.py`): safetensors only, a truncated file or a folder
        without config.json named, a Hub download's bytes checked against its ETags."""
        return strict_from_pretrained(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)

    @staticmethod
    def _finalize_model_loading(model, load_config, loading_info):
        """transformers only warns about missing weights and re-initialises them at random; for our classes a
        checkpoint that does not fill the model (or, saved from the same class, overfills it) is an error, and a
        shape mismatch names the weight."""
        loading_info = check_loading_report(model, load_config, loading_info, PreTrainedModel._finalize_model_loading)
        if getattr(model, "is_quantized", False) and not load_config.ignore_mismatched_sizes:
            UniF2acePreTrainedModel._check_quantized_linear_shapes(model, load_config)
        return loading_info

    @staticmethod
    def _check_quantized_linear_shapes(model, load_config) -> None:
        """transformers skips the shape check for weights it quantises while loading (their stored shape is the
        quantised one), so a wrong-shaped checkpoint would load silently; compare each quantised linear layer's
        logical weight shape (8-bit: the int8 tensor; 4-bit: its quant state) with the config's."""
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            quant_state = getattr(module.weight, "quant_state", None)
            shape = tuple(quant_state.shape) if quant_state is not None else tuple(module.weight.shape)
            expected = (module.out_features, module.in_features)
            if shape != expected:
                raise ValueError(
                    f"{load_config.pretrained_model_name_or_path}: weight {name + '.weight'!r} has shape {shape} in "
                    f"the checkpoint but the config asks for {expected}; the config does not match the weights."
                )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Record every Auto class in `auto_map` so the folder also loads with trust_remote_code=True where this
        package is not installed."""
        if getattr(self, "_auto_class", None) is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoConfig", "configuration_unif2ace.UniF2aceConfig")
            for auto_class, reference in self._remote_auto_map.items():
                auto_map.setdefault(auto_class, reference)
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class UniF2aceModel(UniF2acePreTrainedModel):
    """The backbone: embeddings, decoder layers with omni-attention and both MoE levels, final LayerNorm."""

    def __init__(self, config: UniF2aceConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.image_input_embedding = (
            UniF2aceImageInputEmbedding(config)
            if config.image_bit_embedding or config.image_position_embedding or config.semantic_input_embedding
            else None
        )
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        self.layers = nn.ModuleList([UniF2aceDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary_emb = UniF2aceRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        tasks: list[str] | str | torch.Tensor | None = None,
        semantic_features: torch.Tensor | None = None,
        identity_features: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> UniF2aceModelOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`): tokens (text, special, image codes, mask).
            attention_mask (`torch.Tensor`): 2-D padding mask `(B, past + L)` (1 = token), from which the omni-attention
                mask is built; or a ready 4-D mask `(B, 1, L, past + L)`, boolean (True = attend) or additive float.
            position_ids (`torch.LongTensor`): defaults to positions counted over non-padding tokens.
            cache (`Cache`): transformers KV cache; created when `use_cache` is set.
            tasks (`list[str]`): `"t2i"`, `"mmu"` or `"lm"` per row; by default read from each row's first token.
            semantic_features, identity_features (`torch.Tensor` of shape `(B, N, D)`): external encoder features
                for the sequence MoE's Semantic and Identity experts (required when the config sets their dims).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Specify exactly one of input_ids or inputs_embeds.")
        if "past_key_values" in kwargs:
            raise TypeError("UniF2aceModel takes the KV cache as `cache=` (transformers v5), not `past_key_values=`.")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if self.gradient_checkpointing and self.training and use_cache:
            use_cache = False
        if inputs_embeds is None:
            self._check_token_ids(input_ids)
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, length = inputs_embeds.shape[:2]
        device = inputs_embeds.device

        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        state = getattr(cache, _CACHE_STATE_ATTRIBUTE, None) if cache is not None else None
        if past_length == 0:
            state = None

        padding_2d, mask_4d = self._split_attention_mask(attention_mask, input_ids, batch_size, length, past_length)
        chunk_valid = padding_2d[:, past_length:]
        if position_ids is None:
            position_ids = (padding_2d.long().cumsum(dim=1) - 1).clamp(min=0)[:, past_length:]

        task_codes = self._resolve_tasks(input_ids, chunk_valid, tasks, state, batch_size, device)
        if self.image_input_embedding is not None and input_ids is not None:
            inputs_embeds = inputs_embeds + self.image_input_embedding(
                input_ids, chunk_valid, task_codes, inputs_embeds.dtype, semantic_features
            )
        if mask_4d is None:
            if input_ids is not None:
                mask_4d = build_omni_attention_mask(input_ids, self.config, padding_2d, past_length, task_codes)
            else:
                causal = torch.ones(length, past_length + length, dtype=torch.bool, device=device).tril(past_length)
                mask_4d = (causal[None] & padding_2d[:, None, :])[:, None]
        moe_context = self._moe_context(
            input_ids,
            inputs_embeds,
            chunk_valid,
            task_codes,
            state,
            semantic_features,
            identity_features,
            cache_in_use=cache is not None,
        )

        hidden_states = self.embed_dropout(inputs_embeds)
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        token_balances: dict[str, list] = {}
        sequence_balances: dict[str, list] = {}
        new_routing = {}
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, layer_token_balances, (routing, layer_sequence_balances), attn_weights = layer(
                hidden_states,
                attention_mask=mask_4d,
                position_embeddings=position_embeddings,
                cache=cache,
                moe_context=moe_context,
                output_attentions=output_attentions,
            )
            for name, value in layer_token_balances.items():
                token_balances.setdefault(name, []).append(value)
            for name, value in layer_sequence_balances.items():
                sequence_balances.setdefault(name, []).append(value)
            if hasattr(layer, "sequence_moe"):
                new_routing[layer.layer_idx] = routing
            if output_attentions:
                all_attentions += (attn_weights,)
        hidden_states = self.final_layernorm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        if cache is not None and state is None:
            setattr(
                cache,
                _CACHE_STATE_ATTRIBUTE,
                {
                    "tasks": task_codes,
                    "routing": new_routing,
                    "features": moe_context.features,
                    "resampler_key_values": moe_context.resampler_key_values,
                },
            )
        aux_loss, balance_losses = self._aux_loss(token_balances, sequence_balances, device)
        return UniF2aceModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            aux_loss=aux_loss,
            balance_losses=balance_losses,
        )

    def _check_token_ids(self, input_ids: torch.LongTensor) -> None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected shape (batch, length), got {tuple(input_ids.shape)}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            bad = input_ids[(input_ids < 0) | (input_ids >= self.config.vocab_size)][0]
            raise ValueError(f"input_ids: token id {int(bad)} is outside the vocabulary [0, {self.config.vocab_size})")

    def _split_attention_mask(self, attention_mask, input_ids, batch_size, length, past_length):
        """Return the 2-D padding mask over `past + L` and the user's 4-D mask if one was given."""
        device = self.embed_tokens.weight.device
        total = past_length + length
        if attention_mask is None:
            return torch.ones(batch_size, total, dtype=torch.bool, device=device), None
        if attention_mask.dim() == 4:
            validate_4d_mask(attention_mask, batch_size, length, total)
            if input_ids is not None and self.config.pad_token_id is not None:
                chunk = input_ids != self.config.pad_token_id
                padding = torch.cat(
                    [torch.ones(batch_size, past_length, dtype=torch.bool, device=device), chunk], dim=1
                )
            else:
                padding = torch.ones(batch_size, total, dtype=torch.bool, device=device)
            return padding, attention_mask
        if attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch_size, total):
            raise ValueError(
                f"attention_mask: expected a 2-D padding mask of shape ({batch_size}, {total}) (batch, past + "
                f"query length) or a 4-D mask, got {tuple(attention_mask.shape)}"
            )
        return attention_mask.bool(), None

    def _resolve_tasks(self, input_ids, chunk_valid, tasks, state, batch_size, device) -> torch.LongTensor:
        if tasks is not None or (input_ids is not None and state is None):
            return infer_tasks(
                input_ids if input_ids is not None else chunk_valid.long(), chunk_valid, self.config, tasks
            )
        if state is not None:
            return state["tasks"]
        return torch.full((batch_size,), TASK_LM, dtype=torch.long, device=device)

    def _moe_context(
        self,
        input_ids,
        inputs_embeds,
        chunk_valid,
        task_codes,
        state,
        semantic_features,
        identity_features,
        cache_in_use: bool = False,
    ):
        config = self.config
        # Lookup tables indexed by task code (TASKS order), so no per-row Python loop or host sync.
        token_groups = list(config.token_moe_groups)
        token_group_of_task = [
            token_groups.index(group) if group in token_groups else 0
            for group in ("t2i" if t == "t2i" else "mmu" if t == "mmu" else config.lm_task_group for t in TASKS)
        ]
        sequence_groups = list(config.sequence_moe_experts)
        sequence_group_of_task = [sequence_groups.index(t) if t in sequence_groups else -1 for t in TASKS]
        device = inputs_embeds.device
        token_row_group = torch.tensor(token_group_of_task, device=device)[task_codes]
        sequence_row_group = torch.tensor(sequence_group_of_task, device=device)[task_codes]
        if not config.sequence_moe_layers:
            return MoEContext(token_row_group, sequence_row_group, chunk_valid, None, {}, None)
        if state is not None:
            features = state["features"]
            condition_mask = None
        else:
            condition_mask = self._condition_mask(input_ids, chunk_valid, task_codes)
            features = {}
            for kind, external, dim in (
                ("semantic", semantic_features, config.semantic_feature_dim),
                ("identity", identity_features, config.identity_feature_dim),
            ):
                if dim is None:
                    features[kind] = (inputs_embeds, condition_mask)
                elif external is not None:
                    if external.dim() != 3 or external.shape[0] != inputs_embeds.shape[0] or external.shape[-1] != dim:
                        raise ValueError(
                            f"{kind}_features: expected shape ({inputs_embeds.shape[0]}, N, {dim}), got {tuple(external.shape)}"
                        )
                    features[kind] = (external, None)
                else:
                    uses_kind = any(
                        kind in config.sequence_moe_experts.get(TASKS[t], []) for t in task_codes.unique().tolist()
                    )
                    if uses_kind:
                        raise ValueError(
                            f"{kind}_features: this model's {kind} expert reads external features of width {dim}; "
                            f"pass {kind}_features=(batch, tokens, {dim}) from the {kind} encoder."
                        )
        stored_routing = state["routing"] if state is not None else None
        if state is not None:
            key_values = state["resampler_key_values"]
        else:
            key_values = {} if cache_in_use else None
        return MoEContext(
            token_row_group, sequence_row_group, chunk_valid, condition_mask, features, stored_routing, key_values
        )

    def _condition_mask(self, input_ids, chunk_valid, task_codes) -> torch.Tensor:
        """Tokens the sequence router reads: the text before `<|soi|>` for t2i rows, the image codes between
        `<|soi|>` and `<|eoi|>` for mmu rows (all real tokens where a row has no image block)."""
        if input_ids is None:
            return chunk_valid
        _, soi_index, eoi_index = find_bidirectional_blocks(input_ids, chunk_valid, self.config, task_codes)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        has_block = (soi_index >= 0)[:, None]
        text_part = positions < soi_index[:, None]
        image_part = (positions > soi_index[:, None]) & (positions < eoi_index[:, None])
        is_mmu = (task_codes == TASK_MMU)[:, None]
        condition = torch.where(has_block, torch.where(is_mmu, image_part, text_part), torch.ones_like(text_part))
        return condition & chunk_valid

    def _aux_loss(self, token_balances, sequence_balances, device) -> tuple[torch.Tensor | None, dict]:
        if not token_balances and not sequence_balances:
            return None, {}
        balance_losses = {}
        aux_loss = torch.zeros((), device=device)
        for name, values in token_balances.items():
            balance_losses[f"token/{name}"] = torch.stack(values).mean()
            aux_loss = aux_loss + self.config.token_moe_balance_coefficients[name] * balance_losses[f"token/{name}"]
        for name, values in sequence_balances.items():
            balance_losses[f"sequence/{name}"] = torch.stack(values).mean()
            aux_loss = aux_loss + self.config.sequence_moe_balance_coefficient * balance_losses[f"sequence/{name}"]
        return aux_loss, balance_losses


class UniF2aceForConditionalGeneration(UniF2acePreTrainedModel, GenerationMixin):
    """UniF²ace with its language/image-code head: next-token generation for understanding, and the per-position
    logits that masked image generation samples from. When `config.vq_config` is set it also holds the image
    tokenizer as `vq_model` (saved and loaded with the rest, strictly), so one folder serves every pipeline."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: UniF2aceConfig):
        super().__init__(config)
        self.model = UniF2aceModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.vq_model = UniF2aceVQModel(config.vq_config) if config.vq_config is not None else None
        self.semantic_encoder = (
            UniF2aceSemanticEncoder(**config.semantic_encoder) if config.semantic_encoder is not None else None
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def codebook_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Float32 logits over the image codes only (`(..., codebook_size)`): what masked image generation samples
        from, at a fraction of the full-vocabulary head's cost."""
        start, stop = self.config.image_token_range
        weight = self.lm_head.weight[start:stop]
        bias = self.lm_head.bias[start:stop] if self.lm_head.bias is not None else None
        return nn.functional.linear(hidden_states, weight, bias).float()

    def _placeholder_mask(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """`<mask>` placeholders of mmu image blocks (the ones `pixel_values` fill)."""
        config = self.config
        placeholders = input_ids == config.mask_token_id
        if input_ids.shape[1] > 1:
            row_is_mmu = first_token_of_rows(input_ids, input_ids != config.pad_token_id) == config.mmu_token_id
            placeholders &= row_is_mmu[:, None]
        return placeholders

    def fill_image_placeholders(self, input_ids: torch.LongTensor, pixel_values: torch.FloatTensor) -> torch.LongTensor:
        """Replace the `<mask>` placeholders of mmu image blocks with the codes of `pixel_values` (one image per row
        that has placeholders, in row order). Returns `input_ids` unchanged when there are none (decoding steps)."""
        return self._encode_images(input_ids, pixel_values, with_semantic_features=False)[0]

    def _encode_images(
        self, input_ids: torch.LongTensor, pixel_values: torch.FloatTensor, with_semantic_features: bool
    ) -> tuple[torch.LongTensor, torch.Tensor | None]:
        """`input_ids` with the placeholders filled, and (when asked) the semantic encoder's `(B, 1, hidden)` tokens,
        zeros for rows without an image (their groups do not read them). Decoding steps carry no placeholders: the
        ids come back unchanged with no features (the cached state holds the prefill's)."""
        config = self.config
        placeholders = self._placeholder_mask(input_ids)
        rows = placeholders.any(dim=1)
        if not bool(rows.any()):
            return input_ids, None
        if self.vq_model is None:
            raise ValueError(
                "pixel_values: this model has no image tokenizer (config.vq_config is None); pass image codes in input_ids"
            )
        if pixel_values.shape[0] != int(rows.sum()):
            raise ValueError(
                f"pixel_values: got {pixel_values.shape[0]} images for {int(rows.sum())} rows with image placeholders"
            )
        codes = self.vq_model.encode(pixel_values.to(device=self.vq_model.device, dtype=self.vq_model.dtype))
        counts = placeholders[rows].sum(dim=1)
        if bool((counts != codes.shape[1]).any()):
            raise ValueError(
                f"pixel_values: the image tokenizer makes {codes.shape[1]} codes per image but the prompt has "
                f"{counts.tolist()} placeholders; build prompts with num_image_tokens={codes.shape[1]}"
            )
        filled = input_ids.clone()
        filled[placeholders] = (codes.to(input_ids.device) + config.image_token_offset).reshape(-1)
        features = None
        if with_semantic_features:
            encoded = self.semantic_encoder(pixel_values)
            features = encoded.new_zeros(input_ids.shape[0], *encoded.shape[1:])
            features[rows.to(features.device)] = encoded
        return filled, features

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        tasks: list[str] | str | torch.Tensor | None = None,
        semantic_features: torch.Tensor | None = None,
        identity_features: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> UniF2aceCausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(B, L)`): next-token targets (-100 = ignored); the loss is the shifted
            cross-entropy plus the weighted MoE balance loss.
        pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)` in [-1, 1]): images of understanding rows. Where
            `input_ids` holds `<mask>` placeholders in an mmu image block (as `UniF2aceProcessor` builds them), they
            are replaced by the image's codes, and a model with a `semantic_encoder` computes `semantic_features` from
            them. Decoding steps carry no placeholders, so the image is encoded once.
        logits_to_keep (`int` or `torch.Tensor`): keep only the last N positions (int), or the given positions
            (1-D tensor), when computing logits.

        Other arguments: see [`UniF2aceModel.forward`]. Logits are returned in float32.
        """
        if pixel_values is not None and input_ids is not None:
            wanted = self.semantic_encoder is not None and semantic_features is None
            input_ids, encoded = self._encode_images(input_ids, pixel_values, with_semantic_features=wanted)
            if encoded is not None:
                semantic_features = encoded
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            tasks=tasks,
            semantic_features=semantic_features,
            identity_features=identity_features,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden_states = hidden_states[:, -logits_to_keep:] if logits_to_keep > 0 else hidden_states
        else:
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states).float()

        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels: expected shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
            shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
            shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
            loss = nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
            if outputs.aux_loss is not None:
                loss = loss + outputs.aux_loss
        result = UniF2aceCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            aux_loss=outputs.aux_loss,
            balance_losses=outputs.balance_losses,
        )
        return result if return_dict is not False else result.to_tuple()


__all__ = [
    "UniF2acePreTrainedModel",
    "UniF2aceModel",
    "UniF2aceForConditionalGeneration",
    "UniF2aceModelOutputWithPast",
    "UniF2aceCausalLMOutputWithPast",
]
