import json
import random

import pytest
import torch
from PIL import Image

from unif2ace_hf.data.synthface import TAXONOMY, render, sample_attributes
from unif2ace_hf.evaluation import AttributeJudge
from unif2ace_hf.evaluation.attribute_judge import CONFIG_NAME, WEIGHTS_NAME, AttributeJudgeModel
from unif2ace_hf.evaluation.train_judge import main as train_main
from unif2ace_hf.evaluation.train_judge import per_category_accuracy, render_labeled


def _fresh(n, stream, size=64):
    """Faces from a random stream the judge never trained on (training uses 'judge/train/...')."""
    faces = []
    for i in range(n):
        rng = random.Random(f"test/{stream}/{i}")
        attributes = sample_attributes(rng, novel=i % 5 == 0)
        faces.append((render(attributes, size, seed=rng.getrandbits(31)), attributes))
    return faces


@pytest.fixture(scope="module")
def judge():
    return AttributeJudge.load_default()


def test_shipped_weights_are_small_safetensors():
    from importlib import resources

    folder = resources.files("unif2ace_hf.evaluation").joinpath("weights")
    weights = folder.joinpath(WEIGHTS_NAME)
    assert weights.is_file() and weights.stat().st_size <= 5 * 1024 * 1024
    assert json.loads(folder.joinpath(CONFIG_NAME).read_text())["taxonomy"] == {c: list(v) for c, v in TAXONOMY.items()}


def test_output_format_any_size_and_mode(judge):
    face = render(sample_attributes(random.Random(1)), 64, seed=1)
    images = [
        face,
        face.resize((200, 200)),
        face.convert("L"),
        face.convert("RGBA"),
        face.convert("P"),
        face.resize((50, 70)),
    ]
    predictions = judge(images)
    assert len(predictions) == len(images)
    for prediction in predictions:
        assert list(prediction) == list(TAXONOMY)
        assert all(prediction[c] in TAXONOMY[c] for c in TAXONOMY)
    assert judge(face) == predictions[:1]  # a single image is accepted too
    assert predictions[1] == predictions[0] or sum(predictions[1][c] != predictions[0][c] for c in TAXONOMY) <= 2


def test_quick_accuracy_on_fresh_faces(judge):
    # A cheap smoke check of the shipped weights; the >= 97% claim is the slow test below.
    faces = _fresh(120, "quick")
    predictions = judge([f for f, _ in faces])
    correct = sum(p[c] == a[c] for p, (_, a) in zip(predictions, faces) for c in TAXONOMY)
    assert correct / (len(faces) * len(TAXONOMY)) >= 0.93


@pytest.mark.slow
def test_shipped_judge_reaches_97_percent_on_fresh_held_out_faces(judge):
    pixels, labels = render_labeled(3000, seed=12345, stream="slow-test-heldout")
    accuracy = per_category_accuracy(judge.model, pixels, labels)
    mean = sum(accuracy.values()) / len(accuracy)
    assert mean >= 0.97, sorted(accuracy.items(), key=lambda kv: kv[1])[:5]
    # And through the public call on 128-pixel renders (resized inside the judge).
    faces = _fresh(500, "slow-128", size=128)
    predictions = judge([f for f, _ in faces])
    public_mean = sum(p[c] == a[c] for p, (_, a) in zip(predictions, faces) for c in TAXONOMY) / (500 * len(TAXONOMY))
    assert public_mean >= 0.97


def test_bad_inputs_name_the_argument(judge):
    with pytest.raises(TypeError, match=r"images\[1\]"):
        judge([Image.new("RGB", (64, 64)), "not an image"])
    with pytest.raises(ValueError, match="images"):
        judge([])
    with pytest.raises(ValueError, match=r"images\[0\].*8x8"):
        judge([Image.new("RGB", (4, 4))])


def test_save_and_reload_round_trip(judge, tmp_path):
    judge.save_pretrained(tmp_path)
    again = AttributeJudge.from_pretrained(tmp_path)
    faces = [f for f, _ in _fresh(8, "roundtrip")]
    assert again(faces) == judge(faces)


def test_wrong_taxonomy_or_missing_files_fail_clearly(judge, tmp_path):
    with pytest.raises(FileNotFoundError, match="No attribute_judge"):
        AttributeJudge.from_pretrained(tmp_path)
    judge.save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    config["taxonomy"]["hair_color"] = config["taxonomy"]["hair_color"][::-1]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="different taxonomy"):
        AttributeJudge.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="heads"):
        AttributeJudge(AttributeJudgeModel([2, 3]))


def test_training_command_runs_and_reports(tmp_path, capsys):
    torch.manual_seed(0)
    code = train_main(
        [
            "--output-dir",
            str(tmp_path),
            "--num-train",
            "64",
            "--num-eval",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--width",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1  # one tiny epoch cannot reach the 97% bar, and the command says so through its exit code
    assert "mean held-out accuracy over 32 categories" in out and "hair_color" in out
    assert (tmp_path / WEIGHTS_NAME).is_file()
    assert AttributeJudge.from_pretrained(tmp_path)([Image.new("RGB", (64, 64))])[0].keys() == TAXONOMY.keys()
