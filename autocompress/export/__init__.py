"""Export of compressed models, each export reloaded and checked before success is reported.

Formats (:data:`FORMATS`):

- ``torchscript``: ``torch.jit.trace`` of the model (dict inputs become positional arguments in key order;
  the output is the logits tensor). Loads anywhere with ``torch.jit.load``, no Python class needed.
- ``onnx``: the TorchScript-based ONNX exporter (``dynamo=False``: the dynamo exporter needs onnxscript,
  which autocompress does not depend on), opset 17, dynamic batch axis; checked in ONNX Runtime.
- ``pt2``: ``torch.export`` program with a dynamic batch dimension (``torch.export.load``).
- ``autocompress``: a zip archive (manifest, weights, TorchScript program, the evaluation inputs it was
  checked on) that rebuilds the real module on its base model; see :mod:`autocompress.export.archive`.

Every export is written to a temporary file beside ``path``, reloaded from it and checked against the
in-memory model on the check inputs (64 rows): float models need max |Δ| <= 1e-4 × max |output| + 1e-12, int8
models a top-1 agreement >= 99% on real evaluation inputs (see :mod:`autocompress.export.check`). Only then is
it renamed into place, so a failure leaves no partial file. An existing file is replaced only with
``overwrite=True``.

Support matrix (tried on torch 2.14 / onnxruntime 1.32; ✓ = exported, reloaded and checked):

    model                                   torchscript  onnx  pt2  autocompress
    float (incl. pruned), tensor input          ✓         ✓     ✓        ✓
    float HF BERT, dict input                   ✓         ✓     ✓        ✓
    int8 static / qat (FX or eager mode)        ✓         ✓     ✗        ✓
    int8 dynamic (Linear, eager), CNN or BERT   ✓         ✗     ✗        ✓
    trimmed vocabulary / int8 embeddings        ✓         ✓     ✓        ✓
      (autocompress.embeddings), float rest
    the same + int8 dynamic Linear layers       ✓         ✗     ✗        ✓

pt2 cannot hold torch.ao int8 modules (their packed weights are TorchScript classes that torch.export
cannot flatten; a failed attempt also leaves the model half-modified, so probes run on copies); ONNX has no
operator for ``quantized::linear_dynamic``. ONNX Runtime's QLinear kernels round differently from fbgemm
(outputs differ by up to one output quantization step), so an int8 model whose logits are near ties (a
pruned model before fine-tuning, say) can miss the 99% top-1 agreement in ONNX: the export then fails its
check and says so. Asking for a format that cannot hold the model raises an :class:`ExportError` naming the
formats that can (found by trying them in memory).

Modules: :mod:`.formats` (writers, loaders, :class:`LoadedProgram`, format rules), :mod:`.check` (the reload
check), :mod:`.archive` (the autocompress archive), :mod:`.api` (export_model, load, detect_format,
supported_formats), :mod:`.trial` (export of a study trial).
"""

from .api import ExportResult, detect_format, export_model, load, supported_formats
from .archive import read_check_inputs, read_manifest
from .check import CHECK_ROWS, FLOAT_ATOL, FLOAT_RTOL, INT8_AGREEMENT, Tolerance
from .formats import ARCHIVE_VERSION, FORMATS, ONNX_OPSET, PICKLE_RISK, SUFFIXES, LoadedProgram, formats_for_mode

__all__ = [
    "ARCHIVE_VERSION", "CHECK_ROWS", "FLOAT_ATOL", "FLOAT_RTOL", "FORMATS", "INT8_AGREEMENT", "ONNX_OPSET",
    "PICKLE_RISK", "SUFFIXES", "ExportResult", "LoadedProgram", "Tolerance", "detect_format", "export_model",
    "formats_for_mode", "load", "read_check_inputs", "read_manifest", "supported_formats",
]
