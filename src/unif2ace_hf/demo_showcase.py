"""`unif2ace demo`: the default model end to end on this machine, offline, with a page to look at the results.

Generates faces from detailed captions and lets the attribute judge read them back, edits a face's hair colour by
regenerating only the hair region, answers fine-grained questions about the generated and edited faces and about a
real photograph shipped by an installed package, and writes PNGs plus `index.html` (and `overview.png`: the four
generated faces, then the edit's source, mask and result) into the output folder.
The hair mask is exact: the same face rendered with two hair colours differs only where hair is drawn.
"""

from __future__ import annotations

import html
import random
import time
from pathlib import Path

import torch
from PIL import Image, ImageChops

# SynthFace's own question wording: the model was trained on these forms.
QUESTIONS = (
    "What color is the person's hair?",
    "What color are the person's eyes?",
    "Is the person wearing glasses?",
    "What emotion does the person show?",
    "About how old does the person look?",
)
PROMPT_SEEDS = (11, 23, 37, 41)


def real_photographs() -> list[tuple[str, Image.Image]]:
    """Public-domain portraits that installed packages ship (matplotlib, scikit-image); none if neither is there."""
    photos = []
    try:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as handle:
            photos.append(("Grace Hopper (matplotlib sample data, public domain)", Image.open(handle).convert("RGB")))
    except (ImportError, OSError, ValueError):
        pass
    try:
        from skimage import data

        photos.append(("Eileen Collins (scikit-image astronaut, public domain)", Image.fromarray(data.astronaut())))
    except (ImportError, OSError, ValueError):
        pass
    return photos


def hair_mask(attributes: dict[str, str], size: int, seed: int) -> Image.Image:
    """White where the hair is drawn: the face rendered with two other hair colours, differenced."""
    from .data.synthface import render

    colours = [c for c in ("pink", "blue", "black") if c != attributes["hair_color"]][:2]
    a, b = (render({**attributes, "hair_color": c}, size=size, seed=seed) for c in colours)
    diff = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v > 8 else 0)
    return diff


def run_showcase(model_path: str, output_dir: Path) -> dict:
    """Run every part, print what happens, write the PNGs and index.html; returns what the page shows."""
    from transformers import pipeline

    from . import UniF2acePipeline
    from .data.synthface import make_caption, render, sample_attributes
    from .evaluation import AttributeJudge
    from .evaluation.caption_parser import parse_caption

    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pipe = UniF2acePipeline.from_pretrained(model_path)
    pipe.set_progress_bar_config(disable=True)
    vqa = pipeline("face-understanding", model=model_path)
    judge = AttributeJudge.load_default()
    size = pipe.model.vq_model.config.image_size
    page: dict = {"generated": [], "edit": None, "photos": []}

    def ask(image: Image.Image) -> list[tuple[str, str]]:
        return [(q, vqa(image, question=q, max_new_tokens=12)["answer"]) for q in QUESTIONS]

    print("A. text-to-face: detailed captions in, faces out; the attribute judge reads each face back")
    prompts = []
    for seed in PROMPT_SEEDS:
        rng = random.Random(seed)
        prompts.append(make_caption(sample_attributes(rng), rng)[0])
    images = pipe(
        prompts,
        num_inference_steps=12,
        guidance_scale=3.0,
        generator=[torch.Generator().manual_seed(s) for s in PROMPT_SEEDS],
    ).images
    for index, (prompt, image, reading) in enumerate(zip(prompts, images, judge(images))):
        stated = parse_caption(prompt)
        agree = sum(reading[c] == v for c, v in stated.items())
        name = f"generated_{index}.png"
        image.resize((256, 256), Image.NEAREST).save(output_dir / name)
        answers = ask(image)
        print(f"   {name}: judge agrees with {agree}/{len(stated)} stated attributes")
        print(f"     prompt: {prompt}")
        for question, answer in answers:
            print(f"     Q: {question} A: {answer}")
        page["generated"].append(
            {"file": name, "prompt": prompt, "agree": agree, "stated": len(stated), "answers": answers}
        )

    print("B. editing: regenerate only the hair of a face, with a new hair colour in the prompt")
    rng = random.Random(5)
    attributes = sample_attributes(rng)
    attributes.update(bald="no", hat="none", hair_length="long", hair_color="black")
    render_seed = 3
    face = render(attributes, size=size, seed=render_seed)
    mask = hair_mask(attributes, size, render_seed)
    target = "blond"
    prompt = make_caption({**attributes, "hair_color": target}, random.Random(6))[0]
    edited = pipe(
        prompt,
        image=face,
        mask_image=mask,
        num_inference_steps=12,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    before, after = judge([face, edited])
    for name, image in (("edit_source.png", face), ("edit_mask.png", mask), ("edit_result.png", edited)):
        image.resize((256, 256), Image.NEAREST).save(output_dir / name)
    print(
        f"   hair colour by the judge: before {before['hair_color']!r}, after {after['hair_color']!r} "
        f"(asked for {target!r}); {100 * (sum(mask.getdata()) / 255) / (size * size):.0f}% of pixels regenerated"
    )
    edit_answers = ask(edited)
    for question, answer in edit_answers:
        print(f"     Q: {question} A: {answer}")
    page["edit"] = {
        "prompt": prompt,
        "before": before["hair_color"],
        "after": after["hair_color"],
        "target": target,
        "answers": edit_answers,
    }

    print("C. a real photograph (out of domain: the default model has only seen SynthFace cartoons)")
    for index, (credit, photo) in enumerate(real_photographs()):
        name = f"photo_{index}.png"
        photo.copy().resize((256, 256)).save(output_dir / name)
        answers = ask(photo)
        caption = vqa(photo, max_new_tokens=64)["caption"]
        print(f"   {credit}")
        for question, answer in answers:
            print(f"     Q: {question} A: {answer}")
        print(f"     caption: {caption}")
        page["photos"].append({"file": name, "credit": credit, "answers": answers, "caption": caption})
    if not page["photos"]:
        print("   (no photograph: install the `demo` extra for matplotlib / scikit-image)")

    tiles = [*images, face, mask.convert("RGB"), edited]
    overview = Image.new("RGB", (128 * len(tiles) + 8 * (len(tiles) - 1), 128), "white")
    for index, tile in enumerate(tiles):
        overview.paste(tile.convert("RGB").resize((128, 128), Image.NEAREST), (136 * index, 0))
    overview.save(output_dir / "overview.png")
    page["seconds"] = time.perf_counter() - started
    (output_dir / "index.html").write_text(render_page(page, model_path))
    print(f"   wrote {output_dir}/index.html and the PNGs in {page['seconds']:.0f} s")
    return page


def _answers_html(answers: list[tuple[str, str]]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(q)} <b>{html.escape(a)}</b></li>" for q, a in answers) + "</ul>"


def render_page(page: dict, model_path: str) -> str:
    """A self-contained page (relative image links only) with everything the demo printed."""
    cells = []
    for item in page["generated"]:
        cells.append(
            f"<figure><img src='{item['file']}' width=192><figcaption><p>{html.escape(item['prompt'])}</p>"
            f"<p>judge agrees with {item['agree']}/{item['stated']} stated attributes</p>"
            f"{_answers_html(item['answers'])}</figcaption></figure>"
        )
    edit = page["edit"]
    edit_html = (
        "<figure><img src='edit_source.png' width=192><img src='edit_mask.png' width=192>"
        f"<img src='edit_result.png' width=192><figcaption><p>{html.escape(edit['prompt'])}</p>"
        f"<p>hair colour (judge): {html.escape(edit['before'])} → {html.escape(edit['after'])} "
        f"(asked for {html.escape(edit['target'])})</p>{_answers_html(edit['answers'])}</figcaption></figure>"
    )
    photos = "".join(
        f"<figure><img src='{p['file']}' width=192><figcaption><p>{html.escape(p['credit'])}</p>"
        f"{_answers_html(p['answers'])}<p>caption: {html.escape(p['caption'])}</p></figcaption></figure>"
        for p in page["photos"]
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>UniF²ace demo</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}figure{display:inline-block;"
        "vertical-align:top;width:500px;margin:8px}img{image-rendering:pixelated;margin-right:4px}</style>"
        f"<h1>UniF²ace demo</h1><p>model: {html.escape(Path(model_path).name)} · {page['seconds']:.0f} s on this "
        "machine</p><h2>Text to face</h2>"
        + "".join(cells)
        + "<h2>Editing: new hair colour, hair region only</h2>"
        + edit_html
        + "<h2>A real photograph (out of domain)</h2>"
        + (photos or "<p>none installed</p>")
    )


__all__ = ["hair_mask", "real_photographs", "render_page", "run_showcase"]
