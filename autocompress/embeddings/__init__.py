"""Embedding compression: vocabulary trimming and weight-only int8 embeddings.

A pretrained encoder's word embedding can be half its weights (MiniLM-L6: 30,522 x 384 of 22.7 M), and
torch.ao's dynamic int8 leaves embeddings float. Two steps shrink it, each on a copy of the model, and the
compressed model still takes the original token ids:

- :func:`trim_vocabulary` keeps the rows of the ids a task's data uses (:func:`collect_token_ids`) behind an
  id remap; other ids read the unknown-token row (:func:`oov_rate` counts them);
- :func:`quantize_embeddings` stores word, position and token-type embeddings as int8 with a float32 scale
  per row; it composes with dynamic int8 of the Linear layers.

:class:`EmbeddingConfig` (kind ``embeddings``) records the choice; :func:`apply_embeddings` applies it. The
replacement modules are rebuilt from an ``autocompress`` archive's architecture record, and every export
format keeps the original-id input contract.

Modules: :mod:`.modules` (TrimmedEmbedding, Int8Embedding, helpers), :mod:`.trim`, :mod:`.int8`,
:mod:`.config`.
"""

from .config import EmbeddingConfig, EmbeddingResult, apply_embeddings
from .int8 import Int8EmbeddingResult, quantize_embeddings, quantize_rows
from .modules import EmbeddingError, Int8Embedding, TrimmedEmbedding, add_remap_probe_rows, remapped_embedding
from .trim import OOVRate, TrimResult, collect_token_ids, oov_rate, trim_vocabulary

__all__ = [
    "EmbeddingConfig", "EmbeddingError", "EmbeddingResult", "Int8Embedding", "Int8EmbeddingResult", "OOVRate",
    "TrimResult", "TrimmedEmbedding", "add_remap_probe_rows", "apply_embeddings", "collect_token_ids", "oov_rate",
    "quantize_embeddings", "quantize_rows", "remapped_embedding", "trim_vocabulary",
]
