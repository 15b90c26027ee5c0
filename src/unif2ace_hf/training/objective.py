"""The joint training objective as a module, so accelerate/DDP wrap the whole loss computation.

Logits are computed only where a loss needs them: the full-vocabulary head at understanding answer positions
(shifted, next-token) and the codebook-only head at masked text-to-image positions (in place, D3Diff). The module
returns *sums* over tokens; the trainer divides by token counts gathered over all processes and micro-batches,
so 2 processes × batch b give the gradient of 1 process × batch 2b.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modeling.losses import d3diff_loss
from ..modeling.omni_attention import build_omni_attention_mask, segment_visibility


class TrainingObjective(nn.Module):
    """Wraps a `UniF2aceForConditionalGeneration` (or a peft model around one)."""

    def __init__(self, model: nn.Module, d3diff_alpha: float = 0.01, masking_schedule: str = "cosine"):
        super().__init__()
        self.model = model
        self.d3diff_alpha = d3diff_alpha
        self.masking_schedule = masking_schedule

    @property
    def core(self) -> nn.Module:
        """The UniF²ace model itself (peft injects its layers in place, so they run through it)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        labels: torch.LongTensor,
        image_labels: torch.LongTensor,
        mask_ratio: torch.Tensor,
        segment_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        semantic_features: torch.Tensor | None = None,
        **_: object,
    ) -> dict[str, torch.Tensor]:
        core = self.core
        if segment_ids is not None:
            # packed understanding rows: the omni-attention mask, narrowed so each segment sees the prefix and itself
            omni = build_omni_attention_mask(input_ids, core.config, attention_mask)
            attention_mask = omni & segment_visibility(segment_ids)
        outputs = core.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            semantic_features=semantic_features,
            use_cache=False,
        )
        hidden = outputs.last_hidden_state

        targets = labels[:, 1:]
        answer = targets != -100
        logits = core.lm_head(hidden[:, :-1][answer]).float()
        mmu_sum = nn.functional.cross_entropy(logits, targets[answer], reduction="sum")

        masked = image_labels != -100
        code_logits = core.codebook_logits(hidden[masked])
        ratio = mask_ratio.to(hidden.device, torch.float32)[:, None].expand(image_labels.shape)[masked]
        d3diff = d3diff_loss(
            code_logits,
            image_labels[masked],
            ratio,
            self.d3diff_alpha,
            schedule=self.masking_schedule,
            reduction="sum",
        )
        aux = outputs.aux_loss if outputs.aux_loss is not None else hidden.new_zeros((), dtype=torch.float32)
        return {"mmu_sum": mmu_sum, "t2i_sum": d3diff.loss, "t2i_mask_sum": d3diff.mask_loss, "aux": aux.float()}


__all__ = ["TrainingObjective"]
