"""Evaluation for UniF²ace: the SynthFace attribute judge that scores generated faces."""

from .attribute_judge import AttributeJudge, AttributeJudgeModel

__all__ = ["AttributeJudge", "AttributeJudgeModel"]
