"""Bad input that used to give silent wrong answers (issue "Bad input ... every failure named"):

1. image modes Pillow opens but ``convert("RGB")`` maps wrongly (16-bit gray decoded all white);
2. labels outside the model's classes (counted as wrong answers);
3. weights of another architecture than ``--model`` (same shapes, other preprocessing).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from intsim.data import SUPPORTED_MODES, LabelledImages, Preprocess, load_image, to_rgb

pytest.importorskip("torch")


def _identity(height: int, width: int) -> Preprocess:
    """No resize, no crop: the pixels come out exactly as converted."""
    return Preprocess((height, width), "bicubic", crop_pct=1.0)


def _load(path: Path, height: int = 1, width: int = 4) -> np.ndarray:
    """uint8 (H, W, 3) of ``load_image``."""
    return load_image(path, _identity(height, width)).transpose(1, 2, 0)


def _gray(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.uint8).reshape(1, -1)
    return np.repeat(values[..., None], 3, axis=2)


# ------------------------------------------------------------------------------------------ 1. image modes
UINT16 = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
UINT16_SCALED = [0, 4, 128, 255]  # round(v * 255 / 65535)


def test_16bit_grayscale_png_is_scaled_not_white(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(UINT16).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    np.testing.assert_array_equal(_load(path), _gray(UINT16_SCALED))


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_tiff_both_byte_orders(tmp_path, mode):
    path = tmp_path / "gray16.tif"
    dtype = "<u2" if mode == "I;16" else ">u2"
    Image.frombytes(mode, (4, 1), UINT16.astype(dtype).tobytes()).save(path)
    with Image.open(path) as image:
        assert image.mode == mode
    np.testing.assert_array_equal(_load(path), _gray(UINT16_SCALED))


def test_16bit_scaling_matches_the_formula_for_every_value(tmp_path):
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = tmp_path / "all.png"
    Image.fromarray(values).save(path)
    got = _load(path, 256, 256)[..., 0].astype(np.int64)
    np.testing.assert_array_equal(got, np.round(values.astype(np.float64) * 255 / 65535).astype(np.int64))


def test_32bit_integer_tiff_is_scaled_by_the_int32_range(tmp_path):
    values = np.array([[-(2**31), 0, 1000, 2**31 - 1]], dtype=np.int32)
    path = tmp_path / "gray32.tif"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode == "I"
    # round((v + 2**31) * 255 / (2**32 - 1))
    np.testing.assert_array_equal(_load(path), _gray([0, 128, 128, 255]))


def test_16bit_pgm_opened_as_mode_i_is_scaled_by_16_bits(tmp_path):
    path = tmp_path / "gray16.pgm"
    path.write_bytes(b"P5 4 1 65535\n" + UINT16.astype(">u2").tobytes())
    with Image.open(path) as image:
        assert image.mode == "I"
    np.testing.assert_array_equal(_load(path), _gray(UINT16_SCALED))


def test_float_mode_is_refused_by_name(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32)).save(path)
    with Image.open(path) as image:
        assert image.mode == "F"
    with pytest.raises(ValueError) as info:
        _load(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "mode F" in message and "supported modes: " in message and "I;16" in message


def test_an_unsupported_mode_is_refused_by_name():
    with pytest.raises(ValueError, match=r"image x\.png: Pillow mode 'La' .*supported modes: 1, L, P"):
        to_rgb(Image.new("La", (2, 2)), "x.png")


def test_alpha_is_dropped_not_composited(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 128], [70, 80, 90, 255], [255, 255, 255, 0]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(_load(tmp_path / "rgba.png"), rgba[..., :3])
    la = np.array([[[77, 0], [100, 50], [200, 255], [0, 0]]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    with Image.open(tmp_path / "la.png") as image:
        assert image.mode == "LA"
    np.testing.assert_array_equal(_load(tmp_path / "la.png"), _gray(la[0, :, 0]))


def _palette_image(mode: str) -> Image.Image:
    image = Image.new(mode, (4, 1))
    image.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0, 1, 2, 3] + [0] * (768 - 12))
    for x in range(4):
        image.putpixel((x, 0), x if mode == "P" else (x, 255 * (x % 2)))
    return image


def test_palette_with_transparency_keeps_the_palette_colours(tmp_path):
    image = _palette_image("P")
    path = tmp_path / "p.png"
    image.save(path, transparency=1)
    with Image.open(path) as reopened:
        assert reopened.mode == "P" and reopened.info.get("transparency") == 1
    expected = np.array([[[10, 20, 30], [200, 100, 50], [0, 255, 0], [1, 2, 3]]], dtype=np.uint8)
    np.testing.assert_array_equal(_load(path), expected)


def test_palette_with_alpha_keeps_the_palette_colours(tmp_path):
    path = tmp_path / "pa.tif"
    _palette_image("PA").save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == "PA"
    expected = np.array([[[10, 20, 30], [200, 100, 50], [0, 255, 0], [1, 2, 3]]], dtype=np.uint8)
    np.testing.assert_array_equal(_load(path), expected)


@pytest.mark.parametrize(
    ("mode", "suffix", "pixels", "expected"),
    [
        ("1", "png", [[0, 1, 1, 0]], _gray([0, 255, 255, 0])),
        ("L", "png", [[0, 7, 128, 255]], _gray([0, 7, 128, 255])),
        ("RGB", "png", [[[1, 2, 3], [4, 5, 6], [7, 8, 9], [250, 251, 252]]],
         np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9], [250, 251, 252]]], np.uint8)),
        # naive CMYK -> RGB (Pillow): R = 255 - C - K etc.
        ("CMYK", "tif", [[[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 255]]],
         np.array([[[255, 255, 255], [0, 255, 255], [255, 0, 255], [0, 0, 0]]], np.uint8)),
        ("YCbCr", "tif", [[[128, 128, 128], [0, 128, 128], [255, 128, 128], [76, 85, 255]]],
         np.array([[[128, 128, 128], [0, 0, 0], [255, 255, 255], [254, 0, 0]]], np.uint8)),
    ],
)
def test_8bit_modes_from_files(tmp_path, mode, suffix, pixels, expected):
    array = np.array(pixels, dtype=np.uint8)
    image = Image.fromarray(array.astype(bool)) if mode == "1" else Image.frombytes(mode, (4, 1), array.tobytes())
    path = tmp_path / f"image.{suffix}"
    image.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == mode
    got = _load(path)
    if mode == "YCbCr":  # Pillow's fixed-point YCbCr -> RGB may differ by one from the textbook values
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    else:
        np.testing.assert_array_equal(got, expected)


def test_lab_tiff_converts_to_srgb(tmp_path):
    # TIFF CIELAB bytes: L* 0..100 as 0..255, a* and b* signed; L* = 50 is sRGB gray 119
    array = np.array([[[255, 0, 0], [0, 0, 0], [128, 0, 0], [128, 100, 0]]], dtype=np.uint8)
    Image.frombytes("LAB", (4, 1), array.tobytes()).save(tmp_path / "lab.tif")
    with Image.open(tmp_path / "lab.tif") as reopened:
        assert reopened.mode == "LAB"
    expected = np.array([[[254, 255, 254], [1, 0, 1], [119, 119, 119], [253, 0, 125]]], dtype=np.uint8)
    np.testing.assert_array_equal(_load(tmp_path / "lab.tif"), expected)


def test_every_supported_mode_converts_and_preprocess_uses_the_same_conversion():
    for mode in SUPPORTED_MODES:
        assert to_rgb(Image.new(mode, (3, 2))).mode == "RGB", mode
    image = Image.fromarray(UINT16)
    np.testing.assert_array_equal(_identity(1, 4)(image).transpose(1, 2, 0), _gray(UINT16_SCALED))


# ------------------------------------------------------------------------------------------ 2. labels
def _csv_folder(root: Path, labels: dict[str, int], decodable: bool = True) -> Path:
    (root / "images").mkdir(parents=True)
    for name in labels:
        if decodable:
            Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "images" / name)
        else:
            (root / "images" / name).write_bytes(b"not an image")
    (root / "labels.csv").write_text("file,label\n" + "".join(f"{n},{l}\n" for n, l in labels.items()))
    return root


def test_label_beyond_the_model_classes_is_refused_naming_file_row_and_range(tmp_path):
    root = _csv_folder(tmp_path / "val", {"a.png": 3, "b.png": 5000, "c.png": 9})
    assert list(LabelledImages(root).labels) == [3, 5000, 9]  # no num_classes: not checked (as before)
    with pytest.raises(ValueError) as info:
        LabelledImages(root, num_classes=10)
    message = str(info.value)
    assert "\n" not in message
    for part in (str(root / "labels.csv"), "line 3", "b.png", "label 5000", "allowed 0..9", "10 classes"):
        assert part in message, (part, message)
    LabelledImages(root, num_classes=5001)  # in range: fine


def test_label_check_covers_rows_beyond_limit_and_check_labels(tmp_path):
    root = _csv_folder(tmp_path / "val", {"a.png": 1, "z.png": 10})
    with pytest.raises(ValueError, match="z.png"):
        LabelledImages(root, limit=1, num_classes=10)
    folder = LabelledImages(root, limit=1)
    folder.check_labels(10)  # only the kept row
    with pytest.raises(ValueError, match="allowed 0..0"):
        folder.check_labels(1)


def test_imagefolder_with_more_classes_than_the_model_is_refused(tmp_path):
    for index, name in enumerate(["cat", "dog", "fox"]):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8), (index, 0, 0)).save(tmp_path / name / f"{name}.png")
    LabelledImages(tmp_path, num_classes=3)
    with pytest.raises(ValueError) as info:
        LabelledImages(tmp_path, num_classes=2)
    message = str(info.value)
    for part in ("class folder 'fox'", "fox.png", "label 2", "allowed 0..1"):
        assert part in message, (part, message)


def test_labelled_batches_refuses_before_decoding(tmp_path):
    from intsim.evaluate import labelled_batches

    # undecodable images: if decoding came first, the error would be about decoding
    root = _csv_folder(tmp_path / "val", {"a.png": 0, "b.png": 5000}, decodable=False)
    with pytest.raises(ValueError, match=r"line 3: file 'images/b.png' has label 5000, allowed 0\.\.9"):
        labelled_batches(str(root), _identity(8, 8), limit=None, batch_size=2, workers=0, num_classes=10)
    with pytest.raises(ValueError, match="allowed 0..0"):
        labelled_batches(None, _identity(8, 8), limit=None, batch_size=32, workers=0, num_classes=1)
    good = _csv_folder(tmp_path / "good", {"a.png": 0, "b.png": 9})
    batches = labelled_batches(str(good), _identity(8, 8), limit=None, batch_size=2, workers=0, num_classes=10)
    assert [list(b.labels) for b in batches] == [[0, 9]]
    assert batches[0].paths == (good / "images" / "a.png", good / "images" / "b.png")


@pytest.fixture(scope="module")
def digits():
    from intsim.evaluate import quantize
    from intsim.quant.configs import make_config

    return quantize(None, None, None, make_config("fqvit-w8a8a4"), workers=0)


def test_evaluate_refuses_labels_outside_the_program_classes(digits):
    from intsim.evaluate import Batch, evaluate, labelled_batches, program_num_classes
    from intsim.models.digits import DIGITS_CONFIG

    qvit, program = digits
    assert program_num_classes(program) == 10
    preprocess = Preprocess.from_config(DIGITS_CONFIG["data"])
    (batch,) = labelled_batches(None, preprocess, limit=4, batch_size=4, workers=0)
    labels = batch.labels.copy()
    labels[2] = 5000
    bad = Batch(batch.pixels, labels, ("a.png", "b.png", "c.png", "d.png"))
    with pytest.raises(ValueError, match=r"image c\.png has label 5000, allowed 0\.\.9"):
        evaluate(qvit, program, [batch, bad], progress=None)
    assert evaluate(qvit, program, [batch])["images"] == 4


# ------------------------------------------------------------------------------------------ 3. weights vs --model
def _random_weights(path: Path, arch: str = "deit_tiny_patch16_224", metadata: dict | None = None) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)
    return path


def _load_with_warnings(model_name: str, weights: Path):
    from intsim.evaluate import load_float_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_float_model(model_name, str(weights))
    return [w for w in caught if type(w.message).__name__ in ("ModelWeightsWarning", "PreprocessingNote")]


@pytest.fixture(scope="module")
def deit_shaped(tmp_path_factory) -> Path:
    return _random_weights(tmp_path_factory.mktemp("w") / "deit.safetensors")


def test_weights_file_named_for_another_architecture_warns(tmp_path, deit_shaped):
    weights = tmp_path / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
    weights.write_bytes(deit_shaped.read_bytes())
    (warning,) = _load_with_warnings("deit_tiny_patch16_224", weights)
    message = str(warning.message)
    assert type(warning.message).__name__ == "ModelWeightsWarning"
    assert "\n" not in message
    for part in (str(weights), "'vit_tiny_patch16_224.augreg_in21k_ft_in1k'", "--model is 'deit_tiny_patch16_224'",
                 "mean (0.485, 0.456, 0.406)", "crop_pct 0.9", "interpolation bicubic", "input size 224x224",
                 "the weights' own", "mean (0.5, 0.5, 0.5)"):
        assert part in message, (part, message)


def test_matching_or_neutral_weights_file_name_only_notes_the_preprocessing(tmp_path, deit_shaped):
    for name in ("deit_tiny_patch16_224.safetensors", "deit_tiny_patch16_224.fb_in1k.safetensors", "model.safetensors"):
        weights = tmp_path / name
        weights.write_bytes(deit_shaped.read_bytes())
        (note,) = _load_with_warnings("deit_tiny_patch16_224", weights)
        assert type(note.message).__name__ == "PreprocessingNote", (name, str(note.message))
        message = str(note.message)
        assert "\n" not in message and str(weights) in message and "mean (0.485, 0.456, 0.406)" in message


def test_safetensors_metadata_naming_another_architecture_warns(tmp_path):
    weights = _random_weights(tmp_path / "weights.safetensors", metadata={"arch": "vit_tiny_patch16_224"})
    (warning,) = _load_with_warnings("deit_tiny_patch16_224", weights)
    assert type(warning.message).__name__ == "ModelWeightsWarning"
    assert "its metadata arch='vit_tiny_patch16_224'" in str(warning.message)


@pytest.mark.realdata
def test_real_vit_weights_with_deit_model_warn_and_with_vit_do_not(shared_data):
    weights = shared_data / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
    if not weights.is_file():
        pytest.skip(f"real weights {weights} are absent")
    (warning,) = _load_with_warnings("deit_tiny_patch16_224", weights)
    assert type(warning.message).__name__ == "ModelWeightsWarning"
    assert str(weights) in str(warning.message) and "deit_tiny_patch16_224" in str(warning.message)
    (note,) = _load_with_warnings("vit_tiny_patch16_224", weights)
    assert type(note.message).__name__ == "PreprocessingNote"
    assert "mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5), interpolation bicubic, crop_pct 0.9" in str(note.message)
