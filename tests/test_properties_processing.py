"""Property-based tests (hypothesis) for the image processor and the processor's text handling.

Whatever image or text a user passes, the result is either a valid model input or a `ValueError` whose message
starts with the argument's name; never another exception, a NaN, or a prompt that changes the sequence layout.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from tiny_models import tiny_checkpoint
from unif2ace_hf.processing_unif2ace import UniF2aceImageProcessor

SIZE = 16
PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
# every mode Pillow can build an image in
PIL_MODES = [
    "1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "RGBa", "La",
    "I;16", "I;16B", "I;16L", "I;16N",
]  # fmt: skip
NUMPY_DTYPES = [
    np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64,
    np.float16, np.float32, np.float64, np.bool_, np.complex64,
]  # fmt: skip
TORCH_DTYPES = [
    torch.uint8, torch.uint16, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool, torch.complex64,
]  # fmt: skip
FILE_FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM"]


@pytest.fixture(scope="module")
def image_processor() -> UniF2aceImageProcessor:
    return UniF2aceImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})


@pytest.fixture(scope="module")
def processor():
    return tiny_checkpoint()[1]


def process_or_named_error(image_processor, image, name: str = "image") -> torch.Tensor | None:
    """The pixel values, checked to be a valid input, or None after a ValueError that names the argument."""
    try:
        pixels = image_processor(image)["pixel_values"]
    except ValueError as error:
        assert str(error).startswith(f"{name}: "), f"unnamed error: {error}"
        return None
    batch = len(image) if isinstance(image, list) else 1
    assert pixels.shape == (batch, 3, SIZE, SIZE) and pixels.dtype == torch.float32
    assert torch.isfinite(pixels).all() and pixels.min() >= -1 and pixels.max() <= 1
    return pixels


# ------------------------------------------------------------------------------------------------- images
@PROPERTY_SETTINGS
@given(
    width=st.integers(1, 8192),
    height=st.integers(1, 8192),
    colour=st.tuples(*[st.integers(0, 255)] * 3),
)
def test_any_size_from_1_to_8192_px_keeps_its_colour(image_processor, width, height, colour):
    """A flat colour stays that colour at any size: resizing, cropping and reduction add nothing."""
    pixels = image_processor(Image.new("RGB", (width, height), colour))["pixel_values"]
    expected = torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
    assert pixels.shape == (1, 3, SIZE, SIZE)
    torch.testing.assert_close(pixels, expected.expand_as(pixels), atol=1.01 / 127.5, rtol=0)


@PROPERTY_SETTINGS
@given(
    mode=st.sampled_from(PIL_MODES),
    width=st.integers(1, 64),
    height=st.integers(1, 64),
    data=st.data(),
)
def test_every_pil_mode_with_random_pixels_gives_a_valid_input(image_processor, mode, width, height, data):
    probe = Image.new(mode, (1, 1))
    bytes_per_row = len(probe.tobytes()) if mode != "1" else 1
    raw = data.draw(st.binary(min_size=bytes_per_row * width * height, max_size=bytes_per_row * width * height))
    if mode == "1":
        raw = bytes(b & 1 for b in raw)
    try:
        image = Image.frombytes(mode, (width, height), raw)
    except ValueError:  # Pillow cannot build this mode from raw bytes of this length: not our input
        image = Image.new(mode, (width, height))
    result = process_or_named_error(image_processor, image)
    if result is None:  # only float images holding NaN or infinity may be refused
        assert mode == "F" and not np.isfinite(np.asarray(image)).all(), f"mode {mode} was refused"
        with pytest.raises(ValueError, match="image: the image contains NaN or infinite values"):
            image_processor(image)


def array_strategy(dtypes) -> st.SearchStrategy:
    side = st.integers(1, 24)
    shapes = st.one_of(
        st.tuples(side, side),
        st.tuples(side, side, st.integers(1, 5)),
        st.tuples(st.integers(1, 5), side, side),
        st.tuples(side),
        st.tuples(st.integers(1, 2), side, side, st.integers(1, 4)),
    )
    return st.sampled_from(dtypes).flatmap(
        lambda dtype: hnp.arrays(
            dtype,
            shapes,
            elements=hnp.from_dtype(np.dtype(dtype), allow_nan=True, allow_infinity=True)
            if np.dtype(dtype).kind in "fc"
            else None,
        )
    )


def expected_to_pass(array: np.ndarray) -> bool:
    """What the documented contract accepts: (H, W), (H, W, 1|3|4) or (1|3|4, H, W); integers in [0, 255] (uint16 any),
    bool, floats in [0, 1] without NaN or infinity."""
    shape = array.shape
    ok_shape = len(shape) == 2 or (len(shape) == 3 and (shape[-1] in (1, 3, 4) or shape[0] in (1, 3, 4)))
    if not ok_shape or array.size == 0:
        return False
    kind = array.dtype.kind
    if kind == "c":
        return False
    if kind == "f":
        return bool(np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1)
    if kind in "iu" and array.dtype != np.uint16:
        return bool(array.min() >= 0 and array.max() <= 255)
    return True


@PROPERTY_SETTINGS
@given(array=array_strategy(NUMPY_DTYPES))
def test_numpy_arrays_of_any_dtype_shape_and_values(image_processor, array):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = process_or_named_error(image_processor, array)
    assert (result is not None) == expected_to_pass(array), f"{array.dtype} {array.shape}"
    well_shaped = array.size and (
        array.ndim == 2 or (array.ndim == 3 and {array.shape[0], array.shape[-1]} & {1, 3, 4})
    )
    if well_shaped and array.dtype.kind == "f" and not np.isfinite(array).all():
        with pytest.raises(ValueError, match="image: the image contains NaN or infinite values"):
            image_processor(array)


@PROPERTY_SETTINGS
@given(
    array=array_strategy([np.float32, np.float64, np.int64, np.uint8, np.bool_]), dtype=st.sampled_from(TORCH_DTYPES)
)
def test_torch_tensors_of_any_dtype(image_processor, array, dtype):
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = process_or_named_error(image_processor, tensor)
    as_numpy = tensor.float().numpy() if dtype in (torch.bfloat16, torch.float16) else tensor.numpy()
    assert (result is not None) == expected_to_pass(as_numpy), f"{dtype} {tuple(tensor.shape)}"


def encoded(fmt: str, width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@PROPERTY_SETTINGS
@given(
    fmt=st.sampled_from(FILE_FORMATS),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    cut=st.floats(0, 1, exclude_max=True),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=3),
)
@example(fmt="PPM", width=8, height=8, seed=0, cut=0.02, flips=[])  # a cut PPM header: Pillow's own ValueError
def test_truncated_and_corrupted_files_are_refused_by_name(image_processor, tmp_path_factory, fmt, width, height, seed, cut, flips):  # fmt: skip
    data = bytearray(encoded(fmt, width, height, seed))
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    data = bytes(data[: int(cut * len(data))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        process_or_named_error(image_processor, data)
        path = tmp_path_factory.mktemp("files") / f"face.{fmt.lower()}"
        path.write_bytes(data)
        process_or_named_error(image_processor, str(path))
        process_or_named_error(image_processor, [data, data], name="images[0]")
    if len(data) < 16:  # no format can hold an image in so few bytes
        with pytest.raises(ValueError, match="image: cannot decode image bytes"):
            image_processor(data)


# ------------------------------------------------------------------------------------------------- text
USER_TEXT = st.one_of(
    st.text(max_size=400),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "So"]), max_size=200),
    st.lists(
        st.sampled_from(["<|soi|>", "<|eoi|>", "<|t2i|>", "<|mmu|>", "<|pad|>", "<|endoftext|>", "<|mask|>", " a "]),
        max_size=20,
    ).map("".join),
    st.integers(1000, 6000).map(lambda n: "freckles " * n),
)


@PROPERTY_SETTINGS
@given(text=USER_TEXT)
def test_user_text_round_trips_and_never_becomes_special_tokens(processor, text):
    ids = processor._user_text_ids(text)
    assert processor.tokenizer.decode(ids) == text
    specials = set(processor.special_ids.values())
    assert not specials & set(ids), "special-token text in a prompt became a control token"


@PROPERTY_SETTINGS
@given(prompts=st.lists(USER_TEXT | st.none(), min_size=1, max_size=3))
def test_t2i_rows_keep_their_layout_for_any_prompt(processor, prompts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = processor(text=prompts, task="t2i")
    ids, special = batch["input_ids"], processor.special_ids
    n = processor.num_image_tokens
    assert ids.shape == (len(prompts), processor.max_text_length + n + 2)
    assert int(ids.min()) >= 0 and int(ids.max()) < len(processor.tokenizer) + 64 + 1
    for row in ids.tolist():
        assert row[-(n + 2)] == special["soi"] and row[-1] == special["eoi"]
        assert row[-(n + 1) : -1] == [processor.mask_token_id] * n
        text_part = row[: processor.max_text_length]
        assert text_part.count(special["t2i"]) == 1 and text_part[-1] == special["eot"]
        assert row.count(special["soi"]) == row.count(special["eoi"]) == 1


@PROPERTY_SETTINGS
@given(questions=st.lists(USER_TEXT | st.none(), min_size=1, max_size=3))
def test_mmu_rows_keep_their_layout_for_any_question(processor, questions):
    images = [np.zeros((SIZE, SIZE, 3), np.uint8)] * len(questions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = processor(images=images, text=questions, task="mmu")
    ids, special = batch["input_ids"], processor.special_ids
    assert batch["pixel_values"].shape == (len(questions), 3, SIZE, SIZE)
    longest_template = 64  # `USER: \n ... ASSISTANT:` plus the default caption prompt, in tokens
    assert ids.shape[1] <= 3 + processor.num_image_tokens + processor.max_question_length + longest_template
    for row, mask in zip(ids.tolist(), batch["attention_mask"].tolist()):
        start = mask.index(1)
        assert row[start : start + 2] == [special["mmu"], special["soi"]]
        assert row.count(special["mmu"]) == row.count(special["soi"]) == row.count(special["eoi"]) == 1


@pytest.mark.parametrize("bad", [3, b"bytes", ["ok", 7]])
def test_non_string_text_is_refused_by_name(processor, bad):
    with pytest.raises(ValueError, match=r"text\[\d\]: expected a string prompt"):
        processor(text=bad, task="t2i")
    images = [np.zeros((SIZE, SIZE, 3), np.uint8)] * (len(bad) if isinstance(bad, list) else 1)
    with pytest.raises(ValueError, match=r"text\[\d\]: expected a string question or None, got (int|bytes)"):
        processor(images=images, text=bad if isinstance(bad, list) else [bad], task="mmu")


def test_questions_and_images_must_pair_up(processor):
    with pytest.raises(ValueError, match="text: got 2 questions for 1 images"):
        processor(images=[np.zeros((SIZE, SIZE, 3), np.uint8)], text=["a", "b"], task="mmu")


def png_header_claiming(width: int, height: int) -> bytes:
    """A valid PNG header for a huge image followed by a few bytes of pixel data: the shape of a decompression bomb."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", len(header)) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    data = b"IDAT" + zlib.compress(b"\x00" * 16)
    idat = struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + end


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "width, height, message",
    [
        (10_000, 9_000, r"image: 10000x9000 is larger than 89478485 pixels \(a decompression bomb\?\); refused"),
        (30_000, 30_000, r"image: cannot decode image bytes: Image size \(900000000 pixels\) exceeds limit"),
    ],
)
def test_decompression_bombs_are_refused_from_the_header(image_processor, tmp_path, width, height, message):
    """Refused before any pixel is decoded: well under the megabytes even one decoded row of them would take."""
    data = png_header_claiming(width, height)
    (tmp_path / "bomb.png").write_bytes(data)
    tracemalloc.start()
    try:
        for source in (data, str(tmp_path / "bomb.png")):
            with pytest.raises(
                ValueError, match=message.replace("decode image bytes", "(decode image bytes|read image file .*)")
            ):
                image_processor(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated while refusing a {width}x{height} header"
