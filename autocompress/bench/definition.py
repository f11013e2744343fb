"""A benchmark definition: the YAML file that names the tasks, the training budget, the seed and the sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

BENCH_VERSION = 1
OBJECTIVE_KEYS = ("size", "flops", "latency")


class BenchError(ConfigError):
    """A benchmark definition that cannot be run."""


@dataclass(frozen=True)
class BenchDefinition:
    """A parsed benchmark file (see :func:`load_definition`): its sections stay the YAML's mappings."""

    name: str
    tasks: tuple[str, ...]
    seed: int = 0
    budget: str = "high"
    max_drop: float = 1.0
    backend: str = "cpu"  # the deployment backend of every study and baseline (cpu, onnxruntime, gpu)
    preservation: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)


def _fail(what: str, expected: str, fix: str) -> BenchError:
    return BenchError(what, expected, fix)


def load_definition(path: str | Path) -> BenchDefinition:
    """Parse and check a benchmark YAML file (``yaml.safe_load``: no Python objects)."""
    import yaml

    from .._io import safe_component

    path = Path(path)
    if not path.is_file():
        raise _fail(f"no benchmark file at {path}", "a YAML benchmark definition", "see studies/digits.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise _fail(f"{path} is not valid YAML ({str(exc).splitlines()[0]})", "a YAML mapping",
                    "fix the file") from None
    if not isinstance(raw, dict):
        raise _fail(f"{path} holds a {type(raw).__name__}", "a YAML mapping with name, tasks and sections",
                    "see studies/digits.yaml")
    known = {"name", "tasks", "seed", "budget", "max_drop", "backend", "preservation", "targets", "baselines"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(f"unknown keys {unknown} in {path}", f"keys among {sorted(known)}", "remove or rename them")
    tasks = raw.get("tasks")
    if isinstance(tasks, str):
        tasks = [tasks]
    if not tasks or not all(isinstance(t, str) for t in tasks):
        raise _fail(f"tasks {tasks!r}", "a list of task references (digits, path/to/task.py, module:function)",
                    "add e.g. `tasks: [digits]`")
    definition = BenchDefinition(
        name=safe_component(raw.get("name") or path.stem), tasks=tuple(tasks), seed=int(raw.get("seed", 0)),
        budget=str(raw.get("budget", "high")), max_drop=float(raw.get("max_drop", 1.0)),
        backend=str(raw.get("backend", "cpu")),
        preservation=dict(raw.get("preservation") or {}), targets=dict(raw.get("targets") or {}),
        baselines=dict(raw.get("baselines") or {}))
    from ..requirements import Requirements

    # one-line errors for bad values
    Requirements(max_drop=definition.max_drop, budget=definition.budget, backend=definition.backend)
    for section in ("preservation", "targets", "baselines"):
        trials = getattr(definition, section).get("trials", 0)
        if getattr(definition, section) and (not isinstance(trials, int) or trials < 1):
            raise _fail(f"{section}.trials {trials!r}", "a number of trials ≥ 1", f"set {section}.trials")
    for key in definition.targets:
        if key not in (*OBJECTIVE_KEYS, "trials", "max_drop"):
            raise _fail(f"targets.{key}", f"targets per objective ({', '.join(OBJECTIVE_KEYS)}), trials, max_drop",
                        "rename the key")
    if not (definition.preservation or definition.targets or definition.baselines):
        raise _fail(f"{path} with no section", "at least one of preservation, targets, baselines",
                    "add a section")
    return definition
