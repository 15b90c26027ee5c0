"""The model card (`README.md`) of a UniF²ace checkpoint, built from `unif2ace eval` results.

Why a generator: the Hub reads a card's YAML (`library_name`, `pipeline_tag`, `model-index`, ...) to list, filter
and compare models, so the numbers must come straight from the evaluation JSON, in huggingface_hub's own
`ModelCardData` / `EvalResult` classes, never retyped. Without results the card still validates and says so.

Evaluation JSON (one per split; several may be combined into one card):
`{"model": str, "split": str, "num_examples": int,
  "understanding": {"vqa_exact_match": float, "per_category": {cat: float},
                    "caption_attribute_precision": float, "caption_attribute_recall": float},
  "generation": {"judge_attribute_accuracy": float, "per_category": {cat: float}, "diversity": float}}`
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD_TEMPLATE = "unif2ace_model_card.md"
DEFAULT_TAGS = ("unif2ace", "face", "text-to-image", "visual-question-answering", "mixture-of-experts", "custom_code")
DEFAULT_DATASET = ("synthface", "SynthFace")
"""(Hub id, display name) of the evaluation data when the caller names none: the embedded SynthFace."""

SECTIONS: dict[str, dict[str, Any]] = {
    "understanding": {
        "task": ("visual-question-answering", "Face understanding"),
        "metrics": {
            "vqa_exact_match": ("exact_match", "VQA exact match"),
            "caption_attribute_precision": ("precision", "Caption attribute precision"),
            "caption_attribute_recall": ("recall", "Caption attribute recall"),
        },
    },
    "generation": {
        "task": ("text-to-image", "Text-to-face generation"),
        "metrics": {
            "judge_attribute_accuracy": ("accuracy", "Attribute judge accuracy"),
            "diversity": ("diversity", "Diversity"),
        },
    },
}
"""Per section of the eval JSON: the Hub task (type, name) and each headline metric's (Hub metric type, name)."""


def _number(value: Any, where: str) -> float | None:
    """A metric value; None or NaN (how `unif2ace eval` writes a metric it could not measure) -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number (or null / NaN: not measured), got {value!r}")
    return float(value)


def check_eval_results(results: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Validate `unif2ace eval` JSON(s) against the schema; errors name the file index and the key."""
    if results is None:
        return []
    items = [results] if isinstance(results, Mapping) else list(results)
    checked, splits = [], set()
    for index, item in enumerate(items):
        where = f"eval_results[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected a dict (one `unif2ace eval` JSON), got {type(item).__name__}")
        for key in ("model", "split"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValueError(f"{where}.{key}: expected a non-empty string, got {item.get(key)!r}")
        num_examples = item.get("num_examples")
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise ValueError(f"{where}.num_examples: expected a positive integer, got {num_examples!r}")
        if item["split"] in splits:
            raise ValueError(f"{where}.split: split {item['split']!r} appears twice; give one result per split")
        splits.add(item["split"])
        if not any(section in item for section in SECTIONS):
            raise ValueError(f"{where}: has neither 'understanding' nor 'generation' results")
        entry = {"model": item["model"], "split": item["split"], "num_examples": num_examples}
        for section, spec in SECTIONS.items():
            if section not in item:
                continue
            values = item[section]
            if not isinstance(values, Mapping):
                raise ValueError(f"{where}.{section}: expected a dict, got {type(values).__name__}")
            missing = [key for key in spec["metrics"] if key not in values]
            if missing:
                raise ValueError(f"{where}.{section}: missing {missing} (null or NaN marks a metric not measured)")
            entry[section] = {key: _number(values[key], f"{where}.{section}.{key}") for key in spec["metrics"]}
            per_category = values.get("per_category", {})
            if not isinstance(per_category, Mapping):
                raise ValueError(f"{where}.{section}.per_category: expected a dict of category -> number")
            entry[section]["per_category"] = {
                str(cat): _number(v, f"{where}.{section}.per_category.{cat}") for cat, v in per_category.items()
            }
        checked.append(entry)
    return checked


def eval_results_for_card(results: list[dict[str, Any]], dataset: tuple[str, str]) -> list[EvalResult]:
    """The headline metrics as `model-index` entries: one per measured (section, metric, split)."""
    dataset_type, dataset_name = dataset
    entries = []
    for item in results:
        for section, spec in SECTIONS.items():
            if section not in item:
                continue
            task_type, task_name = spec["task"]
            for key, (metric_type, metric_name) in spec["metrics"].items():
                if item[section][key] is None:
                    continue
                entries.append(
                    EvalResult(
                        task_type=task_type,
                        task_name=task_name,
                        dataset_type=dataset_type,
                        dataset_name=dataset_name,
                        dataset_split=item["split"],
                        metric_type=metric_type,
                        metric_name=metric_name,
                        metric_value=round(item[section][key], 4),
                    )
                )
    return entries


def _public_model_name(model: str) -> str:
    """A Hub id as is; a local path (as `unif2ace eval` records it) by its last part only: a public card must not
    show the evaluating machine's folders."""
    if os.path.isabs(model) or model.startswith(("./", "../", "~")) or model.count("/") > 1:
        return Path(model).name or model
    return model


def _format(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _table_rows(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The summary table (one row per split) and the per-category table (one row per category)."""
    summary = []
    for item in results:
        row = {"split": item["split"], "num_examples": item["num_examples"]}
        for section, spec in SECTIONS.items():
            for key in spec["metrics"]:
                row[key] = _format(item.get(section, {}).get(key))
        summary.append(row)
    categories = sorted(
        {cat for item in results for section in SECTIONS for cat in item.get(section, {}).get("per_category", {})}
    )
    per_category = []
    for category in categories:
        values = []
        for item in results:
            for section in ("understanding", "generation"):
                values.append(_format(item.get(section, {}).get("per_category", {}).get(category)))
        per_category.append({"category": category, "values": values})
    return summary, per_category


def model_card_from_eval(
    results: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    repo_id: str = "REPO_ID",
    model_name: str | None = None,
    base_model: str | Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    eval_dataset: tuple[str, str] = DEFAULT_DATASET,
    license: str = "apache-2.0",  # noqa: A002 - the Hub's metadata key
    tags: Sequence[str] = DEFAULT_TAGS,
    pipeline_tag: str = "any-to-any",
    library_name: str = "transformers",
    training_data: str | None = None,
) -> ModelCard:
    """A validated `ModelCard` for a UniF²ace checkpoint; `results` are `unif2ace eval` JSON dicts (or None).

    `repo_id` goes into the usage snippets; `datasets` are the training data's Hub ids (default: the evaluation
    dataset's); `eval_dataset` is the (Hub id, display name) of the data the results were measured on.
    """
    from .. import __version__
    from ..data.publish import card_template_path  # here: `import unif2ace_hf` should not import `datasets`

    checked = check_eval_results(results)
    models = sorted({_public_model_name(item["model"]) for item in checked})
    name = model_name or repo_id.rsplit("/", 1)[-1]
    if isinstance(base_model, str):
        base_model = [base_model]
    card_data = ModelCardData(
        language=["en"],
        license=license,
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        tags=list(tags),
        datasets=list(datasets) if datasets is not None else [eval_dataset[0]],
        base_model=list(base_model) if base_model else None,
        model_name=name,
        eval_results=eval_results_for_card(checked, eval_dataset) or None,
    )
    summary, per_category = _table_rows(checked)
    card = ModelCard.from_template(
        card_data,
        template_path=card_template_path(CARD_TEMPLATE),
        model_name=name,
        repo_id=repo_id,
        library_version=__version__,
        evaluated=bool(checked),
        models=", ".join(f"`{m}`" for m in models),
        dataset_name=eval_dataset[1],
        splits=[item["split"] for item in checked],
        summary_rows=summary,
        category_rows=per_category,
        training_data=training_data
        or "SynthFace, the procedural face data set with exact fine-grained labels that ships with unif2ace-hf "
        "(`unif2ace data synthface`), unless the training run says otherwise.",
    )
    # Parse the rendered text again: the YAML and the model-index must survive the round trip the Hub does.
    return ModelCard(str(card))


def write_model_card(
    save_directory: str | os.PathLike,
    model_card: ModelCard | str | None = None,
    eval_results: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    previous: ModelCard | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    """Write `README.md` into a saved folder: the given card, else one built from `eval_results`, else the card
    the checkpoint was loaded with (`previous`) if it reports results (measured numbers are never dropped by a
    re-save), else a fresh unmeasured card for `repo_id`. Returns the card written."""
    if model_card is not None and eval_results is not None:
        raise ValueError("model_card and eval_results: give one of them (the card is built from eval_results)")
    if isinstance(model_card, str):
        model_card = ModelCard(model_card)
    if model_card is not None and not isinstance(model_card, ModelCard):
        raise ValueError(
            f"model_card: expected a huggingface_hub.ModelCard or its text, got {type(model_card).__name__}"
        )
    if model_card is None and eval_results is None and previous is not None and previous.data.eval_results:
        model_card = previous
    if model_card is None:
        model_card = model_card_from_eval(eval_results, repo_id=repo_id or Path(save_directory).name)
    model_card.save(str(Path(save_directory) / "README.md"))
    return model_card


def load_eval_files(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read `unif2ace eval` JSON files; an unreadable file is an error naming it."""
    results = []
    for path in paths:
        try:
            results.append(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ValueError(f"--eval: no such file {str(path)!r}") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"--eval: {str(path)!r} is not valid JSON ({error})") from None
    return results


__all__ = ["model_card_from_eval", "check_eval_results", "eval_results_for_card", "load_eval_files", "write_model_card"]
