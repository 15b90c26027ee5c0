"""The shipped image tokenizer meets issue 4's bars on SynthFace faces it has never seen: a fresh seed, rendered here."""

import json

from unif2ace_hf import DEFAULT_VQ_MODEL
from unif2ace_hf.cli import main


def test_default_tokenizer_meets_the_bars_on_fresh_held_out_faces(tmp_path):
    # seed 11: neither the training faces (seed 102) nor the faces of docs/decisions.md's tables (seed 0)
    assert main(["data", "synthface", "--num-images", "5120", "--size", "64", "--seed", "11",
                 "--output-dir", str(tmp_path / "faces")]) == 0  # fmt: skip
    result_path = tmp_path / "eval.json"
    assert main(["eval-tokenizer", "--model", DEFAULT_VQ_MODEL, "--data", str(tmp_path / "faces"), "--split", "test",
                 "--num-images", "256", "--json", str(result_path)]) == 0  # fmt: skip
    result = json.loads(result_path.read_text())
    assert result["num_images"] == 256 and result["image_size"] == 64
    assert result["psnr"] >= 28.0
    assert result["codebook_usage"] >= 0.5
    assert result["judge_accuracy_originals"] - result["judge_accuracy_reconstructions"] <= 0.03
