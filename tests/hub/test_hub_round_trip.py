"""Push to and load from a Hub endpoint by repo id: models, both pipelines, remote code, SynthFace, a LoRA adapter,
revisions, and broken downloads.

Tiny models are built here and saved to folders; one fresh process (HF_ENDPOINT = the local Hub) pushes them with the
libraries' own `push_to_hub`, and fresh processes load them back by repo id. Each check's outcome is recorded
separately, so a failure names the API that broke. Expected outputs are computed in this process from the folders.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hub_client import run_hub_client
from huggingface_hub import ModelCard
from PIL import Image
from transformers import pipeline

from tiny_models import TINY_TEXTS, assert_same_outputs, tiny_checkpoint
from unif2ace_hf import DEFAULT_MODEL, UniF2aceMaskGITScheduler, UniF2acePipeline
from unif2ace_hf.data import build_synthface
from unif2ace_hf.training.lora import apply_lora, load_adapter, save_adapter

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

SYNTHFACE_IMAGES = 8
PROMPT = TINY_TEXTS[0]
QUESTION = "What colour is her hair?"

PUBLISH = r"""
import json, sys
p = json.loads(sys.argv[1])
from peft import PeftModel
from unif2ace_hf import DEFAULT_MODEL, FaceUnderstandingPipeline, UniF2aceForConditionalGeneration, UniF2acePipeline
from unif2ace_hf.data import build_synthface

out = {}
pipe = UniF2acePipeline.from_pretrained(p["v1"])
out["tiny-face"] = pipe.push_to_hub("tester/tiny-face").oid
model = UniF2aceForConditionalGeneration.from_pretrained(p["v1"])
out["tiny-model"] = model.push_to_hub("tester/tiny-model").oid
understanding = FaceUnderstandingPipeline(model=model, processor=pipe.processor, device="cpu")
out["tiny-vqa"] = understanding.push_to_hub("tester/tiny-vqa").oid
out["history-v1"] = pipe.push_to_hub("tester/history").oid
out["history-v2"] = UniF2acePipeline.from_pretrained(p["v2"]).push_to_hub("tester/history", commit_message="v2").oid
base = UniF2aceForConditionalGeneration.from_pretrained(p["v1"])
out["tiny-lora"] = PeftModel.from_pretrained(base, p["adapter"]).push_to_hub("tester/tiny-lora").oid
build_synthface(p["synthface_images"], size=16, seed=0).push_to_hub("tester/synthface")
from huggingface_hub import HfApi
from unif2ace_hf.data.synthface.builder import write_synthface
write_synthface(p["synthface_folder"], p["synthface_images"], size=16, seed=0)  # what `unif2ace data synthface` writes
HfApi().create_repo("tester/synthface-folder", repo_type="dataset")
HfApi().upload_folder(repo_id="tester/synthface-folder", repo_type="dataset", folder_path=p["synthface_folder"])
for name in ("truncated", "corrupted"):
    pipe.push_to_hub(f"tester/{name}")
UniF2acePipeline.from_pretrained(DEFAULT_MODEL).push_to_hub("tester/unif2ace-tiny")
pipe.save_pretrained(p["saved"], push_to_hub=True, repo_id="tester/saved-and-pushed")
print("RESULT", json.dumps(out))
"""

LOAD = r"""
import json, sys, time, traceback
p = json.loads(sys.argv[1])
import numpy as np, torch
from PIL import Image
from datasets import load_dataset
from huggingface_hub import hf_hub_download
from transformers import AutoModelForCausalLM, pipeline
from unif2ace_hf import UniF2acePipeline
from unif2ace_hf.training.lora import load_adapter, load_with_adapter

ids = torch.load(p["ids"])
image = Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8))
status, tensors, values, seconds = {}, {}, {}, {}

def check(name):
    def wrap(fn):
        start = time.perf_counter()
        try:
            fn()
            status[name] = "ok"
        except Exception as error:
            status[name] = f"{type(error).__name__}: {error}\n{traceback.format_exc()[-1500:]}"
        seconds[name] = round(time.perf_counter() - start, 2)
    return wrap

def codes(pipe):
    generator = torch.Generator().manual_seed(0)
    return pipe(p["prompt"], num_inference_steps=3, generator=generator, output_type="codes").images

@check("model")
def _():
    model = AutoModelForCausalLM.from_pretrained("tester/tiny-model").eval()
    with torch.no_grad():
        tensors["model"] = model(input_ids=ids).logits

@check("pipeline")
def _():
    tensors["pipeline"] = codes(UniF2acePipeline.from_pretrained("tester/tiny-face"))

@check("understanding")
def _():
    vqa = pipeline("face-understanding", model="tester/tiny-face", device="cpu")
    values["understanding"] = [type(vqa).__module__, vqa(image, question=p["question"], max_new_tokens=4)["answer"]]

@check("lora")
def _():
    base = AutoModelForCausalLM.from_pretrained("tester/tiny-model")
    with torch.no_grad():
        tensors["lora"] = load_adapter(base, "tester/tiny-lora").eval()(input_ids=ids).logits
        tensors["lora_merged"] = load_with_adapter("tester/tiny-model", "tester/tiny-lora")(input_ids=ids).logits

@check("revision")
def _():
    first = UniF2acePipeline.from_pretrained("tester/history", revision=p["history-v1"])
    latest = UniF2acePipeline.from_pretrained("tester/history")
    model = AutoModelForCausalLM.from_pretrained("tester/history", revision=p["history-v1"]).eval()
    with torch.no_grad():
        tensors["revision_first"] = first.model(input_ids=ids).logits
        tensors["revision_latest"] = latest.model(input_ids=ids).logits
        tensors["revision_transformers"] = model(input_ids=ids).logits

def rows(split):
    return [
        {"id": r["id"], "caption": r["caption"], "qa": r["qa"], "attributes": r["attributes"],
         "pixels": np.asarray(r["image"]).tolist()}
        for r in split
    ]

DATASETS = (("dataset", "tester/synthface", False), ("dataset_streaming", "tester/synthface", True),
            ("dataset_folder", "tester/synthface-folder", False))
for name, repo, streaming in DATASETS:
    @check(name)
    def _(name=name, repo=repo, streaming=streaming):
        dataset = load_dataset(repo, streaming=streaming)
        values[name] = {split: rows(split_rows) for split, split_rows in dataset.items()}

@check("default")
def _():
    tensors["default"] = codes(UniF2acePipeline.from_pretrained("tester/unif2ace-tiny"))
    vqa = pipeline("face-understanding", model="tester/unif2ace-tiny", device="cpu")
    values["default"] = vqa(image, question=p["question"], max_new_tokens=6)["answer"]

@check("api")
def _():
    from huggingface_hub import HfApi, HfFileSystem
    api = HfApi()
    refs = api.list_repo_refs("tester/history")
    commits = list(api.list_repo_commits("tester/history"))
    tree = list(api.list_repo_tree("tester/tiny-face", recursive=True))
    info = api.model_info("tester/tiny-face", files_metadata=True)
    with HfFileSystem().open("tester/tiny-face/model.safetensors", "rb", block_size=64) as handle:
        handle.seek(8)
        chunk = handle.read(100)
    values["api"] = {
        "main": [b.target_commit for b in refs.branches if b.name == "main"],
        "commits": [c.commit_id for c in commits],
        "tree": sorted(e.path for e in tree if hasattr(e, "size") and not hasattr(e, "tree_id")),
        "folders": sorted(e.path for e in tree if hasattr(e, "tree_id")),
        "siblings": {s.rfilename: s.size for s in info.siblings},
        "lfs": {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs},
        "range": chunk.hex(),
    }

def outcome(load, *args, **kwargs):
    try:
        load(*args, **kwargs)
        return "loaded"
    except Exception as error:
        return f"{type(error).__name__}: {error}"

broken = values["broken"] = {}
for repo in ("truncated", "corrupted"):  # the test injected faults into these two repos' weights
    for name, load in (("pipeline", UniF2acePipeline.from_pretrained), ("transformers", AutoModelForCausalLM.from_pretrained)):
        broken[f"{repo}/{name}"] = outcome(load, f"tester/{repo}", cache_dir=f"{p['caches']}/{repo}-{name}")
broken["corrupted/understanding"] = outcome(pipeline, "face-understanding", model="tester/corrupted", device="cpu")
broken["missing-repo"] = outcome(UniF2acePipeline.from_pretrained, "tester/no-such-repo")
broken["missing-revision"] = outcome(UniF2acePipeline.from_pretrained, "tester/tiny-face", revision="0" * 40)
broken["missing-file"] = outcome(hf_hub_download, "tester/tiny-face", "no-such-file.json")
broken["not-a-repo-id"] = outcome(UniF2acePipeline.from_pretrained, "not/a/repo/id")

torch.save(tensors, p["out"])
print("RESULT", json.dumps({"status": status, "values": values, "seconds": seconds}))
"""

REMOTE = r"""
import json, sys, traceback
sys.modules["unif2ace_hf"] = None  # this process cannot import the package
p = json.loads(sys.argv[1])
import numpy as np, torch
from PIL import Image
from transformers import AutoModelForCausalLM, pipeline

ids = torch.load(p["ids"])
image = Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8))
out = {}
try:
    pipeline(model="tester/tiny-vqa", device="cpu")
    out["without_trust"] = "loaded"
except ValueError as error:
    out["without_trust"] = str(error)
vqa = pipeline(model="tester/tiny-vqa", trust_remote_code=True, device="cpu")
out["pipeline"] = [type(vqa).__name__, type(vqa).__module__, vqa(image, question=p["question"], max_new_tokens=4)["answer"]]
model = AutoModelForCausalLM.from_pretrained("tester/tiny-face", trust_remote_code=True).eval()
with torch.no_grad():
    torch.save(model(input_ids=ids).logits, p["out"])
out["model"] = type(model).__module__
print("RESULT", json.dumps(out))
"""


def face_image() -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8))


def generate_codes(pipe: UniF2acePipeline) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return pipe(PROMPT, num_inference_steps=3, generator=generator, output_type="codes").images


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Two versions of a tiny pipeline and a LoRA adapter, saved to folders, with the token ids used for logits."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hub-local")
    model, processor = tiny_checkpoint()
    scheduler = UniF2aceMaskGITScheduler(mask_token_id=64, codebook_size=64)
    v1 = UniF2acePipeline(model=model, processor=processor, scheduler=scheduler)
    v1.save_pretrained(root / "v1")
    model_v2 = copy.deepcopy(model)
    with torch.no_grad():
        model_v2.lm_head.weight.add_(0.5)
    v2 = UniF2acePipeline(model=model_v2, processor=processor, scheduler=scheduler)
    v2.save_pretrained(root / "v2")
    adapter = apply_lora(copy.deepcopy(model), {"r": 2, "alpha": 4})
    with torch.no_grad():
        for name, parameter in adapter.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.2)  # a fresh adapter is the identity; make it change the outputs
    save_adapter(adapter, root / "adapter")
    config = model.config
    ids = torch.tensor([[config.mmu_token_id, config.soi_token_id, 110, 111, 112, config.eoi_token_id, 1, 5, 6, 7]])
    torch.save(ids, root / "ids.pt")
    return {"root": root, "v1": v1, "v2": v2, "ids": ids, "adapter": root / "adapter"}


@pytest.fixture(scope="module")
def published(local_hub, local):
    """Everything pushed once, by the libraries' own `push_to_hub`, from a fresh process; commit ids by repo."""
    root = local["root"]
    return run_hub_client(
        local_hub,
        PUBLISH,
        root / "publish",
        v1=root / "v1",
        v2=root / "v2",
        adapter=local["adapter"],
        synthface_images=SYNTHFACE_IMAGES,
        saved=root / "saved",
        synthface_folder=root / "synthface",
    )


@pytest.fixture(scope="module")
def loaded(local_hub, local, published):
    """Everything loaded back by repo id in one fresh process with the package imported, including broken
    downloads (faults injected into the weights of two repos) and missing repos, revisions and files."""
    local_hub.inject_fault("tester/truncated", "model.safetensors", "truncate")
    local_hub.inject_fault("tester/corrupted", "model.safetensors", "corrupt")
    root = local["root"]
    result = run_hub_client(
        local_hub,
        LOAD,
        root / "load",
        ids=root / "ids.pt",
        out=root / "load" / "tensors.pt",
        caches=root / "load" / "caches",
        prompt=PROMPT,
        question=QUESTION,
        **{"history-v1": published["history-v1"]},
    )
    result["tensors"] = torch.load(root / "load" / "tensors.pt")
    return result


def assert_ok(loaded: dict, name: str) -> None:
    assert loaded["status"].get(name) == "ok", loaded["status"].get(name, f"check {name} did not run")


def test_pipeline_push_writes_one_folder_with_weights_in_lfs_and_our_card(local_hub, published):
    files = local_hub.file_paths("tester/tiny-face")
    expected = {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "scheduler/scheduler_config.json",
        "modeling_unif2ace.py",
        "README.md",
    }
    assert expected <= set(files), files
    assert local_hub.stored_file("tester/tiny-face", "model.safetensors").lfs
    with local_hub.lock:  # weights went through the LFS batch API and a PUT of their bytes, never Xet
        requests = list(local_hub.requests)
    assert any(method == "PUT" and path.startswith("/lfs-upload/") for method, path in requests)
    assert not any("xet" in path for _, path in requests)
    assert not local_hub.stored_file("tester/tiny-face", "config.json").lfs
    card = ModelCard(local_hub.stored_file("tester/tiny-face", "README.md").content.decode())
    assert card.data.library_name == "transformers" and "unif2ace" in card.data.tags
    assert 'pipeline("face-understanding", model="tester/tiny-face")' in card.text
    assert "Not measured" in card.text
    # the understanding pipeline's push adds its task as remote code, and the processor
    vqa_files = set(local_hub.file_paths("tester/tiny-vqa"))
    assert {"face_understanding.py", "processor_config.json", "README.md"} <= vqa_files
    vqa_card = ModelCard(local_hub.stored_file("tester/tiny-vqa", "README.md").content.decode())
    assert vqa_card.data.pipeline_tag == "any-to-any" and "# tiny-vqa" in vqa_card.text
    config = json.loads(local_hub.stored_file("tester/tiny-vqa", "config.json").content)
    assert config["custom_pipelines"]["face-understanding"]["impl"] == "face_understanding.FaceUnderstandingPipeline"


def test_the_endpoint_answers_huggingface_hubs_api(local_hub, loaded, published):
    """refs, commits, the recursive tree, file sizes and LFS hashes in the info, and ranged reads (HfFileSystem)."""
    assert_ok(loaded, "api")
    api = loaded["values"]["api"]
    assert api["main"] == [published["history-v2"]]
    assert api["commits"][:2] == [published["history-v2"], published["history-v1"]] and len(api["commits"]) == 3
    files = local_hub.file_paths("tester/tiny-face")
    assert api["tree"] == files and api["folders"] == ["scheduler"]
    assert api["siblings"] == {path: len(local_hub.stored_file("tester/tiny-face", path).content) for path in files}
    weights = local_hub.stored_file("tester/tiny-face", "model.safetensors")
    assert api["lfs"]["model.safetensors"] == weights.sha256
    assert bytes.fromhex(api["range"]) == weights.content[8:108]


def test_save_pretrained_with_push_to_hub(local_hub, published, local):
    pushed = set(local_hub.file_paths("tester/saved-and-pushed"))
    saved = {p.relative_to(local["root"] / "saved").as_posix() for p in (local["root"] / "saved").rglob("*")}
    assert {"model.safetensors", "README.md", "scheduler/scheduler_config.json"} <= pushed
    assert pushed - {".gitattributes"} == {p for p in saved if (local["root"] / "saved" / p).is_file()}


def test_model_push_to_hub_then_from_pretrained(loaded, local):
    assert_ok(loaded, "model")
    assert_same_outputs(loaded["tensors"]["model"], logits(local["v1"].model, local["ids"]))


def test_generation_pipeline_from_repo_id(loaded, local):
    assert_ok(loaded, "pipeline")
    assert torch.equal(loaded["tensors"]["pipeline"], generate_codes(local["v1"]))


def test_understanding_pipeline_from_repo_id_with_the_package(loaded, local):
    assert_ok(loaded, "understanding")
    module, answer = loaded["values"]["understanding"]
    assert module == "unif2ace_hf.pipelines.face_understanding"
    vqa = pipeline("face-understanding", model=local["v1"].model, processor=local["v1"].processor, device="cpu")
    assert answer == vqa(face_image(), question=QUESTION, max_new_tokens=4)["answer"]


def test_understanding_pipeline_as_remote_code_without_the_package(local_hub, local, published):
    root = local["root"]
    result = run_hub_client(
        local_hub, REMOTE, root / "remote", ids=root / "ids.pt", out=root / "remote" / "logits.pt", question=QUESTION
    )
    assert "trust_remote_code=True" in result["without_trust"]
    name, module, answer = result["pipeline"]
    assert name == "FaceUnderstandingPipeline" and module.startswith("transformers_modules.")
    vqa = pipeline("face-understanding", model=local["v1"].model, processor=local["v1"].processor, device="cpu")
    assert answer == vqa(face_image(), question=QUESTION, max_new_tokens=4)["answer"]
    assert result["model"].startswith("transformers_modules.")
    assert_same_outputs(torch.load(root / "remote" / "logits.pt"), logits(local["v1"].model, local["ids"]))


def test_lora_adapter_push_then_load(loaded, local):
    assert_ok(loaded, "lora")
    base = copy.deepcopy(local["v1"].model)
    expected = logits(load_adapter(base, local["adapter"]).eval(), local["ids"])
    assert not torch.equal(expected, logits(local["v1"].model, local["ids"]))  # the adapter does change the model
    assert_same_outputs(loaded["tensors"]["lora"], expected)
    assert torch.allclose(loaded["tensors"]["lora_merged"], expected, atol=1e-4)


def test_second_commit_and_loading_the_first_by_revision(local_hub, loaded, local, published):
    assert_ok(loaded, "revision")
    assert local_hub.commit_ids("tester/history")[:2] == [published["history-v2"], published["history-v1"]]
    first, latest = logits(local["v1"].model, local["ids"]), logits(local["v2"].model, local["ids"])
    assert not torch.equal(first, latest)
    assert_same_outputs(loaded["tensors"]["revision_first"], first)
    assert_same_outputs(loaded["tensors"]["revision_transformers"], first)
    assert_same_outputs(loaded["tensors"]["revision_latest"], latest)


@pytest.mark.parametrize("check", ["dataset", "dataset_streaming", "dataset_folder"])
def test_synthface_push_to_hub_then_load_dataset(loaded, check):
    assert_ok(loaded, check)
    expected = build_synthface(SYNTHFACE_IMAGES, size=16, seed=0)
    got = loaded["values"][check]
    assert sorted(got) == sorted(expected)
    for split, rows in expected.items():
        assert [r["id"] for r in got[split]] == rows["id"], split
        for row, want in zip(got[split], rows):
            assert row["caption"] == want["caption"] and row["qa"] == want["qa"]
            assert row["attributes"] == want["attributes"]
            assert np.array_equal(np.asarray(row["pixels"]), np.asarray(want["image"]))


def test_default_model_push_then_load_by_repo_id(loaded):
    assert_ok(loaded, "default")
    pipe = UniF2acePipeline.from_pretrained(DEFAULT_MODEL)
    assert torch.equal(loaded["tensors"]["default"], generate_codes(pipe))
    vqa = pipeline("face-understanding", model=DEFAULT_MODEL, device="cpu")
    assert loaded["values"]["default"] == vqa(face_image(), question=QUESTION, max_new_tokens=6)["answer"]


@pytest.fixture(scope="module")
def broken(loaded):
    return loaded["values"]["broken"]


def test_truncated_or_corrupted_downloads_are_reported_never_loaded(local_hub, broken):
    size = len(local_hub.stored_file("tester/truncated", "model.safetensors").content)
    # huggingface_hub's own size check stops the short download, for our loader and for transformers alike
    for name in ("pipeline", "transformers"):
        message = broken[f"truncated/{name}"]
        assert message.startswith("OSError") and "Consistency check failed" in message and str(size) in message
    # same size, wrong bytes: our loaders compare the bytes with the hash the Hub announced (the pipeline checks the
    # snapshot it downloaded; our model classes check the repo's cached blobs after transformers' download)
    sha256 = local_hub.stored_file("tester/corrupted", "model.safetensors").sha256
    message = broken["corrupted/pipeline"]
    assert message.startswith("CorruptedDownloadError: model.safetensors: the downloaded file is corrupted")
    assert sha256 in message and "force_download=True" in message
    message = broken["corrupted/transformers"]
    assert message.startswith("CorruptedDownloadError: tester/corrupted") and sha256 in message
    message = broken["corrupted/understanding"]  # transformers' pipeline() wraps the loader's error
    assert "CorruptedDownloadError: tester/corrupted" in message and sha256 in message


def test_missing_repos_revisions_and_files_get_the_hubs_errors(broken):
    assert broken["missing-repo"].startswith("RepositoryNotFoundError")
    assert broken["missing-revision"].startswith("RevisionNotFoundError")
    assert broken["missing-file"].startswith("RemoteEntryNotFoundError")
    assert broken["not-a-repo-id"].startswith("ValueError: pretrained_model_name_or_path: 'not/a/repo/id' is neither")
