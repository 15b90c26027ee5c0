"""pipeline("face-understanding"): inputs, answers vs captions, batching, KV cache vs recompute, remote code."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from tiny_models import tiny_checkpoint
from unif2ace_hf import FaceUnderstandingPipeline


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model, processor = tiny_checkpoint()
    folder = tmp_path_factory.mktemp("face-model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def vqa(checkpoint):
    return pipeline("face-understanding", model=str(checkpoint[0]), device="cpu")


def faces(count: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)) for _ in range(count)]


def show_o_answer(model, processor, image, question, new_tokens: int) -> str:
    """Show-o's loop: the whole sequence through the model for each token (no cache), greedy, with the pipeline's
    restriction of answers to text tokens."""
    inputs = processor(images=image, text=question)
    input_ids = model.fill_image_placeholders(inputs["input_ids"], inputs["pixel_values"])
    sequence = input_ids
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=sequence, use_cache=False).logits[:, -1]
            logits[:, model.config.non_text_token_ids()] = -float("inf")
            next_token = logits.argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, next_token], dim=1)
            if int(next_token) == model.config.eos_token_id:
                break
    return processor.batch_decode(sequence[:, input_ids.shape[1] :], skip_special_tokens=True)[0].strip()


def test_task_is_registered_and_loads_by_path(vqa):
    assert isinstance(vqa, FaceUnderstandingPipeline)


def test_question_gives_an_answer_and_no_question_a_caption(vqa):
    image = faces(1)[0]
    answer = vqa(image, question="What colour is her hair?", max_new_tokens=6)
    caption = vqa(image, max_new_tokens=6)
    assert set(answer) == {"answer"} and isinstance(answer["answer"], str) and answer["answer"]
    assert set(caption) == {"caption"} and isinstance(caption["caption"], str)
    assert vqa({"image": image, "question": "What colour is her hair?"}, max_new_tokens=6) == answer


def test_answers_with_the_kv_cache_equal_recomputing_the_sequence(vqa, checkpoint):
    _, model, processor = checkpoint
    for image, question in zip(faces(2), ["What colour is her hair?", "Is he wearing glasses?"]):
        cached = vqa(image, question=question, max_new_tokens=8)["answer"]
        assert cached == show_o_answer(model, processor, image, question, 8)


def test_a_batch_equals_single_calls(vqa):
    images = faces(3)
    questions = ["What colour is her hair?", "Is he wearing glasses?", None]
    inputs = [{"image": i, "question": q} for i, q in zip(images, questions)]
    batched = vqa(inputs, batch_size=3, max_new_tokens=6)
    singles = [vqa(item, max_new_tokens=6) for item in inputs]
    assert batched == singles
    assert set(batched[2]) == {"caption"}


def test_image_kinds_and_generation_kwargs(vqa, tmp_path):
    image = faces(1)[0]
    path = tmp_path / "face.png"
    image.save(path)
    reference = vqa(image, question="hair?", max_new_tokens=4)
    assert vqa(str(path), question="hair?", max_new_tokens=4) == reference
    assert vqa(np.asarray(image), question="hair?", max_new_tokens=4) == reference
    sampled = vqa(image, question="hair?", max_new_tokens=4, do_sample=True, temperature=0.7, top_k=5)
    assert isinstance(sampled["answer"], str)
    beams = vqa(image, question="hair?", max_new_tokens=4, num_beams=2)
    assert isinstance(beams["answer"], str)


def test_a_streamer_receives_the_answer(vqa, checkpoint):
    from transformers import TextIteratorStreamer

    _, _, processor = checkpoint
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    answer = vqa(faces(1)[0], question="hair?", max_new_tokens=5, streamer=streamer)["answer"]
    assert "".join(streamer).strip() == answer


def test_bad_inputs_are_named(vqa, tmp_path):
    with pytest.raises(ValueError, match="image: expected a PIL image, a file path"):
        vqa(12345)
    with pytest.raises(ValueError, match="no such image file"):
        vqa(str(tmp_path / "missing.png"))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read image file"):
        vqa(str(tmp_path / "broken.jpg"))
    with pytest.raises(ValueError, match="the image is empty"):
        vqa(np.zeros((0, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="inputs: a dict input needs an 'image' key"):
        vqa({"question": "hair?"})
    with pytest.raises(ValueError, match="question: expected a string"):
        vqa(faces(1)[0], question=3)


REMOTE = r"""
import sys
sys.modules["unif2ace_hf"] = None
from transformers import pipeline
from PIL import Image
import numpy as np
vqa = pipeline(model=sys.argv[1], trust_remote_code=True, device="cpu")
image = Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8))
print(type(vqa).__name__, "|", vqa(image, question="hair?", max_new_tokens=4)["answer"])
"""


def test_saved_pipeline_loads_as_remote_code_without_the_package(vqa, tmp_path):
    folder = tmp_path / "saved"
    vqa.save_pretrained(folder)
    vqa.processor.save_pretrained(folder)
    expected = vqa(faces(1)[0], question="hair?", max_new_tokens=4)["answer"]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    process = subprocess.run(
        [sys.executable, "-c", REMOTE, str(folder)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert process.returncode == 0, process.stderr[-3000:]
    name, answer = process.stdout.strip().splitlines()[-1].split(" | ")
    assert name == "FaceUnderstandingPipeline" and answer.strip() == expected


def test_answers_never_contain_image_or_special_tokens(checkpoint):
    """A model that prefers `<|soi|>` (as an untrained one may) still answers in text: the pipeline suppresses every
    id past the text vocabulary, so no image block is opened inside the cached sequence."""
    from unif2ace_hf import UniF2aceForConditionalGeneration

    folder = str(checkpoint[0])
    model = UniF2aceForConditionalGeneration.from_pretrained(folder).eval()
    with torch.no_grad():
        model.lm_head.bias[model.config.soi_token_id] += 1e4
        model.lm_head.bias[model.config.image_token_offset] += 1e4
    vqa = pipeline("face-understanding", model=model, processor=folder, device="cpu")
    output = vqa.forward(vqa.preprocess(faces(1)[0], question="What colour is her hair?"), max_new_tokens=6)
    generated = output["sequences"].flatten().tolist()
    assert generated and all(i < model.config.text_vocab_size or i == model.config.eos_token_id for i in generated)
