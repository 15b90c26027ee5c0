"""UniF²ace on a Gradio Space: understand a face, generate one from a description, edit part of one.

Run it with `make space` (127.0.0.1) or `python spaces/app.py` (port from `GRADIO_SERVER_PORT`). The checkpoint comes
only from configuration: `build_app(model_path)`, else `$UNIF2ACE_MODEL`, else the package's shipped default model.
Endpoints for `gradio_client`: `/understand`, `/generate`, `/edit`.
"""

from __future__ import annotations

import os

# Both are needed for zero outbound traffic (gradio analytics and the Hub/gradio_client telemetry).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import functools
import html

import atomic_cache
import gradio as gr
from checked_inputs import MAX_UPLOAD_SIZE, checked, editor_image_and_mask
from face_examples import hair_mask_layer, real_photo_examples, synthface_examples
from face_service import MAX_GUIDANCE, MAX_SEED, MAX_STEPS, FaceService

QUEUE_SIZE = 64
"""Requests waiting beyond this are turned away with a clear "queue is full" message instead of piling up."""

MODEL_CONCURRENCY = 1
"""The three endpoints share one model and two CPU cores: they run one at a time (torch already uses every core)."""

CACHE_CLEANUP = (600, 3600)
"""Every 10 minutes, delete generated files older than an hour, so a long-running Space does not fill its disk."""

LOCAL_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
"""System fonts: the page then fetches nothing from font services (it works offline)."""

FACE_OUTPUT_CSS = ".face-output img {width: 100% !important; height: 100% !important; object-fit: contain;}"
"""The model makes 64×64 faces: the page scales them up to the output box; the API still returns the model's pixels."""

DEFAULT_STEPS = 24  # enough for the small default model to draw eyes and a mouth
DEFAULT_GUIDANCE = 3.0

INTRO = """# UniF²ace: fine-grained face understanding and generation
**Understand** answers a question about a face (or captions it when the question is empty). **Generate** draws a face
from a detailed description. **Edit** regenerates the part of a face you paint over, following the description.
The shipped model is small and trained on SynthFace, a procedural face data set: it sees 64×64 faces."""


def _user_errors(handler):
    """Bad input raises ValueError naming the argument; show it to the user as a Gradio error message."""

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:  # already a user-facing message (gr.Error is itself a ValueError)
            raise
        except ValueError as error:
            raise gr.Error(html.escape(str(error), quote=False)) from None  # the modal renders HTML

    return wrapped


def _progress_reporter(progress: gr.Progress):
    return lambda done, total: progress((done, total), desc="Sampling", unit="steps")


def _sampling_controls(prefix: str):
    steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="Steps", elem_id=f"{prefix}-steps")
    guidance = gr.Slider(0.0, MAX_GUIDANCE, value=DEFAULT_GUIDANCE, step=0.5, label="Guidance scale")
    seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id=f"{prefix}-seed")
    return checked(steps, "steps"), checked(guidance, "guidance"), checked(seed, "seed")


def build_app(model_path: str | None = None) -> gr.Blocks:
    """The Space as Blocks (not launched): loads the model once; launch it with `launch(build_app())`."""
    atomic_cache.install()  # identical outputs served at once must not be read half-rewritten
    service = FaceService(model_path)
    faces = synthface_examples(3)
    photos = real_photo_examples()

    @_user_errors
    def understand(image, question):
        return service.understand(image, question)

    @_user_errors
    def generate(prompt, steps, guidance, seed, progress=gr.Progress()):  # noqa: B008 - Gradio's injection idiom
        return service.generate(prompt, steps, guidance, seed, on_step=_progress_reporter(progress))

    @_user_errors
    def edit(editor_value, prompt, steps, guidance, seed, progress=gr.Progress()):  # noqa: B008
        image, mask = editor_image_and_mask(editor_value)
        return service.edit(image, mask, prompt, steps, guidance, seed, on_step=_progress_reporter(progress))

    with gr.Blocks(title="UniF²ace", delete_cache=CACHE_CLEANUP, analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Understand", id="understand"):
            with gr.Row():
                face = checked(gr.Image(type="pil", label="Face", sources=["upload", "clipboard"]), "image")
                with gr.Column():
                    question = gr.Textbox(label="Question (leave empty for a caption)", max_lines=2)
                    understand_button = gr.Button("Understand", variant="primary")
                    answer = gr.Textbox(label="Answer or caption", interactive=False, lines=4)
            gr.Examples(
                examples=[[f.image, f.question] for f in faces] + [[photo, ""] for photo in photos.values()],
                inputs=[face, question],
                label="SynthFace faces and real photographs",
            )
            gr.on(
                [understand_button.click, question.submit],
                understand,
                [face, question],
                answer,
                api_name="understand",
                concurrency_id="model",
            )

        with gr.Tab("Generate", id="generate"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label="Description", lines=4, elem_id="generate-prompt")
                    steps, guidance, seed = _sampling_controls("generate")
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                generated = gr.Image(
                    label="Generated face",
                    type="pil",
                    format="png",
                    height=320,
                    elem_id="generate-output",
                    elem_classes=["face-output"],
                )
            gr.Examples(examples=[[f.caption] for f in faces], inputs=[prompt], label="SynthFace captions")
            generate_button.click(
                generate,
                [prompt, steps, guidance, seed],
                generated,
                api_name="generate",
                concurrency_id="model",
            )

        with gr.Tab("Edit", id="edit"):
            with gr.Row():
                with gr.Column():
                    editor = checked(
                        gr.ImageEditor(
                            type="pil",
                            label="Face: paint over what to regenerate",
                            sources=["upload", "clipboard"],
                            brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                        ),
                        "image",
                    )
                    edit_prompt = gr.Textbox(label="Description of the edited face", lines=3)
                    edit_steps, edit_guidance, edit_seed = _sampling_controls("edit")
                    edit_button = gr.Button("Edit", variant="primary")
                edited = gr.Image(
                    label="Edited face", type="pil", format="png", height=320, elem_classes=["face-output"]
                )
            gr.Examples(
                examples=[
                    [{"background": f.image, "layers": [hair_mask_layer(f.image)], "composite": None}, f.caption]
                    for f in faces[:2]
                ],
                inputs=[editor, edit_prompt],
                label="SynthFace faces with the hair painted",
            )
            edit_button.click(
                edit,
                [editor, edit_prompt, edit_steps, edit_guidance, edit_seed],
                edited,
                api_name="edit",
                concurrency_id="model",
            )
    demo.queue(default_concurrency_limit=MODEL_CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, **overrides):
    """Launch with the Space's limits; `overrides` go to `Blocks.launch` (tests pass a port and `prevent_thread_lock`).

    No `allowed_paths`: the server serves only its own generated files and the examples it made.
    """
    options = dict(
        max_file_size=MAX_UPLOAD_SIZE,
        theme=gr.themes.Soft(font=LOCAL_FONTS, font_mono=["ui-monospace", "monospace"]),
        css=FACE_OUTPUT_CSS,
        show_error=False,
    )
    options.update(overrides)
    return demo.launch(**options)


if __name__ == "__main__":
    launch(build_app())
