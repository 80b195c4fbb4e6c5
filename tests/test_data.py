"""intsim.data: preprocessing equals timm's eval transform; folders, labels, decoding, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from intsim.data import LabelledImages, Preprocess, list_images, load_batches, load_image

timm_data = pytest.importorskip("timm.data")


def _random_image(rng: np.random.Generator, h: int, w: int, mode: str = "RGB") -> Image.Image:
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return image if mode == "RGB" else image.convert(mode)


def _timm_pixels(preprocess: Preprocess, image: Image.Image) -> np.ndarray:
    transform = timm_data.create_transform(**preprocess.to_config(), is_training=False)
    return transform(image.convert("RGB")).numpy()


def _write_png(path: Path, value: int, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path)
    return path


# ------------------------------------------------------------------ Preprocess == timm
@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
@pytest.mark.parametrize(
    ("input_size", "crop_pct", "interpolation"),
    [((224, 224), 0.9, "bicubic"), ((32, 24), 0.875, "bilinear"), ((8, 8), 1.0, "bicubic"), ((16, 16), 1.2, "nearest")],
)
def test_preprocess_equals_timm_eval_transform(crop_mode, input_size, crop_pct, interpolation):
    rng = np.random.default_rng(0)
    preprocess = Preprocess(input_size, interpolation, crop_pct, crop_mode)
    # square, landscape, portrait, odd sizes (centre-crop ties), smaller than the crop (padding), equal to it
    for h, w in [(227, 227), (300, 200), (101, 403), (253, 249), (5, 9), (8, 8), input_size]:
        image = _random_image(rng, h, w)
        pixels = preprocess(image)
        assert pixels.dtype == np.uint8
        assert pixels.shape == (3, *input_size)
        expected = _timm_pixels(preprocess, image)
        np.testing.assert_allclose(pixels.astype(np.float32) / 255, expected * 0.5 + 0.5, atol=1e-6)
        # the float path is bit-exact, so folding mean/std into the patch embedding starts from the same numbers
        np.testing.assert_array_equal(preprocess.normalize(pixels), expected)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "1", "LA"])
def test_preprocess_converts_to_rgb_like_timm(mode):
    # 8-bit modes only: for 16-bit ones timm's convert("RGB") clips (all white); intsim scales them by their
    # full range instead (tests/test_bad_input_data.py).
    rng = np.random.default_rng(1)
    image = _random_image(rng, 40, 30, "RGB").convert(mode)
    preprocess = Preprocess((16, 16), "bicubic", 0.9)
    np.testing.assert_array_equal(preprocess.normalize(preprocess(image)), _timm_pixels(preprocess, image))


def test_from_timm_model_reads_the_model_config():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    preprocess = Preprocess.from_timm_model(model)
    assert preprocess == Preprocess((224, 224), "bicubic", 0.9, "center", (0.5,) * 3, (0.5,) * 3)
    assert preprocess.scale_size == (248, 248)
    assert preprocess.to_config() == {**timm_data.resolve_data_config({}, model=model)}


def test_preprocess_shapes_and_crop_offsets():
    # 227x227 -> shorter side floor(224 / 0.9) = 248 -> crop offset round(24 / 2) = 12
    preprocess = Preprocess((224, 224), "bicubic", 0.9)
    assert preprocess.resized_size(227, 227) == (248, 248)
    assert preprocess.resized_size(300, 200) == (372, 248)  # int(248 * 300 / 200) = 372
    gradient = np.broadcast_to(np.arange(248, dtype=np.uint8)[None, :, None], (248, 248, 3)).copy()
    pixels = preprocess(Image.fromarray(gradient))  # already 248: no resize, just the crop
    np.testing.assert_array_equal(pixels[0, 0], np.arange(12, 236))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_size": (0, 4)}, "input_size"),
        ({"input_size": (4, 4, 4, 4)}, "input_size"),
        ({"input_size": (4.0, 4)}, "input_size"),
        ({"input_size": 8, "interpolation": "cubic"}, "interpolation must be one of"),
        ({"input_size": 8, "crop_pct": 0.0}, "crop_pct"),
        ({"input_size": 8, "crop_pct": float("nan")}, "crop_pct"),
        ({"input_size": 8, "crop_mode": "middle"}, "crop_mode"),
        ({"input_size": 8, "mean": (0.5, 0.5)}, "mean"),
        ({"input_size": 8, "std": (0.5, 0.0, 0.5)}, "std must be positive"),
    ],
)
def test_preprocess_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Preprocess(**kwargs)


def test_preprocess_bad_inputs():
    preprocess = Preprocess(8, crop_pct=1.0)
    with pytest.raises(TypeError, match="PIL"):
        preprocess(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        preprocess.normalize(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="Preprocess: interpolation 'random'"):
        Preprocess.from_config({"input_size": (3, 8, 8), "interpolation": "random"})


# ------------------------------------------------------------------ folders
def test_list_images_recursive_sorted_by_extension(tmp_path):
    for name in ["b/2.PNG", "b/10.jpg", "a.JpEg", "c/d/e.webp", "z.bmp"]:
        _write_png(tmp_path / name, 10)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.jpg").write_text("junk")
    (tmp_path / ".cache").mkdir()
    _write_png(tmp_path / ".cache" / "x.png", 1)
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.JpEg", "b/10.jpg", "b/2.PNG", "c/d/e.webp", "z.bmp"]


def test_list_images_empty_or_missing_folder_names_it(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"image folder .*empty holds no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"image folder .*nowhere does not exist"):
        list_images(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="is not a folder"):
        list_images(tmp_path / "empty" / "readme.txt")


def test_labels_csv_layout_with_images_folder_and_limit(tmp_path):
    for i, name in enumerate(["c.png", "a.png", "b.png"]):
        _write_png(tmp_path / "images" / name, 40 * i)
    (tmp_path / "labels.csv").write_text("file,label\nc.png,7\na.png,3\n\nb.png,0\n")
    data = LabelledImages(tmp_path)
    assert data.layout == "labels.csv" and data.class_names is None
    assert [p.name for p in data.paths] == ["a.png", "b.png", "c.png"]
    np.testing.assert_array_equal(data.labels, [3, 0, 7])
    assert data.labels.dtype == np.int64
    limited = LabelledImages(tmp_path, limit=2)
    assert [p.name for p in limited.paths] == ["a.png", "b.png"] and list(limited.labels) == [3, 0]
    assert len(LabelledImages(tmp_path, limit=10)) == 3


def test_labels_csv_files_relative_to_folder(tmp_path):
    _write_png(tmp_path / "x" / "one.png", 1)
    _write_png(tmp_path / "two.png", 2)
    (tmp_path / "labels.csv").write_text("file,label,comment\nx/one.png,1,first\ntwo.png,2,second\n")
    data = LabelledImages(tmp_path)
    assert data.paths == (tmp_path / "two.png", tmp_path / "x" / "one.png")
    assert list(data.labels) == [2, 1]


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("name,class\na.png,1\n", "header 'file,label'"),
        ("", "header 'file,label'"),
        ("file,label\n", "lists no images"),
        ("file,label\na.png,cat\n", r"line 2: label 'cat' is not a non-negative integer"),
        ("file,label\na.png,-1\n", "label '-1'"),
        ("file,label\na.png\n", "line 2: expected columns"),
        ("file,label\na.png,1\na.png,2\n", "listed twice"),
        ("file,label\na.png,1\nmissing.png,2\n", r"not found under .*images.*missing\.png"),
    ],
)
def test_labels_csv_errors_name_the_file(tmp_path, csv_text, message):
    _write_png(tmp_path / "images" / "a.png", 1)
    (tmp_path / "labels.csv").write_text(csv_text)
    with pytest.raises(ValueError, match=message) as info:
        LabelledImages(tmp_path)
    assert "labels.csv" in str(info.value)


def test_imagefolder_layout(tmp_path):
    for cls, names in {"dog": ["b.png", "a.png"], "cat": ["z.jpg"], "emu": [], "ant": ["deep/q.png"]}.items():
        (tmp_path / cls).mkdir()
        for name in names:
            _write_png(tmp_path / cls / name, 5)
    (tmp_path / "stray.png").write_bytes(b"ignored: not in a class folder")
    data = LabelledImages(tmp_path)
    assert data.layout == "imagefolder"
    assert data.class_names == ("ant", "cat", "dog", "emu")
    found = [p.relative_to(tmp_path).as_posix() for p in data.paths]
    assert found == ["ant/deep/q.png", "cat/z.jpg", "dog/a.png", "dog/b.png"]
    np.testing.assert_array_equal(data.labels, [0, 1, 2, 2])
    assert list(LabelledImages(tmp_path, limit=3).labels) == [0, 1, 2]


def test_neither_layout_explains_both(tmp_path):
    _write_png(tmp_path / "a.png", 1)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match=r"not a labelled image folder: expected either labels\.csv .* ImageFolder"):
        LabelledImages(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        LabelledImages(tmp_path / "nope")
    with pytest.raises(ValueError, match="limit"):
        LabelledImages(tmp_path, limit=0)


# ------------------------------------------------------------------ decoding
@pytest.fixture
def image_paths(tmp_path) -> list[Path]:
    rng = np.random.default_rng(2)
    paths = []
    for i in range(11):
        image = _random_image(rng, int(rng.integers(20, 60)), int(rng.integers(20, 60)))
        path = tmp_path / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        image.save(path)
        paths.append(path)
    return paths


def test_parallel_decoding_equals_in_process(image_paths):
    preprocess = Preprocess((16, 16), "bicubic", 0.9)
    serial = list(load_batches(image_paths, preprocess, batch_size=4, workers=0))
    parallel = list(load_batches(image_paths, preprocess, batch_size=4, workers=2, progress="test"))
    assert [b.shape for b in serial] == [(4, 3, 16, 16), (4, 3, 16, 16), (3, 3, 16, 16)]
    assert len(parallel) == len(serial)
    for a, b in zip(serial, parallel):
        assert b.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    expected = np.stack([preprocess(Image.open(p)) for p in image_paths])
    np.testing.assert_array_equal(np.concatenate(serial), expected)
    assert list(load_batches([], preprocess)) == []


def test_labelled_batches_keep_labels_aligned(tmp_path):
    for i in range(5):
        _write_png(tmp_path / "images" / f"{i}.png", 50 * i)
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"{i}.png,{9 - i}\n" for i in range(5)))
    data = LabelledImages(tmp_path)
    preprocess = Preprocess((10, 12), crop_pct=1.0)
    batches = list(data.batches(preprocess, batch_size=2))
    assert [list(labels) for _, labels in batches] == [[9, 8], [7, 6], [5]]
    assert [int(images[0, 0, 0, 0]) for images, _ in batches] == [0, 100, 200]


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    _random_image(np.random.default_rng(3), 64, 64).save(buffer, format="JPEG")
    return buffer.getvalue()[:300]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not an image at all", "cannot identify image file"),
        (b"", "cannot identify image file"),
        (None, "(?i:truncated)"),
    ],
)
@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_image_names_the_file(tmp_path, image_paths, content, reason, workers):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(_truncated_jpeg() if content is None else content)
    preprocess = Preprocess(8, crop_pct=1.0)
    with pytest.raises(ValueError, match=rf"cannot decode image .*broken\.jpg: .*{reason}"):
        list(load_batches([*image_paths[:5], bad, *image_paths[5:]], preprocess, batch_size=4, workers=workers))


def test_missing_image_and_bad_arguments(tmp_path, image_paths):
    preprocess = Preprocess(8, crop_pct=1.0)
    with pytest.raises(ValueError, match=r"image file .*gone\.png does not exist"):
        load_image(tmp_path / "gone.png", preprocess)
    with pytest.raises(ValueError, match="batch_size"):
        list(load_batches(image_paths, preprocess, batch_size=0))
    with pytest.raises(ValueError, match="workers"):
        list(load_batches(image_paths, preprocess, workers=-1))
    with pytest.raises(TypeError, match="Preprocess"):
        list(load_batches(image_paths, lambda image: image))
    with pytest.raises(ValueError, match="start_method must be one of"):
        list(load_batches(image_paths, preprocess, workers=2, start_method="teleport"))


# ------------------------------------------------------------------ real data
@pytest.mark.realdata
def test_real_images_preprocess_equals_timm(shared_data):
    import timm

    preprocess = Preprocess.from_timm_model(timm.create_model("vit_tiny_patch16_224", pretrained=False))
    val = LabelledImages(shared_data / "imagenet-val-500", limit=4)
    calib = list_images(shared_data / "imagenet-calib-256")[:3]
    for path in [*val.paths, *calib]:
        with Image.open(path) as image:
            expected = _timm_pixels(preprocess, image)
        pixels = load_image(path, preprocess)
        assert pixels.shape == (3, 224, 224) and pixels.dtype == np.uint8
        normalised = (pixels.astype(np.float32) / 255 - 0.5) / 0.5
        np.testing.assert_allclose(normalised, expected, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(preprocess.normalize(pixels), expected)


@pytest.mark.realdata
def test_real_folders(shared_data):
    val = LabelledImages(shared_data / "imagenet-val-500")
    assert val.layout == "labels.csv" and len(val) == 500
    assert all(p.parent.name == "images" for p in val.paths)
    assert val.labels.min() >= 0 and val.labels.max() <= 999
    assert [p.name for p in val.paths] == sorted(p.name for p in val.paths)
    assert len(list_images(shared_data / "imagenet-calib-256")) == 256
