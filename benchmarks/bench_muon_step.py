"""One Muon step over the default model's hidden matrices: weights of one shape orthogonalised together
(`ConvMuon(batch_by_shape=True)`, its default on accelerators), `ConvMuon`'s CPU default (one weight at a time, the
momentum arithmetic in multi-tensor calls) and the plain loop of the Muon papers (written out below).

The tiny-synthface model has about 60 Muon weights in a handful of shapes. One at a time, each costs five
Newton–Schulz iterations of small matmuls plus the momentum and update arithmetic: thousands of tensor ops a step,
which on a GPU are thousands of kernel launches for a model whose step does little else. Reported: ms per step
and tensor ops per step (aten ops counted by the profiler), and the largest difference between the updates.
Variants run interleaved in one process on copies of one set of weights and gradients.

    .venv/bin/python benchmarks/bench_muon_step.py [--repeats 10] [--threads 1] [--output benchmarks/results_muon_step.json]
    python benchmarks/bench_muon_step.py --device cuda --output results_muon_step_gpu.json   # on a GPU machine
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench_common import interleaved_samples, machine_info
from unif2ace_hf.training.model_setup import build_model
from unif2ace_hf.training.muon import ConvMuon, orthogonalize
from unif2ace_hf.training.optimizers import muon_parameter_names
from unif2ace_hf.training.recipes import load_recipe


class OneWeightAtATimeMuon(ConvMuon):
    """The same update, orthogonalising each weight on its own (the reference loop)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(parameter)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(parameter.grad)
                update = parameter.grad.add(buffer, alpha=group["momentum"])
                matrix = update if group["stacked"] else update.reshape(update.shape[0], -1)
                direction = orthogonalize(matrix, group["ns_steps"]).view_as(parameter)
                if group["weight_decay"]:
                    parameter.mul_(1 - group["lr"] * group["weight_decay"])
                parameter.add_(direction, alpha=-group["lr"] * 0.2 * max(matrix.shape[-2:]) ** 0.5)


def muon_weights(model: torch.nn.Module) -> list[dict]:
    """The trainer's Muon groups for `model`, with a fixed random gradient on every weight."""
    named = dict(model.named_parameters())
    matrices, stacks = muon_parameter_names(model)
    generator = torch.Generator().manual_seed(0)
    for name in matrices + stacks:
        named[name].grad = torch.randn(named[name].shape, generator=generator).to(named[name].device) * 1e-3
    return [{"params": [named[n] for n in matrices]}, {"params": [named[n] for n in stacks], "stacked": True}]


def count_ops(step) -> int:
    """Tensor ops the step dispatches (top-level aten calls: on a GPU each is at least one launch)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(
        1
        for event in prof.events()
        if event.name.startswith("aten::")
        and (event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(Path(__file__).with_name("results_muon_step.json")))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (ops are counted on either)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    model, _, _ = build_model(load_recipe("tiny-synthface"))
    model.to(device)
    models = {"shape_batched": model, "cpu_default": copy.deepcopy(model), "one_at_a_time": copy.deepcopy(model)}
    groups = {name: muon_weights(m) for name, m in models.items()}
    optimizers = {
        "shape_batched": ConvMuon(groups["shape_batched"], lr=5e-4, weight_decay=0.01, batch_by_shape=True),
        "cpu_default": ConvMuon(groups["cpu_default"], lr=5e-4, weight_decay=0.01),
        "one_at_a_time": OneWeightAtATimeMuon(groups["one_at_a_time"], lr=5e-4, weight_decay=0.01),
    }
    weights = sum(len(g["params"]) for g in groups["shape_batched"])
    shapes = {
        (g.get("stacked", False), tuple(p.shape if g.get("stacked") else (p.shape[0], p[0].numel())))
        for g in groups["shape_batched"]
        for p in g["params"]
    }

    ops = {name: count_ops(optimizer.step) for name, optimizer in optimizers.items()}

    def timed(step):
        def run() -> None:  # on a GPU, wait for the step's kernels so that the clock covers them
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        return run

    samples = interleaved_samples({name: timed(o.step) for name, o in optimizers.items()}, args.repeats)
    ms = {name: 1000 * statistics.median(values) for name, values in samples.items()}
    # both saw the same gradients for the same number of steps: the weights must agree to bf16 rounding
    after = [dict(m.named_parameters()) for m in models.values()]
    difference = max((other[n] - after[-1][n]).abs().max().item() for other in after[:-1] for n in after[0])
    results = {
        "machine": machine_info(args.threads),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "muon_weights": weights,
        "distinct_shapes": len(shapes),
        "ms_per_step": {k: round(v, 2) for k, v in ms.items()},
        "ops_per_step": ops,
        "speedup_shape_batched": round(ms["one_at_a_time"] / ms["shape_batched"], 2),
        "speedup_cpu_default": round(ms["one_at_a_time"] / ms["cpu_default"], 2),
        "op_ratio_shape_batched": round(ops["shape_batched"] / ops["one_at_a_time"], 3),
        "max_weight_difference": difference,
    }
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
