"""Inference backends behind one interface (:class:`~lumbar_edge.backends.base.Engine`).

Backends are registered by name as ``(module, class)`` and imported only when asked for, so
importing :mod:`lumbar_edge.backends` never loads onnxruntime, tensorrt or torch (and a backend
module itself imports its runtime only when an engine is activated).

* :func:`select_backend` resolves ``auto`` (the first available of an order, GPU first) or checks a
  named backend, and says why in one line;
* :func:`get_backend_class` returns the engine class, or raises a clear error;
* :func:`open_engine` opens an (inactive) engine for a model bundle.
"""
from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Mapping, Optional, Sequence, Tuple, Type

from ..errors import MissingDependencyError
from .base import Engine, EngineError

#: Registry name -> (module, class).
BACKENDS: Mapping[str, Tuple[str, str]] = MappingProxyType({
    "tensorrt": ("lumbar_edge.backends.tensorrt", "TensorRTEngine"),
    "torch": ("lumbar_edge.backends.torch_cuda", "TorchCudaEngine"),
    "onnxruntime": ("lumbar_edge.backends.ort", "OrtEngine"),
})
#: The order ``auto`` tries: fastest first. Names not in the registry are skipped.
AUTO_ORDER: Tuple[str, ...] = ("tensorrt", "torch", "onnxruntime")


def backend_names(registry: Mapping[str, Tuple[str, str]] = BACKENDS) -> Tuple[str, ...]:
    """Names of the registered backends."""
    return tuple(registry)


def _load_class(name: str, registry: Mapping[str, Tuple[str, str]]) -> Type[Engine]:
    if name not in registry:
        raise EngineError(f"unknown backend {name!r}; this lumbar-edge has: {', '.join(registry) or 'none'} "
                          f"(or 'auto')")
    module_name, class_name = registry[name]
    # Backend modules keep their runtime imports inside the engine, so this import is cheap and
    # does not fail when the runtime is missing; availability is asked of the class afterwards.
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise EngineError(f"backend {name!r} is registered as {module_name}.{class_name}, which is not an Engine")
    return cls


def get_backend_class(name: str, registry: Mapping[str, Tuple[str, str]] = BACKENDS) -> Type[Engine]:
    """The engine class of backend ``name``, checked to be usable here.

    Raises :class:`EngineError` for an unknown name or a backend that cannot run here for a
    reason other than packages (e.g. no GPU), and :class:`MissingDependencyError` naming the
    packages and the extra to install when its packages are missing.
    """
    cls = _load_class(name, registry)
    cls.require()
    return cls


def select_backend(name: str = "auto", available_order: Sequence[str] = AUTO_ORDER,
                   registry: Mapping[str, Tuple[str, str]] = BACKENDS) -> Tuple[str, str]:
    """Resolve a ``--backend`` value to a usable backend: ``(name, reason)``.

    ``auto`` picks the first name of ``available_order`` that is registered and available, and
    the reason lists why each earlier one was passed over. A named backend is returned when it
    is usable. Raises what :func:`get_backend_class` raises for a named backend, and
    :class:`EngineError` when ``auto`` finds none.
    """
    if name != "auto":
        get_backend_class(name, registry)
        return name, f"{name} (requested)"
    passed = []
    for candidate in available_order:
        if candidate not in registry:
            passed.append(f"{candidate}: not part of this lumbar-edge")
            continue
        reason = _load_class(candidate, registry).unavailable_reason()
        if reason is None:
            why = f"; skipped {'; '.join(passed)}" if passed else ""
            return candidate, f"{candidate} (auto: first available of {', '.join(available_order)}{why})"
        passed.append(f"{candidate}: {reason}")
    raise EngineError(f"no inference backend is available ({'; '.join(passed)})")


def open_engine(bundle, backend: str = "auto", precision: Optional[str] = None, *,
                available_order: Sequence[str] = AUTO_ORDER, registry: Mapping[str, Tuple[str, str]] = BACKENDS,
                **options) -> Engine:
    """An inactive engine for ``bundle`` on ``backend`` (``auto`` or a name) at ``precision``
    (``None``: the backend's preferred precision among the bundle's).

    ``options`` (``threads``, ``max_batch``...) go to the backend's ``from_bundle``; ``None``
    values are dropped so each backend keeps its own default. Raises what
    :func:`select_backend` raises, and the bundle's error when it lacks the precision.
    """
    name, _ = select_backend(backend, available_order, registry)
    cls = _load_class(name, registry)
    return cls.from_bundle(bundle, precision, **{k: v for k, v in options.items() if v is not None})


__all__ = ["AUTO_ORDER", "BACKENDS", "Engine", "EngineError", "MissingDependencyError", "backend_names",
           "get_backend_class", "open_engine", "select_backend"]
