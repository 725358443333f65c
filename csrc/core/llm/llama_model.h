// A Llama-architecture decoder (SmolLM2, Llama, Mistral-style GQA) run from a GGUF file:
// RMSNorm, RoPE (llama.cpp's "normal" pair layout, which its converter bakes into the Q/K
// weights), grouped-query attention over an f16 KV cache, SwiGLU FFN. Weights are used in
// place in the file's mmap (dense mode), so nothing is copied at load, unless a memory plan
// (llama_plan.cpp) pins some in the process's own memory and streams the rest.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llm/ffn_stream.h"
#include "llm/gguf_file.h"
#include "llm/qkernels.h"
#include "llm/spin_team.h"
#include "llm/weight_stream.h"

namespace lm {

struct LlamaConfig {
    size_t n_vocab = 0, n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
    size_t n_ff = 0, n_ctx_train = 0, rope_dim = 0;
    float rope_base = 10000.0f, rms_eps = 1e-5f;
    size_t kv_dim() const { return n_head_kv * head_dim; }
};

// A 2-D weight: `rows` rows of `cols` elements, each row `row_bytes` long.
struct WeightMatrix {
    uint32_t type = 0;
    size_t rows = 0, cols = 0, row_bytes = 0;
    const uint8_t* data = nullptr;
    const uint8_t* row(size_t r) const { return data + r * row_bytes; }
    size_t bytes() const { return rows * row_bytes; }
};

struct LlamaLayer {
    const float* attn_norm = nullptr;
    const float* ffn_norm = nullptr;
    WeightMatrix wq, wk, wv, wo, gate, up, down;
};

// What a memory budget bought (LlamaModel::plan_memory): the bytes of weights copied into
// anonymous memory (pinned: the kernel cannot evict them, unlike file pages), and the FFN
// tensors read from disk on every pass, through `slots` buffers of `slot_bytes`.
struct WeightPlan {
    size_t budget = 0, pinned_bytes = 0, streamed_bytes = 0, slots = 0, slot_bytes = 0;
    size_t resident_min = 0;                  // what must stay: embeddings/head, norms, attention
    size_t ffn_pinned = 0, ffn_streamed = 0;  // FFN tensors of each kind
    bool direct_io = false;
    std::vector<std::string> streamed;  // names of the streamed tensors, in reading order
};

struct LlamaOptions {
    size_t n_ctx = 2048;
    size_t threads = 1;
};

class LlamaModel {
public:
    LlamaModel(std::shared_ptr<const GgufFile> file, const LlamaOptions& options);
    ~LlamaModel();
    LlamaModel(const LlamaModel&) = delete;
    LlamaModel& operator=(const LlamaModel&) = delete;

    const LlamaConfig& config() const { return cfg_; }
    const GgufFile& file() const { return *file_; }
    size_t n_ctx() const { return n_ctx_; }
    size_t threads() const { return team_.size(); }
    const QKernels& kernels() const { return *k_; }
    size_t weight_bytes() const;  // every tensor the forward pass reads

    // Tokens whose keys and values the cache holds (positions 0..n_past-1).
    size_t n_past() const { return n_past_; }
    // Forgets cached positions from n on (n <= n_past).
    void truncate(size_t n);
    // Cuts cached positions [begin, end) out: later keys and values move back, the keys
    // re-rotated to their new positions (RoPE is a rotation by position), as llama.cpp's
    // seq_rm + seq_add do.
    void remove(size_t begin, size_t end);

    // Neuron mode: from now on the FFN's down projection (and, with the gate rule, its up
    // projection) is read from the bundle, never from the GGUF's mmap, for the neurons
    // StreamOptions choose. Clears the KV cache.
    void enable_streaming(const std::string& bundle_path, bool direct_io, StreamOptions o);
    const FfnStream* stream() const { return stream_.get(); }
    FfnStream* stream() { return stream_.get(); }
    // Bytes of the weights that stay in DRAM in neuron mode (all but down; but up too with
    // the gate rule).
    size_t resident_weight_bytes() const;
    // Fits the weights into `budget` bytes: embeddings/head, norms and attention are copied
    // into anonymous memory (pinned), then whole FFN tensors, spread evenly over the layers,
    // while the budget lasts, less the streaming buffers (up to `max_slots` of them, at
    // least 2); the other FFN tensors are read from the file on every pass. Throws
    // InvalidArgument when the budget is below that minimum, saying what it is.
    const WeightPlan& plan_memory(size_t budget, bool direct_io, size_t max_slots = 8);
    const WeightPlan* plan() const { return plan_ ? &*plan_ : nullptr; }
    const WeightStream* weight_stream() const { return ws_.get(); }
    WeightStream* weight_stream() { return ws_.get(); }
    // The least budget plan_memory accepts (resident part and two streaming buffers).
    size_t min_budget() const;

    // Evaluates `tokens` at positions n_past.. and appends them to the cache. Writes the
    // logits of every token (all_logits) or of the last one to `logits` (n_vocab floats
    // per row).
    void eval(const int32_t* tokens, size_t n, bool all_logits, float* logits);

private:
    void forward_chunk(const int32_t* tokens, size_t n, bool all_logits, float* logits);
    // The FFN tensors' bytes, and the largest one's span once aligned for O_DIRECT (the size
    // of a streaming buffer).
    struct FfnExtent {
        size_t bytes = 0, slot = 0;
    };
    FfnExtent ffn_extent() const;
    // One product of a weight matrix with the chunk's activations: out[t * stride + r] =
    // W.row(r) . x[t], x from xq_ (block types) or xf_ (F16/F32).
    struct MatJob {
        const WeightMatrix* w;
        float* out;
        size_t stride;
    };
    // Runs several products over the same activations as one parallel step.
    void matmul(std::initializer_list<MatJob> jobs, size_t n);
    void matrows(const MatJob& job, size_t r0, size_t r1, size_t n) const;
    size_t task_rows(size_t rows) const;
    // The dense SwiGLU FFN of one layer on the normed chunk: ffn_ = silu(gate x) * (up x).
    void ffn_in(const LlamaLayer& L, size_t n);
    // The same FFN with some of its tensors read from the weight stream (llama_plan.cpp).
    void ffn_planned(size_t layer, size_t n);
    void attention(size_t layer, size_t n, size_t pos0);
    // x (n rows of cols) as the next products' input: quantized to Q8 blocks (xq_) and as
    // floats (xf_, for F16/F32 weights).
    void prepare_activations(const float* x, size_t n, size_t cols);

    std::shared_ptr<const GgufFile> file_;
    LlamaConfig cfg_;
    std::vector<LlamaLayer> layers_;
    WeightMatrix tok_embd_, output_;
    const float* output_norm_ = nullptr;
    const QKernels* k_;
    SpinTeam team_;
    size_t n_ctx_;
    size_t n_past_ = 0;
    std::mutex mu_;  // one eval or truncate at a time
    std::unique_ptr<FfnStream> stream_;
    std::unique_ptr<WeightPlan> plan_;
    std::unique_ptr<WeightStream> ws_;
    std::vector<std::array<bool, 3>> streamed_;  // per layer: gate, up, down streamed
    uint8_t* pinned_ = nullptr;                  // the pinned copies, one allocation
    float theta_scale_ = 1.0f;

    // KV cache: [layer][position][kv_dim] halves (llama.cpp's default type, and its
    // rounding), in anonymous memory touched as it fills.
    uint16_t* kv_ = nullptr;
    size_t kv_bytes_ = 0;
    uint16_t* k_at(size_t layer, size_t pos) const;
    uint16_t* v_at(size_t layer, size_t pos) const;
    // Rotates pairs of v by position pos (or by -pos when back) as ggml's rope does.
    void rope(float* v, float pos) const;

    // Scratch for one chunk of tokens.
    size_t chunk_cap_ = 0;
    std::vector<float> x_, h_, q_, kv_new_, att_, ffn_, gate_up_, tmp_;
    std::vector<Q8Block> xq_;
    std::vector<float> xf_;                   // float activations, for F16/F32 weights
    std::vector<std::vector<float>> scores_;  // one per thread
    std::vector<std::vector<float>> lanes_;   // attention's 16 lanes of values, per thread
};

}  // namespace lm
