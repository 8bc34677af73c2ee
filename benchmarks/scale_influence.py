"""Influence at ResNet scale: xaibench against kronfluence 1.0.1 on a ResNet-18, each side in its own process.

WORK IN PROGRESS
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
IMAGE = 32
CLASSES = 5
SEED = 0


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` of xaibench's generated shapes (3x64x64), resized to 3x32x32 with antialiasing, and labels."""
    from xaibench.data import shapes

    x, y, _masks = shapes.generate(n, seed)
    small = F.interpolate(torch.from_numpy(x), size=(IMAGE, IMAGE), mode="bilinear", antialias=True,
                          align_corners=False).clamp_(0, 1)
    return small.contiguous(), torch.from_numpy(y)


def trained_resnet(x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    """xaibench's ResNet-18 for the shapes' 5 classes, seeded, trained ``epochs`` epochs (Adam, lr 1e-3,
    batches of 64, seeded order), in eval mode."""
    from xaibench.models.archs import resnet18

    torch.manual_seed(SEED)
    model = resnet18(num_classes=CLASSES)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=order).split(64):
            optimiser.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return model.eval()


def write_files(folder: Path, train_n: int, queries: int, epochs: int) -> dict[str, object]:
    """The model checkpoint and the train / query data files the CLI and the child processes read."""
    from xaibench.data.shapes import CLASS_NAMES
    from xaibench.models import ModelMeta, save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    x, y = images(train_n, 0)
    q, t = images(queries, 1)
    start = time.perf_counter()
    model = trained_resnet(x, y, epochs)
    seconds = time.perf_counter() - start
    meta = ModelMeta(modality="image", input_shape=(3, IMAGE, IMAGE), class_names=CLASS_NAMES,
                     value_range=(0.0, 1.0))
    save_checkpoint(folder / "resnet18.pt", model, arch="resnet18", arch_kwargs={"num_classes": CLASSES},
                    meta=meta)
    for name, (inputs, labels) in (("train", (x, y)), ("query", (q, t))):
        np.savez(folder / f"{name}.npz", x=inputs.numpy(), y=labels.numpy(), class_names=np.array(CLASS_NAMES))
    with torch.no_grad():
        accuracy = {name: float((model(a).argmax(1) == b).float().mean()) for name, (a, b) in
                    (("train", (x, y)), ("query", (q, t)))}
    return {"train": train_n, "queries": queries, "epochs": epochs, "training_seconds": seconds,
            "accuracy": accuracy, "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write-files", type=Path)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if args.write_files:
        print(json.dumps(write_files(args.write_files, args.train, args.queries, args.epochs)))


if __name__ == "__main__":
    main()
