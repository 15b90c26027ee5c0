"""Static security checks over the package and the Space: no pickle loading, no eval/exec, and no
`trust_remote_code=True` that the user did not pass (the Space's own serving checks live in test_space.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import unif2ace_hf

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(Path(unif2ace_hf.__file__).parent.rglob("*.py")) + sorted((ROOT / "spaces").rglob("*.py"))
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}
PICKLE_CALLS = {"read_pickle", "register_for_checkpointing", "load_custom_state"}


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def findings(tree: ast.AST) -> list[str]:
    """Every risky construct in one module, as `line: what`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("eval", "exec", "compile", "__import__"):
                found.append(f"{node.lineno}: {name}()")
            if name == "torch.load" or name.endswith(".torch.load"):
                if not _is_true(_keyword(node, "weights_only")):
                    found.append(f"{node.lineno}: torch.load without weights_only=True")
            if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy"):
                if _is_true(_keyword(node, "allow_pickle")):
                    found.append(f"{node.lineno}: numpy load with allow_pickle=True")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                found.append(f"{node.lineno}: {name} (use yaml.safe_load)")
            if name.split(".")[-1] in PICKLE_CALLS:
                found.append(f"{node.lineno}: {name} (unpickles)")
            if _is_true(_keyword(node, "trust_remote_code")):
                found.append(f"{node.lineno}: trust_remote_code=True set by our code")
    return found


def test_the_scan_covers_the_package_and_the_space():
    names = {p.name for p in SOURCES}
    assert {"modeling_unif2ace.py", "processing_unif2ace.py", "trainer.py", "app.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)) if ROOT in p.parents else p.name)
def test_no_pickle_eval_or_forced_remote_code(path):
    assert findings(ast.parse(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import torch\nstate = torch.load(path)", "torch.load without weights_only=True"),
        ("import torch\nstate = torch.load(path, weights_only=False)", "torch.load without weights_only=True"),
        ("import pickle", "import pickle"),
        ("from joblib import load", "from joblib import"),
        ("value = eval(text)", "eval()"),
        ("exec(code)", "exec()"),
        ("import numpy as np\nnp.load(path, allow_pickle=True)", "allow_pickle=True"),
        ("import yaml\nyaml.load(text)", "yaml.load"),
        ("accelerator.register_for_checkpointing(scheduler)", "unpickles"),
        ("AutoModel.from_pretrained(repo, trust_remote_code=True)", "trust_remote_code=True"),
    ],
)
def test_the_scan_catches_each_pattern(source, expected):
    found = findings(ast.parse(source))
    assert len(found) == 1 and expected in found[0]


@pytest.mark.parametrize(
    "source",
    [
        "import torch\nstate = torch.load(path, map_location='cpu', weights_only=True)",
        "model.eval()",
        "import yaml\nyaml.safe_load(text)",
        "AutoModel.from_pretrained(repo, trust_remote_code=trust_remote_code)",  # the user's own choice, passed on
        "import numpy as np\nnp.load(path, mmap_mode='r')",
    ],
)
def test_safe_spellings_pass(source):
    assert findings(ast.parse(source)) == []
