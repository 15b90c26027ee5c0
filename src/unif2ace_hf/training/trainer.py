"""The accelerate training loop for joint understanding + generation (recipes from `recipes.py`).

Determinism, by construction: the row order is a function of (seed, epoch) and every row's noise a function of
(seed, epoch, row), so the batch of any step is known without replaying the run; a checkpoint stores the model,
optimizer, LR schedule, RNG states and the step, and resuming gives the same next losses as not stopping.
Data parallelism: a step's global micro-batch of `batch_size × processes` rows is split between processes, and the
losses are normalised by token counts summed over processes and micro-batches, so the update does not depend on how
the rows are split (the MoE balance losses, batch statistics by nature, are averaged instead).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import DistributedType, set_seed
from datasets import Dataset
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from ..pipelines.pipeline_unif2ace import SCHEDULER_SUBFOLDER, UniF2acePipeline
from .checkpointing import begin_checkpoint, commit_checkpoint, find_latest, temporary_folder
from .codes_cache import CODES_COLUMN, SEMANTIC_COLUMN, add_image_codes, add_semantic_features
from .collator import TrainingCollator, row_seed
from .model_setup import build_model, check_model_section, load_training_data, resolve_init_from
from .objective import TrainingObjective
from .optimizers import make_training_optimizers

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
STATE_FILE = "trainer_state.json"
FINAL_FOLDER = "final"
PART_NAMES = ("loss", "mmu_loss", "t2i_loss", "t2i_mask_loss", "aux_loss")


class RowOrder:
    """Which dataset rows make up global micro-batch k: a fresh permutation per epoch, drop-last."""

    def __init__(self, num_rows: int, global_batch: int, seed: int):
        if num_rows < global_batch:
            raise ValueError(
                f"data: the training split has {num_rows} rows, fewer than one global batch "
                f"(batch_size × processes = {global_batch})"
            )
        self.num_rows, self.global_batch, self.seed = num_rows, global_batch, seed
        self.batches_per_epoch = num_rows // global_batch
        self._epoch, self._permutation = -1, None

    def rows(self, micro_step: int) -> tuple[int, list[int]]:
        epoch, batch = divmod(micro_step, self.batches_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(row_seed(self.seed, epoch, -1))
            self._epoch, self._permutation = epoch, torch.randperm(self.num_rows, generator=generator).tolist()
        start = batch * self.global_batch
        return epoch, self._permutation[start : start + self.global_batch]


class MicroBatches(torch.utils.data.Dataset):
    """Micro-batches `first`, `first + 1`, … of a run, for a DataLoader whose workers collate ahead of the step.

    Item i is `make_batch(first + i)`, the batch the training loop would build itself, so prefetching changes no
    step's data; forked workers inherit `make_batch` (and the trainer behind it) without pickling.
    """

    def __init__(self, make_batch, first: int, count: int):
        self.make_batch, self.first, self.count = make_batch, first, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.make_batch(self.first + index)


def cosine_with_warmup(warmup_steps: int, max_steps: int, min_ratio: float, time_progress=None):
    """LR multiplier: linear warm-up to 1, then cosine down to `min_ratio` at `max_steps`.

    `time_progress` (a callable giving the spent share of a wall-clock budget) lets a time-budgeted run finish its
    decay when the budget ends, whichever of steps and time runs out first."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        if time_progress is not None:
            progress = max(progress, min(1.0, time_progress()))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _has_accelerator() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return bool(
        torch.cuda.is_available()
        or (mps is not None and mps.is_available())
        or (xpu is not None and xpu.is_available())
    )


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint `output_dir/latest` names, or the newest complete one (a killed save leaves none half-made)."""
    return find_latest(
        output_dir, "checkpoint-*", lambda p: (p / STATE_FILE).is_file(), lambda p: int(p.name.split("-")[-1])
    )


class UniF2aceTrainer:
    """Build everything from a validated recipe (see `recipes.load_recipe`) and train.

    Args:
        recipe: a validated recipe (`data.path` and `init_from` already resolved by the caller if overridden).
        output_dir: gets `checkpoint-<step>/`, `metrics.jsonl` and the final model (`final/`).
        resume_from: a checkpoint folder, or `"latest"` (the newest in `output_dir`, if any).
    """

    def __init__(self, recipe: dict[str, Any], output_dir: str | Path, resume_from: str | Path | None = None):
        self.recipe = recipe
        self.output_dir = Path(output_dir)
        self.config = recipe["training"]
        self.losses = recipe["loss"]
        data = recipe["data"]
        # everything that can fail on user input fails here, before a model is built
        if recipe["init_from"] is not None:
            resolve_init_from(recipe["init_from"])
        else:
            check_model_section(recipe["model"])
        self.train_data, self.eval_data = load_training_data(data["path"], data["train_split"], data["eval_split"])
        if data["max_train_rows"]:
            self.train_data = self.train_data.select(range(min(len(self.train_data), int(data["max_train_rows"]))))
        if recipe["lora"] is not None:
            try:
                from . import lora
            except ImportError as error:
                raise ValueError(f"lora: LoRA support is not available ({error})") from error
            if hasattr(lora, "check_lora_settings"):
                lora.check_lora_settings(recipe["lora"])
        self.resume_from = self._resolve_resume(resume_from)
        if self.config["threads"]:
            torch.set_num_threads(int(self.config["threads"]))

        self.accelerator = Accelerator(
            cpu=self.config["cpu"] or not _has_accelerator(),  # without cpu=True, CPU processes stay unconnected
            mixed_precision=self.config["mixed_precision"],
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        set_seed(self.config["seed"])
        model, self.processor, self.scheduler = build_model(recipe)
        self.train_data = self._with_codes(self.train_data, model)
        self.eval_data = self._with_codes(self.eval_data, model) if self.eval_data is not None else None
        if recipe["lora"] is not None:
            from .lora import apply_lora

            model = apply_lora(model, recipe["lora"])
        self.collator = TrainingCollator(
            self.processor,
            self.scheduler,
            seed=self.config["seed"],
            t2i_fraction=data["t2i_fraction"],
            caption_dropout=data["caption_dropout"],
            caption_qa_fraction=data["caption_qa_fraction"],
            max_answer_length=data["max_answer_length"],
            questions_per_image=data["questions_per_image"],
        )
        objective = TrainingObjective(model, self.losses["d3diff_alpha"], self.losses["masking_schedule"])
        if self.config["optimizer"] == "muon" and self.accelerator.distributed_type == DistributedType.FSDP:
            raise ValueError(
                "training.optimizer: 'muon' orthogonalises whole matrices, which FSDP shards between processes; "
                "use --set training.optimizer=adamw with FSDP"
            )
        optimizers = make_training_optimizers(objective, self.config)
        # stepped by us once per optimizer step (a prepared scheduler steps once per process); one per optimizer,
        # all on the same schedule
        schedule = cosine_with_warmup(
            self.config["warmup_steps"],
            self.config["max_steps"],
            self.config["min_lr_ratio"],
            self._time_progress if self.config["max_minutes"] else None,
        )
        self.lr_schedulers = [torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) for optimizer in optimizers]
        if self.resume_from is not None:
            self._saved_schedules(self.resume_from)  # a mismatched checkpoint fails here, before any training
        self.model, *self.optimizers = self.accelerator.prepare(objective, *optimizers)
        # the LR schedule's state goes into trainer_state.json, not accelerate's custom-object pickle (which
        # accelerate loads with weights_only=False, i.e. full unpickling)
        self.order = RowOrder(
            len(self.train_data), self.config["batch_size"] * self.accelerator.num_processes, self.config["seed"]
        )
        self.step = 0
        self._prefetched, self._prefetched_next = None, None  # the workers' batch iterator (`dataloader_workers`)

    # ------------------------------------------------------------------ setup helpers
    def _time_progress(self) -> float:
        """Spent share of `training.max_minutes`, counted from the start of `train()` in this process."""
        started = getattr(self, "_train_started", None)
        if started is None:
            return 0.0
        return (time.monotonic() - started) / (60.0 * float(self.config["max_minutes"]))

    def _out_of_time(self) -> bool:
        if self.config["max_minutes"] is None:
            return False
        spent = torch.tensor([float(self._time_progress() >= 1.0)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(spent, reduction="sum").item())  # every process stops at the same step

    def _resolve_resume(self, resume_from: str | Path | None) -> Path | None:
        if resume_from is None:
            return None
        if str(resume_from) == "latest":
            return latest_checkpoint(self.output_dir)
        path = Path(resume_from)
        if not (path / STATE_FILE).is_file():
            raise ValueError(f"resume_from: {str(path)!r} is not a checkpoint folder (no {STATE_FILE})")
        return path

    def _with_codes(self, dataset: Dataset, model) -> Dataset:
        device = self.accelerator.device  # encode on the accelerator when there is one (`prepare` moves it anyway)
        size, batch_size = model.vq_model.config.image_size, self.recipe["data"]["codes_batch_size"]
        columns = [CODES_COLUMN, "caption", "qa"] + ([SEMANTIC_COLUMN] if model.semantic_encoder is not None else [])
        with self.accelerator.main_process_first():
            if CODES_COLUMN not in dataset.column_names:
                dataset = add_image_codes(dataset, model.vq_model.to(device), size, batch_size=batch_size)
            if SEMANTIC_COLUMN in columns and SEMANTIC_COLUMN not in dataset.column_names:
                dataset = add_semantic_features(dataset, model.semantic_encoder.to(device), size, batch_size=batch_size)
        return dataset.select_columns([c for c in columns if c in dataset.column_names])

    # ------------------------------------------------------------------ batches
    def _rows(self, dataset: Dataset, epoch: int, indices: list[int]) -> list[dict[str, Any]]:
        columns = dataset[indices]
        return [
            {**{key: values[i] for key, values in columns.items()}, "_epoch": epoch, "_index": index}
            for i, index in enumerate(indices)
        ]

    def _micro_batch(self, micro_step: int) -> dict[str, torch.Tensor]:
        epoch, indices = self.order.rows(micro_step)
        size = self.config["batch_size"]
        rank = self.accelerator.process_index
        mine = indices[rank * size : (rank + 1) * size]
        return self.collator(self._rows(self.train_data, epoch, mine))

    def _next_micro_batch(self, micro_step: int) -> dict[str, torch.Tensor]:
        """Micro-batch `micro_step`, from the prefetching workers when `dataloader_workers` asks for them."""
        workers = self.config["dataloader_workers"]
        if workers == 0:
            return self._micro_batch(micro_step)
        if self._prefetched is None or self._prefetched_next != micro_step:
            loader = torch.utils.data.DataLoader(
                MicroBatches(self._micro_batch, micro_step, 10**9),  # read until the loop stops
                batch_size=None,
                num_workers=workers,
                prefetch_factor=4,
                multiprocessing_context="fork",
                generator=torch.Generator(),  # its worker seeds must not draw on the global RNG the model uses
            )
            self._prefetched = iter(loader)
        self._prefetched_next = micro_step + 1
        return next(self._prefetched)

    def _stop_prefetching(self) -> None:
        self._prefetched, self._prefetched_next = None, None  # the iterator's workers exit with it

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(self.accelerator.device) for key, value in batch.items()}

    # ------------------------------------------------------------------ the loop
    def _weighted(self, parts: dict[str, torch.Tensor], counts: torch.Tensor, share: float) -> dict[str, torch.Tensor]:
        """This micro-batch's contribution to the step's losses (sums over the step give the step's means)."""
        mmu = parts["mmu_sum"] / counts[0].clamp_min(1)
        t2i = parts["t2i_sum"] / counts[1].clamp_min(1)
        t2i_mask = parts["t2i_mask_sum"] / counts[1].clamp_min(1)
        aux = parts["aux"] * share
        loss = self.losses["mmu_weight"] * mmu + self.losses["t2i_weight"] * t2i + self.losses["aux_weight"] * aux
        return {"loss": loss, "mmu_loss": mmu, "t2i_loss": t2i, "t2i_mask_loss": t2i_mask, "aux_loss": aux}

    def train_step(self) -> dict[str, float]:
        """One optimizer step over `gradient_accumulation_steps` micro-batches."""
        accumulation = self.config["gradient_accumulation_steps"]
        processes = self.accelerator.num_processes
        batches = [self._next_micro_batch(self.step * accumulation + a) for a in range(accumulation)]
        local = torch.tensor(
            [[float(b["num_mmu_tokens"]), float(b["num_image_tokens"])] for b in batches], dtype=torch.float64
        ).sum(0)
        counts = self.accelerator.reduce(local.to(self.accelerator.device), reduction="sum").float()
        totals = torch.zeros(len(PART_NAMES), dtype=torch.float64)
        self.model.train()
        for a, batch in enumerate(batches):
            sync = a == accumulation - 1
            with nullcontext() if sync else self.accelerator.no_sync(self.model):
                parts = self.model(**self._to_device(batch))
                weighted = self._weighted(parts, counts, 1.0 / (accumulation * processes))
                # DDP averages gradients over processes: scale so the result is the sum over all micro-batches
                self.accelerator.backward(weighted["loss"] * processes)
            totals += torch.stack([weighted[name].detach().double().cpu() for name in PART_NAMES])
        grad_norm = None
        if self.config["max_grad_norm"]:
            grad_norm = self.accelerator.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], self.config["max_grad_norm"]
            )
        learning_rate = self.lr_schedulers[0].get_last_lr()[0]
        for optimizer, lr_scheduler in zip(self.optimizers, self.lr_schedulers):
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        self.step += 1
        totals = self.accelerator.reduce(totals.to(self.accelerator.device), reduction="sum").cpu()
        row = {"step": self.step, **{name: float(v) for name, v in zip(PART_NAMES, totals)}, "lr": learning_rate}
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        row["epoch"] = (self.step * accumulation) / self.order.batches_per_epoch
        return row

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean losses on the first `eval_rows` rows of the eval split (fixed masks: epoch -1 of the row seeds).
        Every process computes the same rows; the numbers do not depend on the number of processes."""
        if self.eval_data is None:
            return {}
        count = min(len(self.eval_data), int(self.config["eval_rows"]))
        size = self.config["batch_size"]
        sums = torch.zeros(5, dtype=torch.float64)  # mmu, t2i, t2i_mask, aux (per batch), n_mmu, n_img folded below
        tokens = torch.zeros(2, dtype=torch.float64)
        batches = 0
        self.model.eval()
        for start in range(0, count, size):
            batch = self.collator(self._rows(self.eval_data, -1, list(range(start, min(count, start + size)))))
            parts = self.model(**self._to_device(batch))
            sums[:4] += torch.stack([parts[k].double().cpu() for k in ("mmu_sum", "t2i_sum", "t2i_mask_sum", "aux")])
            tokens += torch.tensor(
                [float(batch["num_mmu_tokens"]), float(batch["num_image_tokens"])], dtype=torch.float64
            )
            batches += 1
        self.model.train()
        mmu, t2i, t2i_mask = (
            sums[0] / tokens[0].clamp_min(1),
            sums[1] / tokens[1].clamp_min(1),
            sums[2] / tokens[1].clamp_min(1),
        )
        aux = sums[3] / max(batches, 1)
        loss = self.losses["mmu_weight"] * mmu + self.losses["t2i_weight"] * t2i + self.losses["aux_weight"] * aux
        values = {"loss": loss, "mmu_loss": mmu, "t2i_loss": t2i, "t2i_mask_loss": t2i_mask, "aux_loss": aux}
        return {f"eval_{k}": float(v) for k, v in values.items()}

    def save_checkpoint(self) -> Path:
        """Atomically: every process writes into one temporary folder, which the main process fsyncs and renames
        to `checkpoint-<step>` before pointing `latest` at it (`checkpointing.py`)."""
        path = self.output_dir / f"checkpoint-{self.step}"
        if self.accelerator.is_main_process:
            begin_checkpoint(path)
        self.accelerator.wait_for_everyone()
        temporary = temporary_folder(path)
        self.accelerator.save_state(str(temporary))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            schedules = [lr_scheduler.state_dict() for lr_scheduler in self.lr_schedulers]
            state = {"step": self.step, "lr_schedulers": schedules, "recipe": self.recipe}
            (temporary / STATE_FILE).write_text(json.dumps(state, indent=2))
            commit_checkpoint(temporary, path)
        self.accelerator.wait_for_everyone()
        return path

    def _saved_schedules(self, path: Path) -> list[dict[str, Any]]:
        """The checkpoint's LR schedule states, one per optimizer of this run (or a clear error)."""
        state = json.loads((path / STATE_FILE).read_text())
        # checkpoints from before the optimizer choice hold one AdamW schedule under "lr_scheduler"
        schedules = state.get("lr_schedulers") or ([state["lr_scheduler"]] if "lr_scheduler" in state else None)
        if schedules is None:
            raise ValueError(f"resume_from: {str(path)!r} has no LR schedule state in {STATE_FILE}; it is incomplete")
        if len(schedules) != len(self.lr_schedulers):
            raise ValueError(
                f"resume_from: {str(path)!r} was saved with {len(schedules)} optimizer(s) and this run has "
                f"{len(self.lr_schedulers)}; resume with the checkpoint's training.optimizer"
            )
        return schedules

    def load_checkpoint(self, path: Path) -> None:
        self.accelerator.load_state(str(path))
        state = json.loads((path / STATE_FILE).read_text())
        for lr_scheduler, schedule in zip(self.lr_schedulers, self._saved_schedules(path)):
            lr_scheduler.load_state_dict(schedule)
        self.step = int(state["step"])

    def _metrics_file(self):
        path = self.output_dir / METRICS_FILE
        if not self.step:
            return path.open("w")  # a fresh run starts a fresh file
        if path.is_file():  # drop rows a stopped run wrote after its last checkpoint
            rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= self.step]
            path.write_text("".join(f"{line}\n" for line in rows))
        return path.open("a")

    def _attention_backends(self) -> AbstractContextManager:
        """The attention kernels the loop may use: on CUDA every fused kernel but cuDNN's, which spent 200 ms of host
        time per step on an H200 (benchmarks/gpu_profile_train_step.py, batch 128), more than the step's kernels; the
        others take the same masks."""
        if self.accelerator.device.type != "cuda":
            return nullcontext()
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def train(self, max_steps: int | None = None) -> Path:
        """Train to `max_steps` (default: the recipe's), checkpointing every `save_steps`; returns the final folder."""
        max_steps = max_steps or self.config["max_steps"]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
        main = self.accelerator.is_main_process
        metrics = self._metrics_file() if main else None
        progress = tqdm(
            total=max_steps, initial=self.step, desc="train", disable=not (main and self.config["progress"])
        )
        self._train_started = time.monotonic()
        try:
            with self._attention_backends():
                while self.step < max_steps:
                    row = self.train_step()
                    out_of_time = self._out_of_time()
                    last = self.step == max_steps or out_of_time
                    eval_steps = self.config["eval_steps"]
                    if eval_steps and (self.step % eval_steps == 0 or last):
                        row.update(self.evaluate())
                    if main:
                        metrics.write(json.dumps(row) + "\n")
                        metrics.flush()
                    progress.update(1)
                    progress.set_postfix(loss=f"{row['loss']:.4f}")
                    if self.step % self.config["save_steps"] == 0 or last:
                        self.save_checkpoint()
                    if out_of_time:
                        break
        finally:
            self._stop_prefetching()
            progress.close()
            if metrics is not None:
                metrics.close()
        return self.save_final()

    def save_final(self) -> Path:
        """The trained model as one folder for every loader (or, with LoRA, the adapter with processor and
        scheduler next to it)."""
        final = self.output_dir / FINAL_FOLDER
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            model = self.accelerator.unwrap_model(self.model).model
            if self.recipe["lora"] is not None:
                from .lora import save_adapter

                save_adapter(model, final)
                self.processor.save_pretrained(final)
                self.scheduler.save_pretrained(final / SCHEDULER_SUBFOLDER)
            else:
                UniF2acePipeline(model=model, processor=self.processor, scheduler=self.scheduler).save_pretrained(final)
        self.accelerator.wait_for_everyone()
        return final


__all__ = ["UniF2aceTrainer", "RowOrder", "cosine_with_warmup", "latest_checkpoint", "METRICS_FILE", "FINAL_FOLDER"]
