"""Packed understanding rows: several questions share one image prefix and give exactly the losses of separate rows."""

from __future__ import annotations

import pytest
import torch

from tiny_models import tiny_checkpoint
from unif2ace_hf import UniF2aceMaskGITScheduler
from unif2ace_hf.modeling.omni_attention import segment_visibility
from unif2ace_hf.training.collator import TrainingCollator
from unif2ace_hf.training.objective import TrainingObjective
from unif2ace_hf.training.recipes import load_recipe

PAIRS = [
    ("What colour is her hair?", "red"),
    (None, "a smiling woman with red hair"),
    ("Is he wearing glasses?", "yes"),
]


@pytest.fixture(scope="module")
def checkpoint():
    return tiny_checkpoint()


def qa_rows(count: int, questions: int) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    return [
        {
            "codes": torch.randint(0, 64, (64,), generator=generator).tolist(),
            "caption": "an old man with a grey beard",
            "qa": [{"question": f"Question {n}?", "answer": f"answer {n}"} for n in range(questions)],
            "_epoch": 0,
            "_index": index,
        }
        for index in range(count)
    ]


def per_token_losses(objective: TrainingObjective, batch: dict) -> torch.Tensor:
    """Cross-entropy of every labelled understanding token, in row-major order."""
    core = objective.core
    kwargs = {}
    attention_mask = batch["attention_mask"]
    if "segment_ids" in batch:
        from unif2ace_hf.modeling.omni_attention import build_omni_attention_mask

        attention_mask = build_omni_attention_mask(batch["input_ids"], core.config, attention_mask)
        attention_mask = attention_mask & segment_visibility(batch["segment_ids"])
        kwargs["position_ids"] = batch["position_ids"]
    hidden = core.model(input_ids=batch["input_ids"], attention_mask=attention_mask, use_cache=False, **kwargs)
    targets = batch["labels"][:, 1:]
    answer = targets != -100
    logits = core.lm_head(hidden.last_hidden_state[:, :-1][answer]).float()
    return torch.nn.functional.cross_entropy(logits, targets[answer], reduction="none")


def test_a_packed_row_gives_the_losses_of_separate_rows(checkpoint):
    model, processor = checkpoint
    codes = torch.randint(0, 64, (2, 64), generator=torch.Generator().manual_seed(0))
    packed = processor.build_packed_mmu_training_inputs(codes, [PAIRS, PAIRS[:2]])
    separate = processor.build_mmu_training_inputs(
        codes[[0, 0, 0, 1, 1]],
        [q for q, _ in PAIRS] + [q for q, _ in PAIRS[:2]],
        [a for _, a in PAIRS] + [a for _, a in PAIRS[:2]],
    )
    # the same supervised tokens, in the same order
    assert torch.equal(packed["labels"][packed["labels"] != -100], separate["labels"][separate["labels"] != -100])
    objective = TrainingObjective(model).eval()  # eval: the noise expert reads zeros, so both runs are deterministic
    with torch.no_grad():
        packed_losses = per_token_losses(objective, dict(packed))
        separate_losses = per_token_losses(objective, dict(separate))
    torch.testing.assert_close(packed_losses, separate_losses, rtol=1e-4, atol=1e-5)
    # and the objective's own packed path sums to the same total
    zeros = torch.full_like(packed["labels"], -100)
    with torch.no_grad():
        parts = objective(**packed, image_labels=zeros, mask_ratio=torch.zeros(2))
    torch.testing.assert_close(parts["mmu_sum"], separate_losses.sum(), rtol=1e-4, atol=1e-4)


def test_without_the_segment_mask_segments_would_leak(checkpoint):
    """The check above can fail: attending across segments changes the losses of later segments."""
    model, processor = checkpoint
    codes = torch.randint(0, 64, (1, 64), generator=torch.Generator().manual_seed(0))
    packed = dict(processor.build_packed_mmu_training_inputs(codes, [PAIRS]))
    separate = processor.build_mmu_training_inputs(codes[[0, 0, 0]], [q for q, _ in PAIRS], [a for _, a in PAIRS])
    objective = TrainingObjective(model).eval()
    leaky = {key: value for key, value in packed.items() if key != "segment_ids"}
    with torch.no_grad():
        leaky_losses = per_token_losses(objective, leaky)
        separate_losses = per_token_losses(objective, dict(separate))
    first = len(processor.tokenizer(" red", add_special_tokens=False)["input_ids"]) + 1
    torch.testing.assert_close(leaky_losses[:first], separate_losses[:first], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(leaky_losses[first:], separate_losses[first:], rtol=1e-3, atol=1e-4)


def test_segments_restart_their_positions_after_the_image(checkpoint):
    _, processor = checkpoint
    codes = torch.zeros(1, 64, dtype=torch.long)
    batch = processor.build_packed_mmu_training_inputs(codes, [PAIRS])
    prefix = 64 + 3  # <|mmu|><|soi|> codes <|eoi|>
    segments, positions = batch["segment_ids"][0], batch["position_ids"][0]
    assert segments[: prefix + 1].eq(0).all()  # the prefix, <|sot|> included
    assert segments.unique().tolist() == [0, 1, 2, 3]
    for number in (1, 2, 3):
        assert positions[segments == number][0] == prefix + 1
    visible = segment_visibility(batch["segment_ids"])[0, 0]
    second = (segments == 2).nonzero()[0, 0]
    assert visible[second, :prefix].all()
    assert not visible[second, segments == 1].any()


def test_the_collator_packs_distinct_questions_and_keeps_row_order(checkpoint):
    _, processor = checkpoint
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=processor.mask_token_id, codebook_size=64)
    packing = TrainingCollator(processor, scheduler, seed=3, questions_per_image=4, caption_qa_fraction=0.0)
    batch = packing(qa_rows(16, questions=6))
    mmu_rows = batch["mask_ratio"] == 0
    assert 0 < int(mmu_rows.sum()) < 16
    for row in mmu_rows.nonzero().squeeze(1):
        assert batch["segment_ids"][row].max() == 4
    # t2i rows are a single segment with plain positions
    t2i = ~mmu_rows
    assert batch["segment_ids"][t2i].eq(0).all()
    # each row is packed the same way alone as in the batch (per-row random streams)
    rows = qa_rows(16, questions=6)
    alone = [packing([row]) for row in rows]
    alone_mmu = [b["input_ids"][0] for b in alone if b["mask_ratio"][0] == 0]
    in_batch = [batch["input_ids"][row][batch["attention_mask"][row].bool()] for row in mmu_rows.nonzero().squeeze(1)]
    assert len(alone_mmu) == len(in_batch)
    for single, batched in zip(alone_mmu, in_batch):
        assert torch.equal(single, batched)
    one = TrainingCollator(processor, scheduler, seed=3)
    assert "segment_ids" not in one(qa_rows(4, questions=6))


def test_questions_per_image_is_checked_by_name(checkpoint):
    _, processor = checkpoint
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=processor.mask_token_id, codebook_size=64)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="questions_per_image"):
            TrainingCollator(processor, scheduler, questions_per_image=bad)
    with pytest.raises(ValueError, match="data.questions_per_image"):
        load_recipe("tiny-synthface", {"data": {"questions_per_image": 0}})
    with pytest.raises(ValueError, match="conversations\\[1\\]"):
        processor.build_packed_mmu_training_inputs(torch.zeros(2, 64, dtype=torch.long), [PAIRS, []])


def test_the_trainer_trains_on_packed_rows(tmp_path):
    """End to end through `unif2ace train`: the recipe key reaches the collator and the loss falls."""
    import json

    import yaml

    from test_training import TINY_RECIPE, train
    from unif2ace_hf.data.synthface import write_synthface

    data = tmp_path / "synthface"
    write_synthface(data, num_images=40, size=64, seed=2)
    recipe = tmp_path / "packed.yaml"
    settings = {**TINY_RECIPE, "data": {"questions_per_image": 3, "caption_qa_fraction": 0.5, "t2i_fraction": 0.25}}
    recipe.write_text(yaml.safe_dump(settings))
    output = tmp_path / "run"
    assert train(recipe, data, output, "--max-steps", "24") == 0
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    losses = [row["mmu_loss"] for row in rows if "mmu_loss" in row and "step" in row]
    assert len(losses) >= 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert (output / "final" / "model.safetensors").is_file()
