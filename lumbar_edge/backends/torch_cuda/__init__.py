"""Torch CUDA backend (registry name ``torch``): for machines with PyTorch and a GPU but no TensorRT.

The network is rebuilt from the bundle's ``model_config`` and FP32 weights (``model.pt``), run in
FP16 (or FP32) with channels-last memory, captured in a ``torch.cuda.CUDAGraph`` per batch size
(static input and output tensors), and decoded by the project's CUDA kernel reading the output
tensors in place. The folder is ``torch_cuda`` so it never shadows the ``torch`` package.

Streams: pycuda's launch cannot take a foreign stream handle, so the engine owns one pycuda
stream and hands it to PyTorch as ``torch.cuda.ExternalStream``; graph replay and the decode
kernel are thus on the same stream. Both share the device's primary context (PyTorch's runtime
uses it; pycuda retains it through :class:`~lumbar_edge.backends.cuda_resources.PrimaryContext`).
torch and pycuda are imported inside the engine only.

FP32 means IEEE FP32: PyTorch runs FP32 convolutions in TF32 on Ampere and later by default
(``torch.backends.cudnn.conv.fp32_precision == "tf32"``), about 1e-3 relative error per layer, so
the fp32 engine switches TF32 off around every forward and graph capture (:func:`fp32_math`) and
says so in :meth:`TorchCudaEngine.describe` (hence in ``lumbar-edge bench``'s JSON).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import InputError
from ..base import OUTPUT_NAMES, Engine, EngineError

#: Precisions this backend runs (the INT8 Q/DQ graph is TensorRT's and ONNX Runtime's).
PRECISIONS: Tuple[str, ...] = ("fp16", "fp32")
#: Uncaptured runs before capturing a graph (cuDNN picks its algorithms during these).
WARMUP_RUNS = 3


@contextlib.contextmanager
def fp32_math(torch, ieee: bool) -> Iterator[None]:
    """While active and ``ieee``, FP32 convolutions and matmuls run in IEEE FP32 (TF32 off);
    the previous settings are restored after. The flags are process-wide, so the engine sets them
    only around its own forward passes and captures (kernels are chosen then; a graph replays
    what was captured). Uses the ``fp32_precision`` API where PyTorch has it (2.9 and later, which
    refuses reads of the legacy flags once it is used), else the legacy ``allow_tf32`` flags."""
    if not ieee:
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        flags = [(conv, "fp32_precision"), (torch.backends.cuda.matmul, "fp32_precision")]
        value = "ieee"
    else:
        flags = [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]
        value = False
    saved = [getattr(owner, name) for owner, name in flags]
    try:
        for owner, name in flags:
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name), old in zip(flags, saved):
            setattr(owner, name, old)


class _Captured:
    """One batch size's CUDA graph and its static input / output tensors."""

    def __init__(self, graph, static_input, outputs):
        self.graph, self.static_input, self.outputs = graph, static_input, outputs

    def free(self) -> None:
        self.graph = self.static_input = self.outputs = None


class TorchCudaEngine(Engine):
    """Runs the bundle's network with PyTorch on CUDA device ``device``.

    ``weights``: the FP32 state dict (``model.pt``); ``model_config``: the manifest's
    ``model_config``; ``input_chw``: ``(C, H, W)``. ``precision`` is ``fp16`` (default) or
    ``fp32``; ``cuda_graphs=False`` runs eagerly (for comparisons).
    """

    name = "torch"
    DECODER = "cuda kernel"
    DEVICE_COPIES = True
    DEPENDENCIES = (("torch", "torch"), ("pycuda", "pycuda"))
    EXTRA = "train,trt"

    def __init__(self, weights: Union[str, Path], model_config: Mapping[str, object], input_chw: Sequence[int], *,
                 device: int = 0, precision: str = "fp16", max_batch: int = 64, cuda_graphs: bool = True,
                 channels_last: bool = True, num_keypoints: Optional[int] = None,
                 num_conditions: Optional[int] = None, stride: int = 4):
        if precision not in PRECISIONS:
            raise EngineError(f"the torch backend runs {' or '.join(PRECISIONS)}, not {precision}")
        super().__init__(precision=precision, max_batch=max_batch, stride=stride, num_keypoints=num_keypoints,
                         num_conditions=num_conditions)
        self.weights = Path(weights)
        self.model_config = dict(model_config)
        c, h, w = (int(v) for v in input_chw)
        self.input_shape = (None, c, h, w)
        self.device = int(device)
        self.cuda_graphs = bool(cuda_graphs)
        self.channels_last = bool(channels_last)
        self._clear()

    def _clear(self) -> None:
        self._model = self._ctx = self._stream = self._torch_stream = self._decoder = self._pinned = None
        self._graphs: Dict[int, _Captured] = {}

    # -- availability ---------------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        reason = super().unavailable_reason()
        if reason is not None:
            return reason
        from ..cuda_resources import gpu_missing_reason

        reason = gpu_missing_reason()
        if reason is not None:
            return reason
        import torch

        if not torch.cuda.is_available():
            return f"torch {torch.__version__} is a CPU-only build (torch.cuda.is_available() is False)"
        return None

    @classmethod
    def from_bundle(cls, bundle, precision: Optional[str] = None, *, device: int = 0, max_batch: int = 64,
                    cuda_graphs: bool = True, **_ignored) -> "TorchCudaEngine":
        """An engine for the bundle's FP32 weights at ``precision`` (default FP16). Raises
        :class:`EngineError` when the bundle has no ``model.pt`` or the precision is INT8."""
        if bundle.weights_path is None:
            raise EngineError(f"bundle {bundle.name} has no PyTorch weights (model.pt), which the torch backend "
                              f"needs; re-export it with this lumbar-edge or use --backend onnxruntime")
        h, w = bundle.input_size
        layout = bundle.layout
        return cls(bundle.weights_path, bundle.manifest.get("model_config") or {}, (bundle.in_channels, h, w),
                   device=device, precision=precision or "fp16", max_batch=max_batch, cuda_graphs=cuda_graphs,
                   num_keypoints=layout.num_keypoints, num_conditions=layout.num_conditions, stride=bundle.stride)

    @classmethod
    def precisions_for(cls, bundle) -> List[str]:
        """FP16 and FP32 when the bundle has its FP32 weights (``model.pt``), else none."""
        return list(PRECISIONS) if bundle.weights_path is not None else []

    # -- lifecycle ------------------------------------------------------------------------------

    def _activate(self) -> None:
        import torch

        from ...decode_cuda import CudaDecoder
        from ...training.model import build_model
        from ..cuda_resources import PrimaryContext, Stream

        if not self.weights.is_file():
            raise InputError(f"no PyTorch weights at {self.weights}")
        try:
            torch.cuda.set_device(self.device)
            torch.cuda.init()  # PyTorch makes the primary context current; pycuda then retains the same one
            self._ctx = PrimaryContext(self.device)
            model = build_model(self.model_config)
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise EngineError(f"{self.weights.name} does not fit the bundle's model_config "
                                  f"({str(exc).splitlines()[0]})") from exc
            dtype = torch.float16 if self.precision == "fp16" else torch.float32
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            self._model = model.eval().to(device=f"cuda:{self.device}", dtype=dtype, memory_format=fmt)
            self._dtype, self._format = dtype, fmt
            with self._ctx.current():
                self._stream = Stream()
                self._decoder = CudaDecoder()
            self._torch_stream = torch.cuda.ExternalStream(self._stream.handle, device=f"cuda:{self.device}")
            self._pinned = torch.empty((self.max_batch, *self.input_shape[1:]), dtype=torch.float32, pin_memory=True)
        except BaseException:
            self._deactivate()
            raise

    def _deactivate(self) -> None:
        for captured in self._graphs.values():
            captured.free()
        try:
            if self._ctx is not None:
                with self._ctx.current():
                    if self._decoder is not None:
                        self._decoder.free()
                    if self._stream is not None:
                        self._stream.synchronize()
                        self._stream.free()
        finally:
            ctx = self._ctx
            self._clear()
            if ctx is not None:
                ctx.free()
            import torch

            torch.cuda.empty_cache()

    # -- inference ------------------------------------------------------------------------------

    def _forward(self, x):
        """The network on a float32 NCHW device batch: NCHW-contiguous outputs in the model dtype
        (FP32 in IEEE FP32, TF32 off: see :func:`fp32_math`)."""
        import torch

        with fp32_math(torch, self._dtype == torch.float32):
            heatmap, offset, severity = self._model(x.to(self._dtype).contiguous(memory_format=self._format))
        return {"heatmap": heatmap.contiguous(), "offset": offset.contiguous(), "severity": severity.contiguous()}

    def _capture(self, n: int) -> _Captured:
        import torch

        static_input = torch.zeros((n, *self.input_shape[1:]), dtype=torch.float32, device=f"cuda:{self.device}")
        side = torch.cuda.Stream(device=f"cuda:{self.device}")
        side.wait_stream(self._torch_stream)
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._forward(static_input)
        self._torch_stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self._forward(static_input)  # the capture records the IEEE kernels for FP32
        captured = _Captured(graph, static_input, outputs)
        self._graphs[n] = captured
        return captured

    def _sync_if_timed(self) -> None:
        """With a stage timer, wait for the stream so each stage's time is its own."""
        if self.timer is not None:
            self._torch_stream.synchronize()

    def _run(self, images: np.ndarray):
        """Enqueue the network on the engine's stream; returns the device output tensors.

        With a stage timer (benchmarks) the copy in (``h2d``) and the network (``engine``) are
        synchronised separately; without one nothing waits."""
        import torch

        n = images.shape[0]
        host = self._pinned[:n]
        with torch.inference_mode(), torch.cuda.stream(self._torch_stream):
            captured = None
            if self.cuda_graphs:
                captured = self._graphs.get(n)
                if captured is None:
                    captured = self._capture(n)
            with self.stage("h2d"):
                host.numpy()[...] = images
                if captured is not None:
                    captured.static_input.copy_(host, non_blocking=True)
                    device_input = captured.static_input
                else:
                    device_input = host.to(f"cuda:{self.device}", non_blocking=True)
                self._sync_if_timed()
            with self.stage("engine", n):
                if captured is not None:
                    captured.graph.replay()
                    outputs = captured.outputs
                else:
                    outputs = self._forward(device_input)
                self._sync_if_timed()
            return outputs

    def _infer(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        outputs = self._run(images)
        with self.stage("d2h"):
            self._torch_stream.synchronize()
            return {k: outputs[k].float().cpu().numpy() for k in OUTPUT_NAMES}

    def infer_decoded(self, images: np.ndarray, groups: "Sequence[int] | np.ndarray"):
        """Run a batch and decode it with the CUDA kernel on the output tensors in place; only the
        packed records cross to the host. Raises what :meth:`Engine.infer` and
        :meth:`lumbar_edge.decode_cuda.CudaDecoder.decode` raise."""
        images = self.check_input(images)
        outputs = self._run(images)
        heatmap = outputs["heatmap"]
        n, k, h, w = heatmap.shape
        with self._ctx.current():
            with self.stage("decode"):
                self._decoder.decode(heatmap.data_ptr(), outputs["offset"].data_ptr(), outputs["severity"].data_ptr(),
                                     n, k, h, w, groups, "float16" if self.precision == "fp16" else "float32",
                                     self._stream.stream, num_conditions=outputs["severity"].shape[1] // 3,
                                     stride=float(self.stride))
                if self.timer is not None:
                    self._stream.synchronize()
            with self.stage("d2h"):
                return self._decoder.download(n, k, w, self._stream.stream)

    def device_memory(self) -> Optional[Tuple[int, str]]:
        """Peak bytes PyTorch allocated on the device since :meth:`reset_device_memory`."""
        import torch

        return int(torch.cuda.max_memory_allocated(self.device)), "torch.cuda.max_memory_allocated"

    def reset_device_memory(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)

    def describe(self) -> Dict[str, object]:
        """Settings for logs and benchmark records."""
        return {"backend": self.name, "precision": self.precision, "weights": str(self.weights),
                "device": self.device, "cuda_graphs": self.cuda_graphs, "channels_last": self.channels_last,
                "max_batch": self.max_batch, "graphs": sorted(self._graphs),
                "fp32_math": "ieee (TF32 off)" if self.precision == "fp32" else "n/a (fp16)"}


__all__ = ["PRECISIONS", "TorchCudaEngine"]
