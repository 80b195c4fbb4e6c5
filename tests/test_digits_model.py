"""The embedded digits ViT (shipped files, accuracy) and intsim.models.load_timm_model (loading, errors)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from intsim.data import Preprocess
from intsim.models import load_state_dict, load_timm_model
from intsim.models.digits import (
    DIGITS_CLASS_NAMES,
    DIGITS_CONFIG,
    DIGITS_DATA_PATH,
    DIGITS_JSON_PATH,
    DIGITS_WEIGHTS_PATH,
    create_digits_vit,
    digits_calibration,
    digits_heldout,
    digits_metadata,
    digits_to_rgb,
)

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

VIT_TI = "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"


# ------------------------------------------------------------------ shipped files
def test_shipped_files_are_small_and_match_their_checksums():
    meta = digits_metadata()
    assert DIGITS_WEIGHTS_PATH.stat().st_size < 2 * 1024 * 1024
    for path in (DIGITS_WEIGHTS_PATH, DIGITS_DATA_PATH):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"][path.name], path
    assert DIGITS_JSON_PATH.is_file()


def test_metadata_matches_the_module_config():
    meta = digits_metadata()
    assert meta["model"] == DIGITS_CONFIG["model"]
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in meta["data"].items()} == DIGITS_CONFIG["data"]
    assert tuple(meta["class_names"]) == DIGITS_CLASS_NAMES == tuple("0123456789")
    assert meta["heldout_count"] == 360 and meta["heldout_accuracy"] >= 0.95


def test_shipped_data_splits():
    calib, calib_labels = digits_calibration()
    heldout, heldout_labels = digits_heldout()
    assert calib.shape == (256, 3, 8, 8) and heldout.shape == (360, 3, 8, 8)
    assert calib.dtype == heldout.dtype == np.uint8
    assert calib_labels.dtype == heldout_labels.dtype == np.int64
    assert set(np.unique(heldout_labels)) == set(range(10)) and set(np.unique(calib_labels)) <= set(range(10))
    assert np.bincount(heldout_labels).min() >= 35  # stratified: 35 or 36 per class
    allowed = set((255 * np.arange(17) + 8) // 16)
    for images in (calib, heldout):
        assert set(np.unique(images)) <= allowed
        assert (images[:, 0] == images[:, 1]).all() and (images[:, 0] == images[:, 2]).all()
    with np.load(DIGITS_DATA_PATH) as npz:
        assert not set(npz["calib_index"]) & set(npz["heldout_index"])
    with pytest.raises(ValueError):
        calib[0, 0, 0, 0] = 1  # shared arrays are read-only


def test_digits_to_rgb():
    values = np.tile(np.arange(16, dtype=np.float64), 4).reshape(1, 64)  # sklearn's flat (N, 64) form
    rgb = digits_to_rgb(values)
    assert rgb.shape == (1, 3, 8, 8) and rgb.dtype == np.uint8
    expected = [round(v * 255 / 16) for v in range(16)]
    assert rgb[0, 0].reshape(-1)[:16].tolist() == expected
    assert digits_to_rgb(np.full((1, 8, 8), 16.0))[0, 2, 0, 0] == 255
    assert digits_to_rgb(np.full((1, 8, 8), 8.0))[0, 0, 0, 0] == 128  # the one tie, 127.5, goes up
    with pytest.raises(ValueError, match="integers in"):
        digits_to_rgb(np.full((1, 8, 8), 17.0))
    with pytest.raises(ValueError, match="integers in"):
        digits_to_rgb(np.full((1, 8, 8), 0.5))
    with pytest.raises(ValueError, match="shape"):
        digits_to_rgb(np.zeros((2, 7, 7)))


def test_embedded_model_heldout_accuracy():
    model = create_digits_vit()
    assert not model.training
    preprocess = Preprocess.from_timm_model(model)
    assert preprocess == Preprocess((8, 8), "bicubic", 1.0, "center", (0.5,) * 3, (0.5,) * 3)
    images, labels = digits_heldout()
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocess.normalize(images)))
    assert logits.shape == (360, 10)
    correct = int((logits.argmax(1).numpy() == labels).sum())
    assert correct / len(labels) >= 0.95
    # the recorded figure is reproduced (one image of slack for a different CPU/BLAS)
    assert abs(correct - digits_metadata()["heldout_correct"]) <= 1


def test_embedded_preprocess_is_identity_on_8x8_images():
    from PIL import Image

    images, _ = digits_calibration()
    preprocess = Preprocess.from_config(DIGITS_CONFIG["data"])
    for image in images[:5]:
        np.testing.assert_array_equal(preprocess(Image.fromarray(image.transpose(1, 2, 0))), image)


# ------------------------------------------------------------------ load_timm_model
@pytest.fixture(scope="module")
def small_vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=7).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pt", ".bin"])
def test_load_timm_model_round_trip(tmp_path, small_vit, suffix):
    from safetensors.torch import save_file

    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in small_vit.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    elif suffix == ".pt":
        torch.save({"state_dict": state, "epoch": 3}, path)  # a wrapped training checkpoint
    else:
        torch.save(state, path)
    model = load_timm_model("test_vit", path)
    assert not model.training
    assert model.num_classes == 7  # inferred from head.weight
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(model(x), small_vit(x), rtol=0, atol=0)


def test_load_timm_model_errors_name_the_file(tmp_path, small_vit):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match=r"weights file .*absent\.safetensors does not exist"):
        load_timm_model("test_vit", tmp_path / "absent.safetensors")

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(ValueError, match=r"cannot read weights file .*corrupt\.safetensors as safetensors"):
        load_timm_model("test_vit", corrupt)

    corrupt_pth = tmp_path / "corrupt.pth"
    corrupt_pth.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match=r"cannot read weights file .*corrupt\.pth with torch\.load"):
        load_timm_model("test_vit", corrupt_pth)

    not_a_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_a_dict)
    with pytest.raises(ValueError, match=r"tensor\.pth holds a Tensor, not a state_dict"):
        load_timm_model("test_vit", not_a_dict)

    wrong_suffix = tmp_path / "weights.npz"
    wrong_suffix.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"weights\.npz has an unknown suffix '\.npz'"):
        load_timm_model("test_vit", wrong_suffix)

    state = {k: v.contiguous() for k, v in small_vit.state_dict().items()}
    partial = tmp_path / "partial.safetensors"
    kept = {k: v for k, v in state.items() if not k.startswith("blocks.0.")}
    save_file({**kept, "extra.weight": torch.zeros(2)}, str(partial))
    message = r"partial\.safetensors does not fit model 'test_vit': missing: blocks\.0\..*unexpected: extra\.weight"
    with pytest.raises(ValueError, match=message) as info:
        load_timm_model("test_vit", partial)
    assert "in all)" in str(info.value)  # long lists are cut, with the count

    reshaped = tmp_path / "reshaped.safetensors"
    save_file({**state, "pos_embed": torch.zeros(1, 5, state["pos_embed"].shape[-1])}, str(reshaped))
    message = r"reshaped\.safetensors does not fit .*shape mismatch: pos_embed \(file \(1, 5, "
    with pytest.raises(ValueError, match=message):
        load_timm_model("test_vit", reshaped)


def test_load_timm_model_unknown_name_suggests_close_matches(tmp_path):
    message = r"unknown timm model name 'vit_tiny_patch16_22'.*close matches: .*vit_tiny_patch16_224"
    with pytest.raises(ValueError, match=message):
        load_timm_model("vit_tiny_patch16_22", tmp_path / "unused.safetensors")
    with pytest.raises(ValueError, match=r"unknown timm model name 'zzzz'$"):
        load_timm_model("zzzz", tmp_path / "unused.safetensors")


def test_load_state_dict_refuses_empty(tmp_path):
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with pytest.raises(ValueError, match=r"empty\.pth holds an empty state_dict"):
        load_state_dict(empty)


@pytest.mark.realdata
def test_real_vit_tiny_loads_and_classifies(shared_data):
    from intsim.data import LabelledImages, load_batches

    model = load_timm_model("vit_tiny_patch16_224", shared_data / VIT_TI)
    assert model.num_classes == 1000
    assert sum(p.numel() for p in model.parameters()) == 5_717_416
    preprocess = Preprocess.from_timm_model(model)
    val = LabelledImages(shared_data / "imagenet-val-500", limit=8)
    (images,) = load_batches(val.paths, preprocess, batch_size=8)
    with torch.no_grad():
        predicted = model(torch.from_numpy(preprocess.normalize(images))).argmax(1).numpy()
    assert (predicted == val.labels).sum() >= 6  # 81.8 % top-1 on all 500: see the slow test


@pytest.mark.realdata
def test_real_weights_also_load_into_deit_tiny(shared_data):
    model = load_timm_model("deit_tiny_patch16_224", shared_data / VIT_TI)
    assert type(model).__name__ == "VisionTransformer" and model.num_classes == 1000


@pytest.mark.slow
@pytest.mark.realdata
def test_real_vit_tiny_top1_on_val500(shared_data):
    """timm's own figure in the data README: float32 top-1 81.80 % on imagenet-val-500 (about a minute on 2 CPUs)."""
    from intsim.data import LabelledImages

    model = load_timm_model("vit_tiny_patch16_224", shared_data / VIT_TI)
    preprocess = Preprocess.from_timm_model(model)
    val = LabelledImages(shared_data / "imagenet-val-500")
    correct = 0
    with torch.no_grad():
        for images, labels in val.batches(preprocess, batch_size=50, workers=2):
            correct += int((model(torch.from_numpy(preprocess.normalize(images))).argmax(1).numpy() == labels).sum())
    assert correct == 409  # 81.80 %
