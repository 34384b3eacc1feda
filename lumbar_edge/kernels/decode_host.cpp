// Host test shim: runs the kernel's per-peak logic (decode_common.cuh) on the CPU so tests can
// check it against the numpy reference without a GPU. Built by the tests into a shared library
// (g++ -O2 -fPIC -shared, or nvcc -x cu -Xcompiler -fPIC -shared to exercise the __CUDACC__
// side of the header) and called through ctypes. Not used at runtime.
//
// Inputs are float32 only: for FP16 the tests pass values already rounded through float16 and
// widened to float32, which is what the kernel's __half2float does before any comparison.
#include "decode_common.cuh"

#include <vector>

namespace {

// The kernel's block reduction, simulated: `block` threads each scan with stride `block`, then
// the shuffle-down tree inside each warp (lane l takes lane l + offset while that is in the
// warp, reading the values of the previous round), then the same over the per-warp winners.
LePeak simulate_block(const float* map, int hw, int block) {
    std::vector<LePeak> lanes(block);
    for (int t = 0; t < block; ++t) lanes[t] = le_scan(map, hw, t, block);
    const int num_warps = block / LE_WARP_SIZE;
    auto warp_reduce = [](LePeak* warp) {
        for (int offset = LE_WARP_SIZE / 2; offset > 0; offset >>= 1) {
            // Ascending lanes read lane + offset before it is overwritten in this round.
            for (int lane = 0; lane + offset < LE_WARP_SIZE; ++lane) warp[lane] = le_pick(warp[lane], warp[lane + offset]);
        }
    };
    std::vector<LePeak> winners(LE_WARP_SIZE, le_peak_identity());
    for (int wi = 0; wi < num_warps; ++wi) {
        warp_reduce(&lanes[wi * LE_WARP_SIZE]);
        winners[wi] = lanes[wi * LE_WARP_SIZE];
    }
    warp_reduce(winners.data());
    return winners[0];
}

}  // namespace

extern "C" {

int le_host_record_size() { return LE_RECORD_SIZE; }

// Slot numbers in PACKED_FIELDS order: x y score p0 p1 p2 index logit.
void le_host_slots(int* slots) {
    const int s[LE_RECORD_SIZE] = {LE_SLOT_X, LE_SLOT_Y, LE_SLOT_SCORE, LE_SLOT_P0,
                                   LE_SLOT_P1, LE_SLOT_P2, LE_SLOT_INDEX, LE_SLOT_LOGIT};
    for (int i = 0; i < LE_RECORD_SIZE; ++i) slots[i] = s[i];
}

int le_host_max_threads() { return LE_DECODE_MAX_THREADS; }

int le_host_better(float va, int ia, float vb, int ib) { return le_better(va, ia, vb, ib) ? 1 : 0; }

float le_host_sigmoid(float z) { return le_sigmoid(z); }

void le_host_softmax3(float l0, float l1, float l2, float* p) { le_softmax3(l0, l1, l2, p); }

// Decode a whole batch into `out` float32 [n, num_k, LE_RECORD_SIZE]. block == 0: serial argmax;
// otherwise the kernel's reduction for that block size (a multiple of 32 up to
// LE_DECODE_MAX_THREADS). Returns 0, or -1 on arguments the kernel would not accept.
int le_host_decode(const float* heatmap, const float* offset, const float* severity, const int* groups, float* out,
                   int n, int num_k, int num_c, int h, int w, float stride, int block) {
    if (n < 0 || num_k < 0 || num_c < 0 || h < 1 || w < 1) return -1;
    if (block < 0 || block % LE_WARP_SIZE != 0 || block > LE_DECODE_MAX_THREADS) return -1;
    const int hw = h * w;
    for (int i = 0; i < n; ++i) {
        for (int k = 0; k < num_k; ++k) {
            const float* map = heatmap + le_heatmap_base(i, k, num_k, hw);
            const LePeak p = block == 0 ? le_scan(map, hw, 0, 1) : simulate_block(map, hw, block);
            le_readout(heatmap, offset, severity, groups, out, i, k, num_k, num_c, h, w, stride, p.index);
        }
    }
    return 0;
}

// FP16 inputs (raw IEEE half bits) through the header's __half path: only when this file is
// compiled by nvcc (-x cu), where __half and its host-side __half2float exist.
int le_host_has_f16() {
#ifdef __CUDACC__
    return 1;
#else
    return 0;
#endif
}

int le_host_decode_f16(const uint16_t* heatmap_bits, const uint16_t* offset_bits, const uint16_t* severity_bits,
                       const int* groups, float* out, int n, int num_k, int num_c, int h, int w, float stride) {
#ifdef __CUDACC__
    if (n < 0 || num_k < 0 || num_c < 0 || h < 1 || w < 1) return -1;
    // __half is a 2-byte standard-layout wrapper of the same bits.
    const __half* heatmap = reinterpret_cast<const __half*>(heatmap_bits);
    const __half* offset = reinterpret_cast<const __half*>(offset_bits);
    const __half* severity = reinterpret_cast<const __half*>(severity_bits);
    const int hw = h * w;
    for (int i = 0; i < n; ++i) {
        for (int k = 0; k < num_k; ++k) {
            const LePeak p = le_scan(heatmap + le_heatmap_base(i, k, num_k, hw), hw, 0, 1);
            le_readout(heatmap, offset, severity, groups, out, i, k, num_k, num_c, h, w, stride, p.index);
        }
    }
    return 0;
#else
    (void)heatmap_bits, (void)offset_bits, (void)severity_bits, (void)groups, (void)out;
    (void)n, (void)num_k, (void)num_c, (void)h, (void)w, (void)stride;
    return -2;
#endif
}

}  // extern "C"
