"""The built-in demo task ``digits``: scikit-learn's bundled 8×8 handwritten digits and a small CNN.

The data ships inside scikit-learn (1,797 real images, no download). The CNN is trained on first use with a
fixed seed and cached in the user cache directory, so later runs load it in milliseconds.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .._io import cache_dir
from . import _cache
from ..task import Task

log = logging.getLogger(__name__)

SEED = 0
EPOCHS = 20
EVAL_FRACTION = 0.25
MODEL_VERSION = 1  # bump when the architecture or the recipe changes, so stale caches are not reused


class DigitsCNN(nn.Module):
    """Three conv-BN-ReLU blocks and a two-layer classifier, written the way users write them."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(4 * w * 2 * 2, 128), nn.ReLU(inplace=True), nn.Dropout(0.2), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def load_split(seed: int = SEED) -> tuple[TensorDataset, TensorDataset]:
    """The fixed stratified train/eval split of scikit-learn's digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_eval = train_test_split(
        torch.arange(len(y)).numpy(), test_size=EVAL_FRACTION, stratify=y.numpy(), random_state=seed
    )
    return (
        TensorDataset(x[idx_train], y[idx_train]),
        TensorDataset(x[idx_eval], y[idx_eval]),
    )


def train_model(train: TensorDataset, seed: int = SEED, epochs: int = EPOCHS, device: str = "cpu",
                progress: bool = True) -> DigitsCNN:
    """Train :class:`DigitsCNN` deterministically for a given seed."""
    from ..progress import progress_bar

    torch.manual_seed(seed)
    model = DigitsCNN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, generator=generator)
    model.train()
    with progress_bar("training the digits CNN (first use, cached after)", total=epochs, enabled=progress) as bar:
        for _ in range(epochs):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
            scheduler.step()
            bar.advance()
    return model.eval().cpu()


def cached_model(seed: int = SEED, progress: bool = True) -> DigitsCNN:
    """The trained CNN: loaded from the cache (``weights_only=True``), or trained and cached on first use."""
    path = cache_dir() / f"digits_cnn_v{MODEL_VERSION}_seed{seed}.pt"
    return _cache.cached_model(path, DigitsCNN, lambda: train_model(load_split(seed)[0], seed=seed, progress=progress),
                               "digits model")


def task(seed: int = SEED) -> Task:
    train, evaluation = load_split(seed)
    return Task(
        name="digits",
        model=cached_model(seed),
        train_data=train,
        eval_data=evaluation,
        example_input=evaluation.tensors[0][:1],
        metric="accuracy",
        batch_size=64,
        description="scikit-learn handwritten digits (8x8, 10 classes), small CNN with BatchNorm",
    )
