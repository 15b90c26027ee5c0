"""Pipelines: text-to-face generation (diffusers) and face understanding (transformers)."""
