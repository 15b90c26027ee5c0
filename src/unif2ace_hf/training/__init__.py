"""Training loops and their data/evaluation helpers (accelerate-based); model code lives in `modeling/`."""
