import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in models are trained into a per-run cache, so tests never depend on the user's cache."""
    cache = tmp_path_factory.mktemp("autocompress-cache")
    previous = os.environ.get("AUTOCOMPRESS_CACHE_DIR")
    os.environ["AUTOCOMPRESS_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("AUTOCOMPRESS_CACHE_DIR", None)
    else:
        os.environ["AUTOCOMPRESS_CACHE_DIR"] = previous


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "autocompress", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=os.environ.copy())


def tiny_bert(num_labels: int = 3, seq_len: int = 16):
    """A small random BertForSequenceClassification (2 layers, hidden 32, 4 heads) shared by the tests."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=seq_len, num_labels=num_labels)
    return BertForSequenceClassification(config).eval()
