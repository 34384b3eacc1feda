"""The one interface every inference backend follows: :class:`Engine`.

A backend is a small runner (the Polygraphy pattern): ``activate()`` loads the model and acquires
the device resources, ``infer(images)`` runs a batch, ``deactivate()`` releases everything. The
checks live here, in the base class, so every backend accepts and returns exactly the same thing:

* input ``images``: float32, C-contiguous, ``[N, C, H, W]`` with ``1 <= N <= max_batch`` and
  ``C, H, W`` (and ``N`` for a fixed-batch model) as the model declares;
* outputs at the model's stride (4): ``heatmap`` ``[N, K, h, w]``, ``offset`` ``[N, 2K, h, w]``,
  ``severity`` ``[N, 3C, h, w]``, all float32 (shared/DESIGN.md, "Model contract").

Subclasses implement ``_activate``, ``_infer`` and ``_deactivate`` and declare their optional
dependencies in ``DEPENDENCIES``; their heavy imports (onnxruntime, tensorrt, torch) stay inside
those methods so that importing a backend module is cheap and never fails.
"""
from __future__ import annotations

import abc
import contextlib
import importlib.util
from typing import ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, LumbarEdgeError, MissingDependencyError

#: The model's output stride (shared/DESIGN.md): outputs are 1/4 of the input size.
DEFAULT_STRIDE = 4
#: The three outputs of the model contract, in the order the decoder takes them.
OUTPUT_NAMES: Tuple[str, ...] = ("heatmap", "offset", "severity")
#: What :meth:`Engine.stage` returns when no timer is attached: one shared do-nothing context.
_NO_STAGE = contextlib.nullcontext()


class EngineError(LumbarEdgeError):
    """An engine cannot be opened or run: unknown or unusable backend, a model file the runtime
    rejects, outputs that break the model contract, or ``infer`` before ``activate``."""


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask in containers), at least 1: the CPU
    engines' default thread count."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux: no affinity call
        return max(1, os.cpu_count() or 1)


def _dims(shape: Sequence[object]) -> Tuple[Optional[int], ...]:
    """A declared shape with symbolic or unknown dimensions as ``None``."""
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None for d in shape)


class Engine(abc.ABC):
    """Base class of the inference backends; see the module docstring for the contract.

    ``name`` is the backend's registry name (``onnxruntime``, ``tensorrt``, ``torch``) and
    ``precision`` the numeric precision of the model it runs (``fp32``, ``fp16``, ``int8``).
    ``num_keypoints`` / ``num_conditions``, when given (from the bundle's head layout), are checked
    against every output. Subclasses set :attr:`input_shape` (``(N, C, H, W)``, ``None`` for a
    dynamic dimension) in ``_activate`` from the model itself.
    """

    #: Registry name of the backend; subclasses override.
    name: ClassVar[str] = "engine"
    #: ``(importable module, pip package)`` pairs this backend needs.
    DEPENDENCIES: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    #: The ``lumbar-edge[extra]`` that installs :attr:`DEPENDENCIES`.
    EXTRA: ClassVar[str] = "all"
    #: Where the outputs are decoded (``numpy`` on the host here; GPU backends say ``cuda kernel``).
    DECODER: ClassVar[str] = "numpy"
    #: Whether batches cross a host/device boundary (GPU backends); host backends have no copies.
    DEVICE_COPIES: ClassVar[bool] = False
    #: An optional stage timer (:class:`lumbar_edge.bench.StageTimer`, or anything with
    #: ``stage(name, items=0)`` returning a context manager). Benchmarks set it; when it is None
    #: (always, in production) timing costs one attribute test per stage.
    timer = None

    def __init__(self, *, precision: str = "fp32", max_batch: int = 64, stride: int = DEFAULT_STRIDE,
                 num_keypoints: Optional[int] = None, num_conditions: Optional[int] = None):
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise InputError(f"max_batch must be a positive integer, got {max_batch!r}")
        if not isinstance(stride, int) or stride < 1:
            raise InputError(f"stride must be a positive integer, got {stride!r}")
        self.precision = str(precision)
        self.max_batch = max_batch
        self.stride = stride
        self.num_keypoints = num_keypoints
        self.num_conditions = num_conditions
        #: ``(N, C, H, W)`` the model accepts; ``None`` entries are dynamic. Set by ``_activate``.
        self.input_shape: Tuple[Optional[int], ...] = (None, None, None, None)
        self._active = False

    # -- availability ---------------------------------------------------------------------------

    @classmethod
    def missing_dependencies(cls) -> List[str]:
        """The pip packages of :attr:`DEPENDENCIES` whose module cannot be found (not imported:
        the check must stay cheap, so it only looks the module up)."""
        return [package for module, package in cls.DEPENDENCIES if importlib.util.find_spec(module) is None]

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        """Why this backend cannot run here (missing packages, no GPU...), or ``None`` if it can.

        GPU backends extend this with their device check.
        """
        missing = cls.missing_dependencies()
        if missing:
            return f"needs {', '.join(missing)} (pip install 'lumbar-edge[{cls.EXTRA}]')"
        return None

    @classmethod
    def is_available(cls) -> bool:
        """Whether this backend can run on this machine."""
        return cls.unavailable_reason() is None

    @classmethod
    def require(cls) -> None:
        """Raise :class:`MissingDependencyError` (naming packages and extra) when a dependency is
        missing, or :class:`EngineError` when the backend is unusable for another reason."""
        missing = cls.missing_dependencies()
        if missing:
            raise MissingDependencyError(f"the {cls.name} backend", missing, cls.EXTRA)
        reason = cls.unavailable_reason()
        if reason is not None:
            raise EngineError(f"the {cls.name} backend cannot run here: {reason}")

    @classmethod
    def from_bundle(cls, bundle, precision: Optional[str] = None, **options) -> "Engine":
        """An (inactive) engine for ``bundle``'s model of ``precision`` (``None``: the backend's
        preferred precision among those the bundle has). Backends override; the base raises
        :class:`EngineError`."""
        raise EngineError(f"the {cls.name} backend cannot open model bundles")

    @classmethod
    def precisions_for(cls, bundle) -> List[str]:
        """The precisions this backend can run ``bundle`` at (empty when none)."""
        return []

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> "Engine":
        """Load the model and acquire its resources; a second call does nothing. Returns ``self``.

        Raises :class:`MissingDependencyError` when the backend's packages are absent, and what
        ``_activate`` raises (:class:`EngineError`, :class:`InputError`) when the model is unusable.
        """
        if self._active:
            return self
        type(self).require()
        self._activate()
        self._active = True
        return self

    def deactivate(self) -> None:
        """Release the model and its resources; a second call (or one before activate) does nothing."""
        if not self._active:
            return
        try:
            self._deactivate()
        finally:
            # Even a failed release leaves the engine unusable; marking it inactive makes a
            # later infer() fail with the clear "not activated" error instead of a crash.
            self._active = False

    def __enter__(self) -> "Engine":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- instrumentation ------------------------------------------------------------------------

    def stage(self, name: str, items: int = 0):
        """A context manager that times stage ``name`` (``h2d``, ``engine``, ``decode``, ``d2h``)
        on :attr:`timer`; a shared no-op when there is none."""
        timer = self.timer
        return _NO_STAGE if timer is None else timer.stage(name, items)

    def device_memory(self) -> Optional[Tuple[int, str]]:
        """``(bytes, what was measured)`` of device memory since :meth:`reset_device_memory`, or
        None for a host backend. GPU backends override."""
        return None

    def reset_device_memory(self) -> None:
        """Start a new peak for :meth:`device_memory` (GPU backends override)."""

    # -- inference ------------------------------------------------------------------------------

    def check_input(self, images: object) -> np.ndarray:
        """Validate a batch; returns it unchanged. Raises :class:`EngineError` when the engine is
        not activated and :class:`InputError` for anything but a float32 C-contiguous ndarray
        ``[N, C, H, W]`` that matches :attr:`input_shape` with ``1 <= N <= max_batch``."""
        if not self._active:
            raise EngineError(f"the {self.name} engine is not activated: call activate() or use it as a "
                              f"context manager (`with engine: ...`)")
        if not isinstance(images, np.ndarray):
            raise InputError(f"images must be a numpy array, got {type(images).__name__}")
        if images.dtype != np.float32:
            raise InputError(f"images must be float32, got {images.dtype}")
        if images.ndim != 4:
            raise InputError(f"images must be [N, C, H, W], got an array of shape {images.shape}")
        if not images.flags.c_contiguous:
            raise InputError("images must be C-contiguous; pass np.ascontiguousarray(images)")
        n = images.shape[0]
        if not 1 <= n <= self.max_batch:
            raise InputError(f"batch size {n} is outside 1..{self.max_batch} (max_batch of this {self.name} engine)")
        for axis, (got, want) in enumerate(zip(images.shape, self.input_shape)):
            if want is not None and got != want:
                expected = "[" + ", ".join("N" if d is None and i == 0 else "?" if d is None else str(d)
                                           for i, d in enumerate(self.input_shape)) + "]"
                raise InputError(f"images of shape {list(images.shape)} do not fit the model input {expected} "
                                 f"(axis {axis}: {got} != {want})")
        return images

    def check_outputs(self, outputs: object, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Validate what ``_infer`` returned for ``images``; returns the three outputs.

        Raises :class:`EngineError` unless it is a mapping with float32 arrays ``heatmap``
        ``[N, K, h, w]``, ``offset`` ``[N, 2K, h, w]``, ``severity`` ``[N, 3C, h, w]`` where
        ``h, w`` = input size / stride and ``K``, ``C`` match the engine's layout when known.
        """
        if not isinstance(outputs, Mapping):
            raise EngineError(f"the {self.name} engine returned {type(outputs).__name__}, not a dict of outputs")
        missing = [k for k in OUTPUT_NAMES if k not in outputs]
        if missing:
            raise EngineError(f"the {self.name} engine returned no {', '.join(missing)} output "
                              f"(got {', '.join(map(str, outputs)) or 'nothing'})")
        out = {}
        for key in OUTPUT_NAMES:
            arr = outputs[key]
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 4:
                what = f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise EngineError(f"the {self.name} engine's {key} output must be a float32 [N, ch, h, w] array, "
                                  f"got a {what}")
            out[key] = arr
        n, _, height, width = images.shape
        h, w = height // self.stride, width // self.stride
        k = out["heatmap"].shape[1]
        expected = {"heatmap": (n, k, h, w), "offset": (n, 2 * k, h, w)}
        sev = out["severity"].shape[1]
        if sev % 3 or sev == 0:
            raise EngineError(f"the {self.name} engine's severity output has {sev} channels, "
                              f"not 3 per condition")
        expected["severity"] = (n, sev, h, w)
        if self.num_keypoints is not None and k != self.num_keypoints:
            raise EngineError(f"the {self.name} engine's heatmap has {k} keypoint channels; "
                              f"the bundle's layout has {self.num_keypoints}")
        if self.num_conditions is not None and sev != 3 * self.num_conditions:
            raise EngineError(f"the {self.name} engine's severity output has {sev} channels; "
                              f"the bundle's layout needs 3 x {self.num_conditions}")
        for key, shape in expected.items():
            if out[key].shape != shape:
                raise EngineError(f"the {self.name} engine's {key} output has shape {list(out[key].shape)}, "
                                  f"expected {list(shape)} for input {list(images.shape)} at stride {self.stride}")
        return out

    def infer(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Run one batch; returns ``{"heatmap", "offset", "severity"}`` as host float32 arrays.

        Raises :class:`EngineError` (not activated, outputs breaking the contract, runtime
        failure) or :class:`InputError` (a batch of the wrong type, layout or size).
        """
        images = self.check_input(images)
        return self.check_outputs(self._infer(images), images)

    def infer_decoded(self, images: np.ndarray, groups: "Sequence[int] | np.ndarray"):
        """Run one batch and decode its peaks: :func:`lumbar_edge.decode.decode_numpy` on the
        outputs of :meth:`infer`. ``groups[k]`` is the severity group keypoint channel ``k`` reads.

        GPU backends override this to decode on the device, where the outputs already are. Raises
        what :meth:`infer` raises, and :class:`InputError` when ``groups`` does not match the
        outputs' keypoint and condition counts.
        """
        from ..decode import decode_numpy  # the decoder module is light; imported late to keep this one standalone

        with self.stage("engine", len(images) if isinstance(images, np.ndarray) and images.ndim else 0):
            outputs = self.infer(images)
        groups_arr = np.asarray(groups)
        k = outputs["heatmap"].shape[1]
        c = outputs["severity"].shape[1] // 3
        if (groups_arr.ndim != 1 or groups_arr.shape[0] != k or not np.issubdtype(groups_arr.dtype, np.integer)
                or (k and (groups_arr.min() < 0 or groups_arr.max() >= c))):
            raise InputError(f"groups must be {k} integers in 0..{c - 1} (one severity group per keypoint "
                             f"channel), got {groups_arr.tolist()}")
        with self.stage("decode"):
            return decode_numpy(outputs["heatmap"], outputs["offset"], outputs["severity"],
                                groups_arr.astype(np.int32, copy=False), stride=self.stride)

    # -- what a backend implements ---------------------------------------------------------------

    @abc.abstractmethod
    def _activate(self) -> None:
        """Load the model, set :attr:`input_shape`; raise :class:`EngineError` if unusable."""

    @abc.abstractmethod
    def _infer(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        """Run a validated batch; return the three outputs as host float32 arrays."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Release what :meth:`_activate` acquired."""

    def __repr__(self) -> str:
        state = "active" if self._active else "inactive"
        return f"<{type(self).__name__} {self.name}/{self.precision} {state}>"


__all__ = ["Engine", "EngineError", "OUTPUT_NAMES", "DEFAULT_STRIDE"]
