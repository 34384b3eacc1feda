"""Inference backends behind one interface (:class:`~lumbar_edge.backends.base.Engine`).

Backends are registered by name as ``(module, class)`` and imported only when asked for, so
importing :mod:`lumbar_edge.backends` never loads onnxruntime, tensorrt or torch (and a backend
module itself imports its runtime only when an engine is activated).

* :func:`select_backend` resolves ``auto`` (the first available of an order, GPU first) or checks a
  named backend, and says why in one line;
* :func:`get_backend_class` returns the engine class, or raises a clear error;
* :func:`open_engine` opens an (inactive) engine for a model bundle;
* :func:`activate_engine` opens and activates one, and with ``auto`` passes over a backend whose
  engine cannot run the bundle here (no engine file for this GPU, a model its runtime rejects).
"""
from __future__ import annotations

import importlib
import inspect
from types import MappingProxyType
from typing import Mapping, Optional, Sequence, Tuple, Type

from ..errors import InputError, MissingDependencyError
from .base import Engine, EngineError

#: Registry name -> (module, class).
BACKENDS: Mapping[str, Tuple[str, str]] = MappingProxyType({
    "tensorrt": ("lumbar_edge.backends.tensorrt", "TensorRTEngine"),
    "torch": ("lumbar_edge.backends.torch_cuda", "TorchCudaEngine"),
    "openvino": ("lumbar_edge.backends.openvino", "OpenVinoEngine"),
    "onnxruntime": ("lumbar_edge.backends.ort", "OrtEngine"),
})
#: The order ``auto`` tries: fastest first (the GPU engines, then OpenVINO, the faster CPU engine
#: where it is installed, then ONNX Runtime, which is always installed). Names not in the registry
#: are skipped.
AUTO_ORDER: Tuple[str, ...] = ("tensorrt", "torch", "openvino", "onnxruntime")


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


def _from_bundle(cls: Type[Engine], bundle, precision: Optional[str], options: Mapping[str, object]) -> Engine:
    """``cls.from_bundle`` with the options it takes: ``None`` values are dropped (each backend
    keeps its default) and so are options a backend has no parameter for (``hint`` means nothing
    to ONNX Runtime). ``device`` is an OpenVINO device name here, so it is refused for others."""
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(options.get("device"), str) and cls.name != "openvino":
        raise InputError(f"device {options['device']!r} names an OpenVINO device; it applies to the openvino "
                         f"backend only, and {cls.name} was asked for")
    params = inspect.signature(cls.from_bundle).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return cls.from_bundle(bundle, precision, **options)


def open_engine(bundle, backend: str = "auto", precision: Optional[str] = None, *,
                available_order: Sequence[str] = AUTO_ORDER, registry: Mapping[str, Tuple[str, str]] = BACKENDS,
                **options) -> Engine:
    """An inactive engine for ``bundle`` on ``backend`` (``auto`` or a name) at ``precision``
    (``None``: the backend's preferred precision among the bundle's).

    ``options`` (``threads``, ``max_batch``, ``hint``, ``device``...) go to the backend's
    ``from_bundle``; ``None`` values and options the backend does not take are dropped, so each
    backend keeps its own default. Raises what :func:`select_backend` raises, the bundle's error
    when it lacks the precision, and :class:`InputError` for an OpenVINO ``device`` given to
    another backend.
    """
    name, _ = select_backend(backend, available_order, registry)
    return _from_bundle(_load_class(name, registry), bundle, precision, options)


def activate_engine(bundle, backend: str = "auto", precision: Optional[str] = None, *,
                    available_order: Sequence[str] = AUTO_ORDER, registry: Mapping[str, Tuple[str, str]] = BACKENDS,
                    **options) -> Tuple[Engine, str]:
    """An activated engine for ``bundle`` and the one-line reason it was chosen.

    A named backend is opened and activated, or its error raised. ``auto`` tries each backend of
    ``available_order`` that is available here; one whose engine cannot be opened or activated for
    this bundle (:class:`EngineError` or the bundle's error: no TensorRT engine for this GPU, a model
    the runtime rejects, a precision it lacks) is passed over with its reason, and the next one is
    tried. An OpenVINO ``device`` in ``options`` makes ``auto`` mean openvino. Raises
    :class:`EngineError` listing every reason when none is usable, and :class:`InputError` (a
    missing model file...) as soon as it occurs, since no other backend would fix it.
    """
    from ..bundle import BundleError

    if backend == "auto" and isinstance(options.get("device"), str):
        backend = "openvino"
    if backend != "auto":
        name, reason = select_backend(backend, available_order, registry)
        return _from_bundle(_load_class(name, registry), bundle, precision, options).activate(), reason
    passed = []
    for candidate in available_order:
        if candidate not in registry:
            passed.append(f"{candidate}: not part of this lumbar-edge")
            continue
        cls = _load_class(candidate, registry)
        why = cls.unavailable_reason()
        if why is None:
            try:
                engine = _from_bundle(cls, bundle, precision, options)
                engine.activate()
            except (EngineError, BundleError) as exc:
                why = str(exc)
            else:
                skipped = f"; skipped {'; '.join(passed)}" if passed else ""
                return engine, f"{candidate} (auto: first usable of {', '.join(available_order)}{skipped})"
        passed.append(f"{candidate}: {why}")
    raise EngineError(f"no inference backend can run this bundle here ({'; '.join(passed)})")


__all__ = ["AUTO_ORDER", "BACKENDS", "Engine", "EngineError", "MissingDependencyError", "activate_engine", "backend_names",
           "get_backend_class", "open_engine", "select_backend"]
