// The FFN with its up and down projections on disk (LLM in a flash): per token and layer,
// the resident gate says which neurons matter (|SiLU(gate . x)| above a per-layer threshold
// calibrated for a target sparsity, as in CATS / TEAL), only those neurons' bundles are
// used, and only the ones not already in DRAM are read. A per-layer cache keeps neurons
// used within the last `window` tokens in preallocated slots (a neuron leaves by swapping
// the last slot into its place: no reallocation), within a byte budget.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ffn_bundle.h"
#include "qkernels.h"
#include "spin_team.h"

namespace lm {

// Gaps between missing neurons up to this many bytes are read through (ffn_stream.cpp).
constexpr size_t kMergeGapBytes = 48 * 1024;

struct StreamOptions {
    std::vector<float> thresholds;  // per layer; <= 0: every neuron is active (no sparsity)
    size_t window = 0;              // tokens a used neuron stays cached (0: nothing cached)
    size_t cache_bytes = 0;         // DRAM for cached bundles, all layers together
};

struct StreamStats {
    uint64_t token_layers = 0;     // forward() calls
    uint64_t bytes_read = 0;       // from the bundle file
    uint64_t reads = 0;            // pread calls
    uint64_t neurons_active = 0;   // summed over calls
    uint64_t neurons_missing = 0;  // active and not cached
    uint64_t neurons_read = 0;     // read from the bundle: the missing and gaps read through
    std::vector<uint64_t> active_per_layer;
};

class FfnStream {
public:
    FfnStream(std::unique_ptr<FfnBundle> bundle, const QKernels& k, StreamOptions options);
    ~FfnStream();
    FfnStream(const FfnStream&) = delete;
    FfnStream& operator=(const FfnStream&) = delete;

    // y = down . (SiLU(g) * (up . x)) over the active neurons, for the token at position
    // `pos`; g: the gate's n_ff outputs, xq: x quantized (n_embd / 32 blocks).
    void forward(size_t layer, size_t pos, const float* g, const Q8Block* xq, const float* xf,
                 float* y, SpinTeam& team);
    // Forgets the cache (a new prompt from position 0 is not the continuation of the last).
    void clear();

    const StreamStats& stats() const { return stats_; }
    void reset_stats();
    const FfnBundle& bundle() const { return *bundle_; }
    size_t slots_per_layer() const { return capacity_; }

private:
    struct LayerCache {
        uint8_t* data = nullptr;         // capacity_ * bundle_bytes
        std::vector<int32_t> slot_of;    // neuron -> slot, -1 when not cached
        std::vector<int32_t> neuron_of;  // slot -> neuron
        std::vector<int64_t> last_used;  // neuron -> position of its last use
        size_t used = 0;
    };

    std::unique_ptr<FfnBundle> bundle_;
    const QKernels& k_;
    StreamOptions opt_;
    BundleLayout lay_;
    size_t capacity_ = 0;
    std::vector<LayerCache> caches_;
    uint8_t* staging_ = nullptr;  // one layer's worth of bundles, aligned for O_DIRECT
    std::vector<int32_t> active_;
    std::vector<int32_t> missing_;  // active and not cached, ascending
    std::vector<uint8_t> mark_;     // active for this token
    std::vector<float> silu_;       // silu(gate x) of every neuron, this token
    std::vector<const uint8_t*> where_;
    std::vector<std::vector<float>> partial_;  // one y per thread
    StreamStats stats_;
};

}  // namespace lm
