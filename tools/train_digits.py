"""Train the embedded default model (a tiny timm ViT on scikit-learn's 8x8 digits) and write its files.

Usage (from the repository root)::

    python tools/train_digits.py                  # writes intsim/models/digits_vit.{safetensors,json}, digits_data.npz
    python tools/train_digits.py --out-dir /tmp/d # try a recipe without touching the package

Deterministic: a fixed stratified 80/20 split of the 1797 digits (``random_state`` = ``--seed``),
``torch.manual_seed``, a seeded generator for shuffling and augmentation, deterministic torch
algorithms and one CPU thread, so a re-run on the same torch build reproduces the weights bit for bit.
Runs on the CPU in about a minute or two. Needs scikit-learn (only here: the package ships the data it needs).

The architecture and data config are ``intsim.models.digits.DIGITS_CONFIG``; see that module for
the pixel rendering and the files written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from intsim.models.digits import (  # noqa: E402
    DIGITS_CLASS_NAMES,
    DIGITS_CONFIG,
    build_digits_vit,
    digits_to_rgb,
)

N_CALIB = 256
MIN_ACCURACY = 0.95


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "intsim" / "models", help="where to write the files")
    parser.add_argument("--seed", type=int, default=0, help="split, init, shuffling and augmentation seed")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--warmup-epochs", type=int, default=5)
    parser.add_argument("--shift", type=int, default=1, help="random translation in pixels (augmentation)")
    return parser.parse_args(argv)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, 8, 8)`` -> float32, exactly as timm's eval transform: ``(x / 255 - mean) / std``."""
    mean = torch.tensor(DIGITS_CONFIG["data"]["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(DIGITS_CONFIG["data"]["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std


def random_shift(images: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each uint8 image by up to ``shift`` pixels in x and y, filling with 0 (the background)."""
    if shift == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator)
    out = torch.empty_like(images)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    model.eval()
    logits = model(normalize(torch.from_numpy(images)))
    correct = int((logits.argmax(dim=1).numpy() == labels).sum())
    return correct, len(labels)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    args = parse_args(argv)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    digits = load_digits()
    images = digits_to_rgb(digits.images)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    train_idx, heldout_idx = train_test_split(
        index, test_size=0.2, stratify=labels, random_state=args.seed, shuffle=True
    )
    train_idx, heldout_idx = np.sort(train_idx), np.sort(heldout_idx)
    rng = np.random.default_rng(args.seed)
    calib_idx = np.sort(rng.choice(train_idx, size=N_CALIB, replace=False))
    print(f"digits: {len(labels)} images, train {len(train_idx)}, held-out {len(heldout_idx)}, calib {len(calib_idx)}")

    model = build_digits_vit()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: VisionTransformer {DIGITS_CONFIG['model']}, {n_params} parameters")

    x_train = torch.from_numpy(images[train_idx])
    y_train = torch.from_numpy(labels[train_idx])
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = args.warmup_epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return args.lr * (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return args.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    start = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_idx), generator=generator)
        total_loss = 0.0
        for b in range(steps_per_epoch):
            batch = order[b * args.batch_size : (b + 1) * args.batch_size]
            x = normalize(random_shift(x_train[batch], args.shift, generator))
            loss = F.cross_entropy(model(x), y_train[batch], label_smoothing=args.label_smoothing)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(batch)
            step += 1
        if (epoch + 1) % 10 == 0 or epoch == args.epochs - 1:
            correct, count = accuracy(model, images[heldout_idx], labels[heldout_idx])
            print(
                f"epoch {epoch + 1:4d}  loss {total_loss / len(train_idx):.4f}  "
                f"held-out {correct}/{count} = {correct / count:.4f}  ({time.perf_counter() - start:.0f} s)"
            )
    train_seconds = time.perf_counter() - start

    model.eval()
    correct, count = accuracy(model, images[heldout_idx], labels[heldout_idx])
    train_correct, train_count = accuracy(model, images[train_idx], labels[train_idx])
    acc = correct / count
    print(f"held-out accuracy: {correct}/{count} = {acc:.4f}   (train {train_correct}/{train_count})")
    print(f"training time: {train_seconds:.1f} s")
    if acc < MIN_ACCURACY:
        print(f"error: held-out accuracy {acc:.4f} is below {MIN_ACCURACY}; files not written", file=sys.stderr)
        return 1

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / "digits_vit.safetensors"
    data_path = out / "digits_data.npz"
    json_path = out / "digits_vit.json"
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    # one metadata key only: safetensors writes a multi-key metadata map in no fixed order
    save_file(state, str(weights_path), metadata={"format": "pt"})
    np.savez_compressed(
        data_path,
        calib_images=images[calib_idx],
        calib_labels=labels[calib_idx],
        calib_index=calib_idx,
        heldout_images=images[heldout_idx],
        heldout_labels=labels[heldout_idx],
        heldout_index=heldout_idx,
    )
    meta = {
        "name": "intsim_digits_vit",
        "model": DIGITS_CONFIG["model"],
        "data": {k: list(v) if isinstance(v, tuple) else v for k, v in DIGITS_CONFIG["data"].items()},
        "class_names": list(DIGITS_CLASS_NAMES),
        "num_parameters": n_params,
        "pixels": "gray v in 0..16 -> (255*v + 8)//16, replicated to RGB; uint8 (N, 3, 8, 8)",
        "split": {
            "source": "sklearn.datasets.load_digits (1797 images)",
            "method": "sklearn.model_selection.train_test_split(test_size=0.2, stratify=labels, random_state=seed)",
            "seed": args.seed,
            "train": int(len(train_idx)),
            "heldout": int(len(heldout_idx)),
            "calibration": f"{N_CALIB} training images, numpy default_rng(seed).choice without replacement",
        },
        "recipe": {
            "optimizer": "AdamW",
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "schedule": f"linear warmup {args.warmup_epochs} epochs, cosine to 0",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "label_smoothing": args.label_smoothing,
            "augmentation": f"random translation up to {args.shift} px, zero fill",
            "torch": torch.__version__,
            "train_seconds": round(train_seconds, 1),
        },
        "heldout_accuracy": acc,
        "heldout_correct": correct,
        "heldout_count": count,
        "train_accuracy": train_correct / train_count,
        "sha256": {weights_path.name: sha256(weights_path), data_path.name: sha256(data_path)},
    }
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    for path in (weights_path, data_path, json_path):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
