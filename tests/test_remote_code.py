"""A saved folder loads with trust_remote_code=True in a process where unif2ace_hf cannot be imported."""

import json
import os
import subprocess
import sys

import torch

from tiny_models import assert_same_outputs, tiny_config
from unif2ace_hf import UniF2aceForConditionalGeneration

LOADER = r"""
import sys
sys.modules["unif2ace_hf"] = None  # make `import unif2ace_hf` fail in this process
try:
    import unif2ace_hf  # noqa: F401
    raise SystemExit("unif2ace_hf is importable; the test would prove nothing")
except ImportError:
    pass
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
folder = sys.argv[1]
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(folder, trust_remote_code=True)
ids = torch.load(sys.argv[2])
with torch.no_grad():
    logits = model(input_ids=ids).logits
    generated = model.generate(ids, max_new_tokens=4, do_sample=False)
torch.save({"logits": logits, "generated": generated, "classes": [type(config).__module__, type(model).__module__, type(base).__name__]}, sys.argv[3])
"""


def test_remote_code_loads_without_the_package(tmp_path):
    config = tiny_config()
    model = UniF2aceForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path / "model")
    saved = sorted(os.listdir(tmp_path / "model"))
    assert {"configuration_unif2ace.py", "modeling_unif2ace.py", "moe.py", "omni_attention.py"} <= set(saved)
    auto_map = json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_unif2ace.UniF2aceModel"

    ids = torch.tensor([[config.mmu_token_id, config.soi_token_id, 110, 111, 112, config.eoi_token_id, 0, 5, 6]])
    torch.save(ids, tmp_path / "ids.pt")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    process = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path / "model"), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt")
    assert result["classes"][0].startswith("transformers_modules.") and result["classes"][1].startswith(
        "transformers_modules."
    )
    assert result["classes"][2] == "UniF2aceModel"
    with torch.no_grad():
        assert_same_outputs(result["logits"], model(input_ids=ids).logits)
        assert torch.equal(result["generated"], model.generate(ids, max_new_tokens=4, do_sample=False))
