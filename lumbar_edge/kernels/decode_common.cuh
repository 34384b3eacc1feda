// Per-peak decoding logic shared by the CUDA kernel (decode.cu) and the host test shim
// (decode_host.cpp). Everything here is __host__ __device__ so that the CPU tests exercise
// exactly the code the GPU runs; the header compiles with nvcc and with a plain C++ compiler.
//
// Contract (mirrors lumbar_edge/decode.py, which is the reference):
//   heatmap  [N, K, h, w]  logits, NCHW contiguous
//   offset   [N, 2K, h, w] channel 2k = dx, 2k+1 = dy of keypoint type k (output cells)
//   severity [N, 3C, h, w] 3 logits per condition group g, channels [3g, 3g+3)
//   groups   [K] int32     severity group read by keypoint type k
// Per (n, k): index = argmax of the flat h*w map, lowest index on ties, NaN below every number
// (-inf included), all-NaN map -> index 0. Values are compared as float (half is converted to
// float first, exactly). x = (ix + dx) * stride, y = (iy + dy) * stride; score = sigmoid(peak);
// probs = softmax of the group's 3 logits at the peak.
//
// Packed output record, float32 [N, K, LE_RECORD_SIZE] (32 bytes per record):
//   0 x  1 y  2 score  3 p0  4 p1  5 p2  6 index (int32 bits, not a float value)  7 logit
// Keep in step with PACKED_FIELDS in lumbar_edge/decode.py (a test compares them).
//
// Do not build with fast-math (--use_fast_math, -ffast-math): the NaN test below is bitwise and
// survives it, but expf/division approximations would break the 1e-5 agreement with numpy.
#ifndef LUMBAR_EDGE_DECODE_COMMON_CUH
#define LUMBAR_EDGE_DECODE_COMMON_CUH

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define LE_HD __host__ __device__ __forceinline__
#else
#define LE_HD inline
#endif

#include <math.h>
#include <stdint.h>
#ifndef __CUDA_ARCH__
#include <string.h>
#endif

enum LeRecordSlot {
    LE_SLOT_X = 0,
    LE_SLOT_Y = 1,
    LE_SLOT_SCORE = 2,
    LE_SLOT_P0 = 3,
    LE_SLOT_P1 = 4,
    LE_SLOT_P2 = 5,
    LE_SLOT_INDEX = 6,
    LE_SLOT_LOGIT = 7,
    LE_RECORD_SIZE = 8
};

// The kernel's largest block (also its __launch_bounds__); blocks are whole warps.
#define LE_DECODE_MAX_THREADS 256
#define LE_WARP_SIZE 32

// ---- bit casts (device intrinsics; memcpy on the host, which is the defined way in C++) ----

LE_HD uint32_t le_float_bits(float v) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(v);
#else
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
#endif
}

LE_HD float le_bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
#endif
}

// Bitwise, so it holds under fast-math too, where v != v may be optimised away.
LE_HD bool le_isnan(float v) { return (le_float_bits(v) & 0x7fffffffu) > 0x7f800000u; }

LE_HD float le_nan() { return le_bits_float(0x7fc00000u); }

// ---- element loads: everything is compared and computed in float ----

LE_HD float le_to_float(float v) { return v; }
#ifdef __CUDACC__
LE_HD float le_to_float(__half v) { return __half2float(v); }
#endif

// ---- the argmax rule ----

struct LePeak {
    float value;
    int index;
};

// Is candidate a = (va, ia) preferred over b = (vb, ib)? A strict total order on (value, index)
// pairs with distinct indices: larger value wins, equal values go to the lower index, NaN is
// below every number, and two NaNs go to the lower index. Because it is a total order, any
// reduction tree (serial scan, strided threads, warp shuffles) ends at the same pair.
LE_HD bool le_better(float va, int ia, float vb, int ib) {
    const bool a_nan = le_isnan(va);
    const bool b_nan = le_isnan(vb);
    if (a_nan || b_nan) {
        if (a_nan && b_nan) return ia < ib;
        return b_nan;  // exactly one is NaN: a wins iff it is the number
    }
    return va > vb || (va == vb && ia < ib);
}

LE_HD LePeak le_pick(LePeak a, LePeak b) { return le_better(a.value, a.index, b.value, b.index) ? a : b; }

// Loses to every real pair: a NaN with an index no map reaches. Pads reductions over threads
// that saw no element.
LE_HD LePeak le_peak_identity() {
    LePeak p;
    p.value = le_nan();
    p.index = 0x7fffffff;
    return p;
}

// One thread's share of the scan: elements start, start + step, ... of a map of hw elements.
template <typename T>
LE_HD LePeak le_scan(const T* map, int hw, int start, int step) {
    LePeak best = le_peak_identity();
    for (int i = start; i < hw; i += step) {
        LePeak cand;
        cand.value = le_to_float(map[i]);
        cand.index = i;
        best = le_pick(cand, best);
    }
    return best;
}

// ---- NCHW index math (64-bit: N * 3C * h * w can pass 2**31 for big batches) ----

LE_HD int64_t le_plane(int64_t n, int64_t channel, int64_t channels, int64_t hw) {
    return (n * channels + channel) * hw;
}
LE_HD int64_t le_heatmap_base(int n, int k, int num_k, int hw) { return le_plane(n, k, num_k, hw); }
LE_HD int64_t le_offset_base(int n, int k, int axis, int num_k, int hw) {
    return le_plane(n, 2 * (int64_t)k + axis, 2 * (int64_t)num_k, hw);  // axis 0 = dx, 1 = dy
}
LE_HD int64_t le_severity_base(int n, int group, int j, int num_c, int hw) {
    return le_plane(n, 3 * (int64_t)group + j, 3 * (int64_t)num_c, hw);
}
LE_HD int le_cell_x(int index, int w) { return index % w; }
LE_HD int le_cell_y(int index, int w) { return index / w; }

// Offset read-out to input pixels; add then multiply, which no compiler contracts into an FMA,
// so host and device round identically.
LE_HD float le_pixel(int cell, float delta, float stride) { return ((float)cell + delta) * stride; }

// ---- stable activations ----

LE_HD float le_sigmoid(float z) {
    const float e = expf(-fabsf(z));  // in [0, 1]: never overflows
    return z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

// p_i = e_i / (e_0 + e_1 + e_2) with e_i = 1 where l_i is the maximum, else exp(l_i - max):
// no overflow, and infinities need no special case (+inf logits share the mass, all -inf is
// uniform). Any NaN logit gives three NaNs.
LE_HD void le_softmax3(float l0, float l1, float l2, float* p) {
    if (le_isnan(l0) || le_isnan(l1) || le_isnan(l2)) {
        p[0] = p[1] = p[2] = le_nan();
        return;
    }
    float m = l0;
    m = l1 > m ? l1 : m;
    m = l2 > m ? l2 : m;
    const float e0 = l0 == m ? 1.0f : expf(l0 - m);
    const float e1 = l1 == m ? 1.0f : expf(l1 - m);
    const float e2 = l2 == m ? 1.0f : expf(l2 - m);
    const float total = e0 + e1 + e2;  // left to right, as decode.py
    p[0] = e0 / total;
    p[1] = e1 / total;
    p[2] = e2 / total;
}

// ---- read-out at the peak and packing ----

LE_HD void le_pack(float* rec, float x, float y, float score, const float* probs, int index, float logit) {
    rec[LE_SLOT_X] = x;
    rec[LE_SLOT_Y] = y;
    rec[LE_SLOT_SCORE] = score;
    rec[LE_SLOT_P0] = probs[0];
    rec[LE_SLOT_P1] = probs[1];
    rec[LE_SLOT_P2] = probs[2];
    rec[LE_SLOT_INDEX] = le_bits_float((uint32_t)index);  // the int's bits; only ever copied
    rec[LE_SLOT_LOGIT] = logit;
}

// Everything after the argmax for one (n, k): reads offsets and severity logits at `index`
// (0 <= index < h*w) and writes record (n, k) of `out`. A group outside [0, num_c) (the host
// validates, this is the last guard against reading out of bounds) gives NaN probabilities.
template <typename T>
LE_HD void le_readout(const T* heatmap, const T* offset, const T* severity, const int* groups, float* out,
                      int n, int k, int num_k, int num_c, int h, int w, float stride, int index) {
    const int hw = h * w;
    const float logit = le_to_float(heatmap[le_heatmap_base(n, k, num_k, hw) + index]);
    const float dx = le_to_float(offset[le_offset_base(n, k, 0, num_k, hw) + index]);
    const float dy = le_to_float(offset[le_offset_base(n, k, 1, num_k, hw) + index]);
    float probs[3];
    const int g = groups[k];
    if (g >= 0 && g < num_c) {
        le_softmax3(le_to_float(severity[le_severity_base(n, g, 0, num_c, hw) + index]),
                    le_to_float(severity[le_severity_base(n, g, 1, num_c, hw) + index]),
                    le_to_float(severity[le_severity_base(n, g, 2, num_c, hw) + index]), probs);
    } else {
        probs[0] = probs[1] = probs[2] = le_nan();
    }
    float* rec = out + ((int64_t)n * num_k + k) * LE_RECORD_SIZE;
    le_pack(rec, le_pixel(le_cell_x(index, w), dx, stride), le_pixel(le_cell_y(index, w), dy, stride),
            le_sigmoid(logit), probs, index, logit);
}

#endif  // LUMBAR_EDGE_DECODE_COMMON_CUH
