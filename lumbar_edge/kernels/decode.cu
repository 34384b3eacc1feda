// Heatmap peak decoding on the GPU, reading the engine's output buffers in place.
//
// Entry points (extern "C", so pycuda finds them by name both from
// SourceModule(src, no_extern_c=True, include_dirs=[this folder]) and from a cubin/fatbin):
//
//   decode_peaks_f32(const float*  heatmap, const float*  offset, const float*  severity,
//                    const int* groups, float* out, int n, int num_k, int num_c, int h, int w,
//                    float stride)
//   decode_peaks_f16(const __half* heatmap, ...same...)
//
// Buffers are NCHW contiguous device memory: heatmap [n, num_k, h, w], offset [n, 2*num_k, h, w],
// severity [n, 3*num_c, h, w], groups [num_k] int32, out float32 [n, num_k, LE_RECORD_SIZE] (the
// packed record documented in decode_common.cuh and lumbar_edge/decode.py).
//
// Launch: grid = (n * num_k, 1, 1), one block per (image, keypoint type); block = (B, 1, 1) with
// B a multiple of 32, at most LE_DECODE_MAX_THREADS (256). Each thread scans the map with stride
// B (coalesced), then a warp-shuffle reduction and a second one over the per-warp winners; the
// comparison is le_better(), a total order, so the result is the same as the serial scan's.
// Thread 0 then reads offsets and severity logits at the peak and writes the record.
#include "decode_common.cuh"

namespace {

__device__ __forceinline__ LePeak le_warp_reduce(LePeak p) {
    // Shuffle-down tree: lane l takes lane l + offset's pair; lane 0 ends with the warp's best.
#pragma unroll
    for (int offset = LE_WARP_SIZE / 2; offset > 0; offset >>= 1) {
        LePeak other;
        other.value = __shfl_down_sync(0xffffffffu, p.value, offset);
        other.index = __shfl_down_sync(0xffffffffu, p.index, offset);
        p = le_pick(p, other);
    }
    return p;
}

template <typename T>
__device__ __forceinline__ void le_decode_block(const T* __restrict__ heatmap, const T* __restrict__ offset,
                                                const T* __restrict__ severity, const int* __restrict__ groups,
                                                float* __restrict__ out, int n_images, int num_k, int num_c,
                                                int h, int w, float stride) {
    __shared__ float warp_value[LE_DECODE_MAX_THREADS / LE_WARP_SIZE];
    __shared__ int warp_index[LE_DECODE_MAX_THREADS / LE_WARP_SIZE];

    const int hw = h * w;
    const int pair = blockIdx.x;
    // Uniform per block, so returning here never strands a __syncthreads().
    if (num_k <= 0 || hw <= 0 || pair >= n_images * num_k) return;
    const int n = pair / num_k;
    const int k = pair % num_k;

    const T* map = heatmap + le_heatmap_base(n, k, num_k, hw);
    LePeak p = le_warp_reduce(le_scan(map, hw, (int)threadIdx.x, (int)blockDim.x));

    const int lane = threadIdx.x & (LE_WARP_SIZE - 1);
    const int warp = threadIdx.x / LE_WARP_SIZE;
    const int num_warps = blockDim.x / LE_WARP_SIZE;
    if (lane == 0) {
        warp_value[warp] = p.value;
        warp_index[warp] = p.index;
    }
    __syncthreads();
    if (warp == 0) {
        if (lane < num_warps) {
            p.value = warp_value[lane];
            p.index = warp_index[lane];
        } else {
            p = le_peak_identity();
        }
        p = le_warp_reduce(p);
        if (lane == 0) {
            le_readout(heatmap, offset, severity, groups, out, n, k, num_k, num_c, h, w, stride, p.index);
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(LE_DECODE_MAX_THREADS)
decode_peaks_f32(const float* __restrict__ heatmap, const float* __restrict__ offset,
                 const float* __restrict__ severity, const int* __restrict__ groups, float* __restrict__ out,
                 int n_images, int num_k, int num_c, int h, int w, float stride) {
    le_decode_block<float>(heatmap, offset, severity, groups, out, n_images, num_k, num_c, h, w, stride);
}

extern "C" __global__ void __launch_bounds__(LE_DECODE_MAX_THREADS)
decode_peaks_f16(const __half* __restrict__ heatmap, const __half* __restrict__ offset,
                 const __half* __restrict__ severity, const int* __restrict__ groups, float* __restrict__ out,
                 int n_images, int num_k, int num_c, int h, int w, float stride) {
    le_decode_block<__half>(heatmap, offset, severity, groups, out, n_images, num_k, num_c, h, w, stride);
}
