"""Engine names -> classes. Adding an engine: its folder under engines/ plus one line here.

Classes are imported lazily by name so that listing engines, or validating a workload, never pulls
in TensorFlow or the native extension.
"""

from __future__ import annotations

import importlib

from harness.spec.engine import Engine

ENGINES: dict[str, str] = {
    "slide": "engines.slide:SlideEngine",
    "tf_dense": "engines.tf:TFDenseEngine",
    "tf_sampled": "engines.tf:TFSampledEngine",
    "numpy_dense": "engines.reference:NumpyDenseEngine",
}


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under `name`; ValueError naming the known engines otherwise."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; registered: {', '.join(sorted(ENGINES))}") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise TypeError(f"{target} is not a harness.spec.engine.Engine subclass")
    return cls
