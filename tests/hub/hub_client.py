"""Run a Hub client script in a fresh Python whose huggingface_hub points at the local Hub.

Why a subprocess: huggingface_hub reads `HF_ENDPOINT` (and `HF_HUB_OFFLINE`) when it is imported, and the root
conftest has imported it offline in the test process. A fresh process is also what a user of a pushed repo has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from local_hub import LocalHub

CLIENT_TIMEOUT_S = 900  # one client process does every load; a loaded 2-core machine took over 300 s
RESULT_MARKER = "RESULT "


def hub_env(hub: LocalHub, hf_home: Path) -> dict[str, str]:
    """Our endpoint, online, legacy LFS uploads (no Xet), no telemetry, and a cache of the caller's choosing."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_UPDATE_DOWNLOAD_COUNTS="0",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        GRADIO_ANALYTICS_ENABLED="False",
        TOKENIZERS_PARALLELISM="false",
        HF_HOME=str(hf_home),
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def run_hub_client(hub: LocalHub, script: str, workdir: Path, **params) -> dict:
    """Run `script` with `params` as JSON in `sys.argv[1]` (cache: `workdir/hf_home` unless `params["hf_home"]`);
    return the JSON object the script printed after `RESULT ` (libraries may print prompts on stdout too)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = hub_env(hub, Path(params.get("hf_home", workdir / "hf_home")))
    process = subprocess.run(
        [sys.executable, "-c", script, json.dumps(params, default=str)],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )
    if process.returncode != 0:
        raise AssertionError(
            f"client failed ({process.returncode}):\n{process.stdout[-2000:]}\n{process.stderr[-5000:]}"
        )
    start = process.stdout.rfind(RESULT_MARKER)
    if start < 0:
        raise AssertionError(f"client printed no result:\n{process.stdout[-2000:]}\n{process.stderr[-5000:]}")
    return json.loads(process.stdout[start + len(RESULT_MARKER) :].strip().splitlines()[0])
