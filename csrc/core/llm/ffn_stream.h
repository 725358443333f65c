// Neuron mode (LLM in a flash, at the level of single neurons): per token and layer only the
// neurons that matter most are used, and their down-projection columns are read from the
// bundled file (ffn_bundle.h) unless a per-layer LRU cache holds them. Which neurons: the
// top `keep` share by |SiLU(gate . x) * (up . x)|, the down projection's real input (TEAL's
// rule; gate and up stay resident), or by |SiLU(gate . x)| alone (the gate predicts, up rows
// come from the bundle too). A cached neuron's score counts (1 + cache_bias) times, so that
// near ties go to what is already in memory (cache-aware masking, as in DIP).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "llm/ffn_bundle.h"
#include "llm/qkernels.h"
#include "llm/spin_team.h"

namespace lm {

// Gaps between missing neurons up to this many bytes are read through (ffn_stream.cpp).
constexpr size_t kMergeGapBytes = 48 * 1024;

enum class NeuronRule : int { Activation = 0, Gate = 1 };

struct StreamOptions {
    float keep = 0.5f;  // share of the neurons used per token and layer, in (0, 1]
    NeuronRule rule = NeuronRule::Activation;
    size_t cache_neurons = 0;  // per layer: bundles kept in DRAM (least recently used leave)
    float cache_bias = 0.0f;   // >= 0
    bool trace = false;        // record every call's active and missing neurons (analysis)
};

// One forward() call, recorded when StreamOptions::trace is set.
struct StreamTraceEntry {
    uint32_t layer = 0, pos = 0;
    std::vector<uint16_t> active, missing;  // ascending neuron ids
};

struct StreamStats {
    uint64_t token_layers = 0;     // forward() calls
    uint64_t bytes_read = 0;       // from the bundle file
    uint64_t reads = 0;            // pread calls
    uint64_t neurons_active = 0;   // summed over calls
    uint64_t neurons_missing = 0;  // active and not cached: their down columns are read
    uint64_t neurons_read = 0;     // read from the bundle: the missing and gaps read through
};

class FfnStream {
public:
    FfnStream(std::unique_ptr<FfnBundle> bundle, const QKernels& k, StreamOptions options);
    ~FfnStream();
    FfnStream(const FfnStream&) = delete;
    FfnStream& operator=(const FfnStream&) = delete;

    // y = down . a over the active neurons, for the token at position `pos`. Activation
    // rule: `in` holds a = SiLU(gate . x) * (up . x), every neuron's; Gate rule: `in` holds
    // gate . x, and up . x is computed here from the bundle's up rows and xq (x quantized,
    // n_embd / 32 blocks) or xf (x as floats).
    void forward(size_t layer, size_t pos, const float* in, const Q8Block* xq, const float* xf,
                 float* y, SpinTeam& team);
    // Forgets the cache (a new prompt from position 0 is not the continuation of the last).
    void clear();

    const StreamStats& stats() const { return stats_; }
    const std::vector<StreamTraceEntry>& trace() const { return trace_; }
    void reset_stats();
    const FfnBundle& bundle() const { return *bundle_; }
    size_t slots_per_layer() const { return capacity_; }
    const StreamOptions& options() const { return opt_; }

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
    std::vector<float> act_;        // the rule's activation of every neuron, this token
    std::vector<float> score_;      // |act|, cached neurons favoured
    std::vector<int32_t> order_;    // neurons, for choosing the top ones
    std::vector<int32_t> victims_;  // cached slots this token does not need
    std::vector<const uint8_t*> where_;
    std::vector<std::vector<float>> partial_;  // one y per thread
    StreamStats stats_;
    std::vector<StreamTraceEntry> trace_;
};

}  // namespace lm
