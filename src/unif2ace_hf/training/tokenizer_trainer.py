"""Training the image tokenizer with accelerate: in-memory images, AdamW (or Muon for the hidden kernels) with
warm-up and cosine decay, bf16 autocast on request, resumable checkpoints, an optional exponential moving average of
the weights, and a metrics JSONL with one row per optimizer step (its `seconds` is the training clock, so runs on
machines of different speed compare at equal time).

The learning rate is set by hand each step (no scheduler object): it depends on the step and, with a time budget,
on the elapsed time, which the checkpoint records. The same code runs on CPU and CUDA (accelerate picks the device;
`device="cpu"` forces the CPU). Images are kept as one uint8 tensor on the training device and batches are drawn from
a seeded generator whose state is checkpointed, so a resumed run sees the batches the uninterrupted run would have
seen.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..modeling.configuration_unif2ace import UniF2aceVQConfig
from ..modeling.image_tokenizer import UniF2aceVQModel
from ..modeling.tokenizer_losses import TokenizerLossWeights, tokenizer_loss
from .checkpointing import begin_checkpoint, commit_checkpoint, find_latest
from .machine import describe_machine
from .muon import ConvMuon, hidden_weight_names
from .perceptual_loss import PerceptualFeatureLoss
from .tokenizer_data import load_images, to_pixel_values
from .tokenizer_init import zero_residual_branches

# The default model's tokenizer: 64×64 faces -> 16×16 codes of 10 bits (1024 codes, the default
# UniF2aceConfig.codebook_size); 3.4 M parameters = 13.7 MB in fp32. Width goes to the 64×64 level of the
# decoder, where thin lines and dots are drawn.
_TINY = dict(
    image_size=64,
    base_channels=64,
    encoder_channel_multipliers=[1, 2, 2],
    encoder_num_res_blocks=[1, 1, 1],
    decoder_channel_multipliers=[1, 2, 2],
    decoder_num_res_blocks=[1, 1, 2],
    attn_resolutions=[],
    codebook_dim=10,
)

TOKENIZER_PRESETS: dict[str, dict] = {
    "tiny": _TINY,
    # The same grid for a CPU budget: width moves from the 64×64 level (32 channels) to the 16×16 one (128), so a
    # training step costs 60–70 % of `tiny`'s. 8 norm groups, not 32: with 32 groups over 32 channels GroupNorm is a
    # per-channel instance norm, which erases each image's colour offsets at the full-size level and learned far
    # slower. 12 bits per code (4096 codes): 0.36 dB more in the same 41 CPU minutes than 10 bits, for almost no
    # extra time per step (docs/decisions.md, "A tokenizer for the CPU budget").
    "small": dict(
        _TINY,
        base_channels=32,
        encoder_channel_multipliers=[1, 2, 4],
        decoder_channel_multipliers=[1, 2, 4],
        norm_num_groups=8,
        codebook_dim=12,
    ),
    # For tests and smoke runs: seconds on a CPU.
    "micro": dict(
        image_size=32,
        base_channels=32,
        encoder_channel_multipliers=[1, 1, 2],
        encoder_num_res_blocks=[1, 1, 1],
        decoder_channel_multipliers=[1, 1, 2],
        decoder_num_res_blocks=[1, 1, 1],
        codebook_dim=6,
    ),
    # The public MAGVIT-v2 sizes (Show-o's tokenizer); for converting, or training at 256×256 on a GPU.
    "magvit": {},
}

OPTIMIZERS = ("adamw", "muon")
"""`TokenizerTrainingArguments.optimizer`: AdamW for every parameter, or Muon for the hidden kernels (training/muon.py)."""

STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"


@dataclass
class TokenizerTrainingArguments:
    """Everything a tokenizer training run needs; `train_tokenizer(args)` reads nothing else."""

    data: str
    output_dir: str
    config: str = "tiny"
    config_overrides: dict = field(default_factory=dict)
    init_from: str | None = None
    max_steps: int = 20000
    batch_size: int = 64
    learning_rate: float = 4e-4
    min_learning_rate_ratio: float = 0.05
    warmup_steps: int = 500
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.99)
    max_grad_norm: float = 1.0
    bf16: bool = False
    device: str | None = None
    seed: int = 0
    max_images: int | None = None
    save_steps: int = 1000
    keep_checkpoints: int = 2
    log_steps: int = 25
    max_minutes: float | None = None
    resume: bool = False
    progress: bool = True
    loss_weights: TokenizerLossWeights = field(default_factory=TokenizerLossWeights)
    perceptual_net: str | None = None
    # torch.compile the tokenizer and the feature network: a `small` step is 1.4x faster on a 2-core CPU (bf16,
    # batch 16, with the perceptual term); compiling takes about 100 s there, inside the time budget.
    compile: bool = False
    # Exponential moving average of the weights (e.g. 0.999), updated after every step; the saved model is the
    # average, the checkpoints hold both. None trains and saves the raw weights.
    ema_decay: float | None = None
    # A tokenizer trained from scratch starts with every residual branch at zero (tokenizer_init.py); ignored for a
    # warm start or a resume, whose weights come from elsewhere.
    zero_init_residual: bool = True
    # "adamw", or "muon": Muon for the hidden convolution kernels and AdamW for the rest, at one learning rate
    # (training/muon.py).
    optimizer: str = "adamw"
    muon_momentum: float = 0.95


def build_vq_config(name_or_path: str, overrides: dict | None = None) -> UniF2aceVQConfig:
    """A preset name (`tiny`, `small`, `micro`, `magvit`) or a path to a tokenizer `config.json` / model folder."""
    if name_or_path in TOKENIZER_PRESETS:
        kwargs = dict(TOKENIZER_PRESETS[name_or_path])
    else:
        path = Path(name_or_path)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(
                f"`config`: {name_or_path!r} is neither a preset {sorted(TOKENIZER_PRESETS)} nor a config file."
            )
        kwargs = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("model_type", "architectures")}
    kwargs.update(overrides or {})
    return UniF2aceVQConfig(**kwargs)


def _learning_rate_factor(step: int, elapsed_seconds: float, args: TokenizerTrainingArguments) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to `min_learning_rate_ratio`. With `max_minutes` the
    decay follows whichever budget (steps or time) is closer to running out, so a time-limited run still ends at the
    low learning rate instead of being cut off at a high one."""
    if step < args.warmup_steps:
        return (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
    if args.max_minutes:
        progress = max(progress, elapsed_seconds / (60 * args.max_minutes))
    progress = min(1.0, progress)
    return args.min_learning_rate_ratio + (1 - args.min_learning_rate_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _make_accelerator(mixed_precision: str, cpu: bool):
    """An `Accelerator`, also when this process already made one with other settings (tests, notebooks):
    accelerate keeps a process-wide state that otherwise refuses a second mixed-precision mode
    (`hf-stack-notes.md` §9). Single-process only, which is what this trainer supports."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    existing = AcceleratorState._shared_state.get("_mixed_precision")
    existing_cpu = PartialState._shared_state.get("_cpu", cpu)
    if existing is not None and (str(existing) != mixed_precision or existing_cpu != cpu):
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def _latest_checkpoint(output_dir: Path) -> Path | None:
    return find_latest(
        output_dir / CHECKPOINTS_DIR,
        "step-*",
        lambda p: (p / STATE_FILE).is_file(),
        lambda p: int(p.name.split("-")[1]),
    )


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(row + "\n" for row in rows))


class _BatchSampler:
    """Random batches without replacement within an epoch, from a checkpointable generator."""

    def __init__(self, num_images: int, batch_size: int, seed: int):
        self.num_images, self.batch_size = num_images, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(num_images, generator=self.generator)
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.num_images:
            self.order = torch.randperm(self.num_images, generator=self.generator)
            self.position = 0
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state().tolist(),
            "order": self.order.tolist(),
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.order = torch.tensor(state["order"], dtype=torch.long)
        self.position = int(state["position"])


# The layers that touch pixels or the code bits stay with AdamW under `optimizer="muon"`, as the first and last layers
# of a network do in the Muon papers.
_NOT_FOR_MUON = (
    "encoder.conv_in.weight",
    "encoder.quant_conv.weight",
    "decoder.post_quant_conv.weight",
    "decoder.conv_out.weight",
)


def make_optimizers(
    model: UniF2aceVQModel, args: TokenizerTrainingArguments, device: torch.device
) -> list[torch.optim.Optimizer]:
    """AdamW over every parameter, or Muon over the hidden kernels and AdamW over the rest."""

    # The fused kernel: 3.7 ms against 10 ms for the per-tensor loop on a 2-core CPU (`small`, 2.6 M parameters).
    def adamw(parameters: list[torch.nn.Parameter]) -> torch.optim.AdamW:
        return torch.optim.AdamW(
            parameters,
            lr=args.learning_rate,
            betas=args.adam_betas,
            weight_decay=args.weight_decay,
            fused=device.type in ("cpu", "cuda"),
        )

    if args.optimizer == "adamw":
        return [adamw(list(model.parameters()))]
    if args.optimizer != "muon":
        raise ValueError(f"`optimizer`: {args.optimizer!r} is not one of {OPTIMIZERS}.")
    hidden = set(hidden_weight_names(model, exclude=_NOT_FOR_MUON))
    named = dict(model.named_parameters())
    muon = ConvMuon(
        [named[name] for name in named if name in hidden],
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
        momentum=args.muon_momentum,
    )
    return [adamw([named[name] for name in named if name not in hidden]), muon]


def train_tokenizer(args: TokenizerTrainingArguments, images: torch.Tensor | None = None) -> dict:
    """Train (or resume) and write the model folder (`config.json` + `model.safetensors`) to `args.output_dir`,
    with `metrics.jsonl`, `checkpoints/step-N/` and `training_summary.json`. Returns the summary."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    output_dir = Path(args.output_dir)
    if args.max_steps < 1 or args.batch_size < 1:
        raise ValueError(f"`max_steps` and `batch_size` must be >= 1, got {args.max_steps} and {args.batch_size}.")
    resume_from = _latest_checkpoint(output_dir) if args.resume else None
    if args.resume and resume_from is None:
        raise ValueError(f"`resume`: no checkpoint under {output_dir / CHECKPOINTS_DIR}.")
    if not args.resume and (output_dir / METRICS_FILE).exists():
        raise ValueError(
            f"`output_dir`: {output_dir} already holds a run; pass resume=True (--resume) or a new folder."
        )
    if (args.perceptual_net is None) == args.loss_weights.needs_feature_network:
        raise ValueError(
            "`perceptual_net`: give a feature network folder exactly when the perceptual or attribute loss weight is "
            f"> 0 (perceptual_net={args.perceptual_net!r}, weights={args.loss_weights.perceptual} and "
            f"{args.loss_weights.attribute})."
        )
    if args.optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer`: {args.optimizer!r} is not one of {OPTIMIZERS}.")
    if args.ema_decay is not None and not 0 < args.ema_decay < 1:
        raise ValueError(f"`ema_decay` must be in (0, 1), got {args.ema_decay}.")
    perceptual_loss = PerceptualFeatureLoss.from_pretrained(args.perceptual_net) if args.perceptual_net else None
    output_dir.mkdir(parents=True, exist_ok=True)

    config = build_vq_config(args.init_from or args.config, args.config_overrides)
    if resume_from is not None:
        config = UniF2aceVQConfig.from_pretrained(resume_from)
    accelerator = _make_accelerator("bf16" if args.bf16 else "no", cpu=args.device == "cpu")
    set_seed(args.seed)
    if images is None:
        images = load_images(args.data, split="train", image_size=config.image_size, limit=args.max_images)
    if images.shape[1:3] != (config.image_size, config.image_size):
        raise ValueError(f"`data`: images are {tuple(images.shape[1:3])}, the tokenizer expects {config.image_size}.")
    if len(images) < args.batch_size:
        raise ValueError(f"`data`: {len(images)} images are fewer than batch_size={args.batch_size}.")
    images = images.to(accelerator.device)

    if args.init_from and resume_from is None:
        # Warm start (weights only; the optimizer and the schedule start afresh), e.g. to train a shipped model longer.
        model = UniF2aceVQModel.from_pretrained(args.init_from, config=config)
    else:
        model = UniF2aceVQModel(config)
        if args.zero_init_residual:
            zero_residual_branches(model)
    if accelerator.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    optimizers = make_optimizers(model, args, accelerator.device)
    model, *optimizers = accelerator.prepare(model, *optimizers)
    perceptual_in_autocast = None
    if perceptual_loss is not None:
        perceptual_loss = perceptual_loss.to(accelerator.device)
        perceptual_features = torch.compile(perceptual_loss) if args.compile else perceptual_loss

        def perceptual_in_autocast(reconstruction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
            # the feature network runs in the training precision; the loss terms themselves stay in fp32
            with accelerator.autocast():
                return perceptual_features(reconstruction, target)

    # The compiled wrapper shares the parameters; checkpoints and the saved model use `model` itself.
    forward = torch.compile(model) if args.compile else model
    ema = None
    if args.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(accelerator.unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay))

    sampler = _BatchSampler(len(images), args.batch_size, args.seed)

    step, elapsed_before = 0, 0.0
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        state = json.loads((resume_from / STATE_FILE).read_text())
        step, elapsed_before = state["step"], state.get("elapsed_seconds", 0.0)
        sampler.load_state_dict(state["sampler"])
        if ema is not None:
            if not (resume_from / EMA_FILE).is_file():
                raise ValueError(f"`ema_decay`: the checkpoint {resume_from} was trained without a weight average.")
            ema.module.load_state_dict(load_file(resume_from / EMA_FILE))
            ema.n_averaged.fill_(state["ema_updates"])
        _trim_metrics(output_dir / METRICS_FILE, step)

    def save_checkpoint() -> None:
        # atomic (checkpointing.py): a run killed while saving keeps its previous checkpoint and `latest` pointer
        final = output_dir / CHECKPOINTS_DIR / f"step-{step}"
        folder = begin_checkpoint(final)
        accelerator.save_state(str(folder))
        accelerator.unwrap_model(model).config.save_pretrained(folder)
        state = {"step": step, "elapsed_seconds": elapsed_before + time.time() - start, "sampler": sampler.state_dict()}
        if ema is not None:
            save_file({k: v.contiguous() for k, v in ema.module.state_dict().items()}, folder / EMA_FILE)
            state["ema_updates"] = int(ema.n_averaged)
        (folder / STATE_FILE).write_text(json.dumps(state))
        commit_checkpoint(folder, final)
        for old in sorted((output_dir / CHECKPOINTS_DIR).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[
            : -args.keep_checkpoints
        ]:
            shutil.rmtree(old)

    pending: list[tuple[int, float, float, dict[str, torch.Tensor]]] = []

    def flush_metrics() -> dict:
        if not pending:
            return {}
        keys = list(pending[0][3])
        values = torch.stack([torch.stack([terms[k] for k in keys]) for *_, terms in pending]).tolist()
        with open(output_dir / METRICS_FILE, "a") as handle:
            for (row_step, lr, seconds, _), row in zip(pending, values):
                row_metrics = {"step": row_step, "lr": lr, "seconds": round(seconds, 2), **dict(zip(keys, row))}
                handle.write(json.dumps(row_metrics) + "\n")
        last = {"step": pending[-1][0], **dict(zip(keys, values[-1]))}
        pending.clear()
        return last

    model.train()
    start = time.time()
    last: dict = {}
    progress = tqdm(total=args.max_steps, initial=step, desc="train-tokenizer", disable=not args.progress)
    while step < args.max_steps:
        elapsed = elapsed_before + time.time() - start
        learning_rate = args.learning_rate * _learning_rate_factor(step, elapsed, args)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
        pixel_values = to_pixel_values(images[sampler.next().to(images.device)])
        with accelerator.autocast():
            output = forward(pixel_values)
        terms = tokenizer_loss(
            output.reconstruction, pixel_values, output.latents, args.loss_weights, perceptual_in_autocast
        )
        accelerator.backward(terms["loss"])
        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(accelerator.unwrap_model(model))
        step += 1
        elapsed = elapsed_before + time.time() - start
        pending.append((step, learning_rate, elapsed, {k: v.detach() for k, v in terms.items()}))
        progress.update(1)
        out_of_time = args.max_minutes is not None and elapsed / 60 >= args.max_minutes
        if step % args.log_steps == 0 or step == args.max_steps or out_of_time:
            last = flush_metrics()
            progress.set_postfix(loss=f"{last['loss']:.4f}", psnr=f"{last['psnr']:.2f}")
        if step % args.save_steps == 0 or step == args.max_steps or out_of_time:
            save_checkpoint()
        if out_of_time:
            break
    progress.close()
    last = flush_metrics() or last

    unwrapped = ema.module if ema is not None else accelerator.unwrap_model(model)
    unwrapped.save_pretrained(output_dir, save_function=accelerator.save)
    summary = {
        "steps": step,
        "max_steps": args.max_steps,
        "stopped_early": step < args.max_steps,
        "train_seconds": round(elapsed_before + time.time() - start, 1),
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "machine": describe_machine(accelerator.device),
        "num_images": len(images),
        "parameters": sum(p.numel() for p in unwrapped.parameters()),
        "last_metrics": last,
        "arguments": {k: v for k, v in asdict(args).items() if k != "loss_weights"},
        "loss_weights": asdict(args.loss_weights),
    }
    (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    accelerator.end_training()
    return summary


__all__ = [
    "TOKENIZER_PRESETS",
    "TokenizerTrainingArguments",
    "OPTIMIZERS",
    "build_vq_config",
    "make_optimizers",
    "train_tokenizer",
]
