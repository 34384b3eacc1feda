"""Heatmap peak decoding: the numpy reference, and the packed record the CUDA kernel writes.

For each image ``n`` and keypoint type ``k`` of the model outputs (stride 4, NCHW)::

    heatmap  [N, K, h, w]   logits; the score is their sigmoid
    offset   [N, 2K, h, w]  channel 2k = dx, 2k+1 = dy of keypoint type k, in output cells
    severity [N, 3C, h, w]  3 logits per condition group g, channels [3g, 3g + 3)

the decoder finds the peak cell and reads everything else there:

- ``index``: argmax of the flattened ``h * w`` heatmap. Ties go to the LOWEST flat index (as
  ``np.argmax``). NaN policy: a NaN is smaller than every number, -inf included, so NaNs are
  ignored unless the whole map is NaN; an all-NaN map gives index 0 (and so score NaN).
  ``-0.0`` and ``+0.0`` compare equal (a tie). ``np.argmax`` alone would return the first NaN,
  so the rule is implemented explicitly.
- ``ix, iy = index % w, index // w``; ``x = (ix + dx) * stride``, ``y = (iy + dy) * stride``
  in model-input pixels (pixel centres at integers, as :mod:`lumbar_edge.training.targets`).
- ``logit``: the heatmap value at the peak; ``score = sigmoid(logit)``, computed stably
  (``exp(-|z|)`` never overflows): +inf -> 1, -inf -> 0, NaN -> NaN.
- ``probs``: softmax of the 3 severity logits of group ``groups[k]`` at the peak, computed
  stably: ``e_i = 1`` where ``l_i`` equals the maximum, else ``exp(l_i - max)``. That one rule
  also covers infinities: +inf logits share all the probability, three -inf logits give 1/3
  each. Any NaN logit makes all three probabilities NaN.

Inputs may be float16, float32 or float64; all arithmetic is float32 (float64 is rounded to
float32 first, float16 widens exactly). The CUDA kernel (``kernels/decode.cu``, per-peak logic
in ``kernels/decode_common.cuh``) implements the same rules, converting half to float before it
compares, and writes the packed record described by :data:`PACKED_FIELDS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import numpy as np

from .errors import InputError

#: The packed record, one per (image, keypoint type): float32 [N, K, RECORD_SIZE], 32 bytes.
#: Slot 6 holds the int32 flat peak index bit for bit (read it with ``.view(np.int32)``, never
#: by casting the float). Keep in step with ``LE_SLOT_*`` in ``kernels/decode_common.cuh``.
PACKED_FIELDS: Tuple[str, ...] = ("x", "y", "score", "p0", "p1", "p2", "index", "logit")
RECORD_SIZE = len(PACKED_FIELDS)
SLOT_X, SLOT_Y, SLOT_SCORE, SLOT_P0, SLOT_P1, SLOT_P2, SLOT_INDEX, SLOT_LOGIT = range(RECORD_SIZE)

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Decoded:
    """Decoded peaks of a batch, struct of arrays; every field is indexed ``[n, k]``.

    ``index`` int32 flat peak index (``iy * w + ix``); ``ix``, ``iy`` int32 peak cell;
    ``x``, ``y`` float32 keypoint in model-input pixels; ``logit`` float32 heatmap value at the
    peak; ``score`` float32 its sigmoid; ``probs`` float32 [N, K, 3] severity probabilities.
    """

    index: np.ndarray
    ix: np.ndarray
    iy: np.ndarray
    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    logit: np.ndarray
    probs: np.ndarray

    @property
    def shape(self) -> Tuple[int, int]:
        """``(N, K)``."""
        return tuple(self.index.shape)  # type: ignore[return-value]

    def to_packed(self) -> np.ndarray:
        """The packed float32 [N, K, 8] record array (layout :data:`PACKED_FIELDS`)."""
        n, k = self.index.shape
        packed = np.empty((n, k, RECORD_SIZE), dtype=np.float32)
        packed[..., SLOT_X] = self.x
        packed[..., SLOT_Y] = self.y
        packed[..., SLOT_SCORE] = self.score
        packed[..., SLOT_P0:SLOT_P2 + 1] = self.probs
        # Bitwise, through an int32 view: a float cast would round indices above 2**24 and the
        # bit patterns of small ints are subnormal floats that arithmetic could flush to zero.
        packed.view(np.int32)[..., SLOT_INDEX] = self.index
        packed[..., SLOT_LOGIT] = self.logit
        return packed

    @classmethod
    def from_packed(cls, packed: np.ndarray, width: int) -> "Decoded":
        """Read a packed float32 [N, K, 8] array; ``width`` is the heatmap width ``w``.

        Raises :class:`InputError` on a wrong dtype or shape or a non-positive width.
        """
        packed = np.asarray(packed)
        if packed.dtype != np.float32 or packed.ndim != 3 or packed.shape[2] != RECORD_SIZE:
            raise InputError(f"a packed decode record array is float32 [N, K, {RECORD_SIZE}], "
                             f"got {packed.dtype} {list(packed.shape)}")
        if int(width) < 1:
            raise InputError(f"the heatmap width must be positive, got {width}")
        packed = np.ascontiguousarray(packed)
        index = packed.view(np.int32)[..., SLOT_INDEX].copy()
        return cls(index=index, ix=(index % int(width)).astype(np.int32), iy=(index // int(width)).astype(np.int32),
                   x=packed[..., SLOT_X].copy(), y=packed[..., SLOT_Y].copy(), score=packed[..., SLOT_SCORE].copy(),
                   logit=packed[..., SLOT_LOGIT].copy(), probs=packed[..., SLOT_P0:SLOT_P2 + 1].copy())


def _as_float_array(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype not in _FLOAT_DTYPES:
        raise InputError(f"{name} must be float16, float32 or float64, got {arr.dtype}")
    if arr.ndim != 4:
        raise InputError(f"{name} must be 4-D NCHW, got shape {list(arr.shape)}")
    # float64 is rounded to float32 first so that ties are decided on the float32 values the
    # kernel would see; float16 widens exactly, so comparing in float16 gives the same order.
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


def check_shapes(heatmap_shape: Sequence[int], offset_shape: Sequence[int], severity_shape: Sequence[int],
                 groups: "Sequence[int] | np.ndarray") -> np.ndarray:
    """Check the three output shapes and ``groups`` against each other; return groups as int32.

    Shared by the numpy and CUDA decoders. Raises :class:`InputError` with a one-line message.
    """
    n, k, h, w = (int(v) for v in heatmap_shape)
    if h < 1 or w < 1:
        raise InputError(f"heatmap maps must be at least 1x1, got {h}x{w}")
    if tuple(offset_shape) != (n, 2 * k, h, w):
        raise InputError(f"offset must be [N, 2K, h, w] = {[n, 2 * k, h, w]} for heatmap {[n, k, h, w]}, "
                         f"got {list(offset_shape)}")
    sn, s3c, sh, sw = (int(v) for v in severity_shape)
    if (sn, sh, sw) != (n, h, w) or s3c % 3 or (k and s3c == 0):
        raise InputError(f"severity must be [N, 3C, h, w] with N, h, w = {n}, {h}, {w} and C >= 1, "
                         f"got {list(severity_shape)}")
    c = s3c // 3
    groups_arr = np.asarray(groups)
    if groups_arr.size == 0 and k == 0:
        return np.zeros(0, dtype=np.int32)
    if (groups_arr.ndim != 1 or groups_arr.shape[0] != k or not np.issubdtype(groups_arr.dtype, np.integer)
            or groups_arr.min() < 0 or groups_arr.max() >= c):
        raise InputError(f"groups must be {k} integers in 0..{c - 1} (the severity group of each keypoint "
                         f"type), got {groups_arr.tolist()}")
    return groups_arr.astype(np.int32)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Stable float32 sigmoid: ``exp(-|z|)`` never overflows; +-inf map to 1 and 0, NaN to NaN."""
    z = np.asarray(z, dtype=np.float32)
    e = np.exp(-np.abs(z))
    one = np.float32(1.0)
    return np.where(z >= 0, one / (one + e), e / (one + e)).astype(np.float32)


def softmax3(logits: np.ndarray) -> np.ndarray:
    """Stable float32 softmax over the last axis of length 3 (the rule in the module docstring)."""
    lg = np.asarray(logits, dtype=np.float32)
    with np.errstate(invalid="ignore"):  # inf - inf only arises where l == max, which is replaced by 1
        m = lg.max(axis=-1, keepdims=True)
        e = np.where(lg == m, np.float32(1.0), np.exp(lg - m)).astype(np.float32)
        # Summed left to right, as the kernel does, so both round identically.
        total = e[..., 0] + e[..., 1] + e[..., 2]
        p = (e / total[..., None]).astype(np.float32)
    return np.where(np.isnan(lg).any(axis=-1, keepdims=True), np.float32(np.nan), p)


def peak_index(heatmap: np.ndarray) -> np.ndarray:
    """Flat argmax over the last two axes of ``heatmap`` [..., h, w] with the module's tie and
    NaN rules (lowest index wins; NaN below everything; all-NaN -> 0). Returns int32."""
    flat = heatmap.reshape(heatmap.shape[:-2] + (heatmap.shape[-2] * heatmap.shape[-1],))
    nan = np.isnan(flat)
    row_max = np.where(nan, -np.inf, flat).max(axis=-1, keepdims=True)
    # First cell equal to the max: NaN never equals it, so [NaN, -inf] picks the -inf, and an
    # all-NaN row is all False, for which argmax gives 0.
    return np.argmax(flat == row_max, axis=-1).astype(np.int32)


def decode_numpy(heatmap: np.ndarray, offset: np.ndarray, severity: np.ndarray,
                 groups: "Sequence[int] | np.ndarray", stride: Union[int, float] = 4) -> Decoded:
    """Decode the peaks of a batch of model outputs (rules in the module docstring).

    ``groups[k]`` is the severity group keypoint type ``k`` reads (see
    :meth:`lumbar_edge.labels.View.severity_group`). Raises :class:`InputError` on non-float
    inputs, shapes that do not fit together, or groups out of range.
    """
    hm = _as_float_array("heatmap", heatmap)
    off = _as_float_array("offset", offset)
    sev = _as_float_array("severity", severity)
    groups_arr = check_shapes(hm.shape, off.shape, sev.shape, groups)
    n, k, h, w = hm.shape
    c = sev.shape[1] // 3
    stride32 = np.float32(stride)

    index = peak_index(hm)  # [N, K]
    n_idx = np.arange(n)[:, None]
    k_idx = np.arange(k)[None, :]
    iy, ix = np.divmod(index, np.int32(w))
    iy, ix = iy.astype(np.int32), ix.astype(np.int32)
    # Gather only the values at the peaks; widening happens after the gather.
    logit = hm[n_idx, k_idx, iy, ix].astype(np.float32)
    # Advanced indices around a slice put the (N, K) broadcast first: [N, K, 2] and [N, K, 3].
    dxy = off.reshape(n, k, 2, h * w)[n_idx, k_idx, :, index].astype(np.float32)
    sev_logits = sev.reshape(n, c, 3, h * w)[n_idx, groups_arr[None, :], :, index].astype(np.float32)

    x = ((ix.astype(np.float32) + dxy[..., 0]) * stride32).astype(np.float32)
    y = ((iy.astype(np.float32) + dxy[..., 1]) * stride32).astype(np.float32)
    return Decoded(index=index, ix=ix, iy=iy, x=x, y=y, score=sigmoid(logit), logit=logit,
                   probs=softmax3(sev_logits).reshape(n, k, 3))
