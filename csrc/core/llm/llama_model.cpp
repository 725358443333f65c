#include "llm/llama_model.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/errors.h"

namespace lm {

namespace {

constexpr size_t kChunk = 64;     // tokens evaluated together (scratch is sized for this)
constexpr size_t kTaskRows = 16;  // weight rows per task

[[noreturn]] void bad_model(const GgufFile& f, const std::string& what) {
    throw CorruptFile(f.path() + ": " + what +
                      "; this engine runs llama-architecture GGUF models (use llama.cpp for "
                      "others), or the file is damaged: download or reinstall it");
}

WeightMatrix matrix(const GgufFile& f, const std::string& name, size_t cols, size_t rows) {
    const GgufTensor& t = f.require(name);
    if (t.ne.size() != 2 || t.ne[0] != cols || t.ne[1] != rows)
        bad_model(f, "tensor " + name + " has shape [" + std::to_string(t.ne[0]) + ", " +
                         std::to_string(t.ne.size() > 1 ? t.ne[1] : 1) + "], expected [" +
                         std::to_string(cols) + ", " + std::to_string(rows) + "]");
    WeightMatrix w;
    w.type = t.type;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = t.bytes / rows;
    w.data = t.data;
    return w;
}

const float* norm(const GgufFile& f, const std::string& name, size_t n) {
    const GgufTensor& t = f.require(name);
    if (t.type != uint32_t(GgmlType::F32) || t.ne.size() != 1 || t.ne[0] != n)
        bad_model(f, "norm " + name + " is not " + std::to_string(n) + " F32 values");
    return reinterpret_cast<const float*>(t.data);
}

bool quantized(uint32_t type) {
    return type == uint32_t(GgmlType::Q4_0) || type == uint32_t(GgmlType::Q4_1) ||
           type == uint32_t(GgmlType::Q8_0);
}

void rms_norm(const float* x, const float* w, float eps, size_t n, float* out) {
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += double(x[i] * x[i]);  // as ggml: float squares
    const float scale = 1.0f / std::sqrt(float(ss / double(n)) + eps);
    for (size_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

}  // namespace

LlamaModel::LlamaModel(std::shared_ptr<const GgufFile> file, const LlamaOptions& options)
    : file_(std::move(file)),
      k_(&qkernels_active()),
      team_(std::max<size_t>(1, options.threads)),
      n_ctx_(options.n_ctx) {
    const GgufFile& f = *file_;
    const std::string arch = f.get_string("general.architecture");
    if (arch != "llama") bad_model(f, "architecture '" + arch + "' is not llama");
    auto key = [&](const char* k) { return arch + "." + k; };
    cfg_.n_embd = size_t(f.get_int(key("embedding_length")));
    cfg_.n_layer = size_t(f.get_int(key("block_count")));
    cfg_.n_head = size_t(f.get_int(key("attention.head_count")));
    cfg_.n_head_kv = size_t(f.get_int(key("attention.head_count_kv"), int64_t(cfg_.n_head)));
    cfg_.n_ff = size_t(f.get_int(key("feed_forward_length")));
    cfg_.n_ctx_train = size_t(f.get_int(key("context_length"), 2048));
    cfg_.rope_base = float(f.get_float(key("rope.freq_base"), 10000.0));
    cfg_.rms_eps = float(f.get_float(key("attention.layer_norm_rms_epsilon"), 1e-5));
    if (cfg_.n_embd == 0 || cfg_.n_head == 0 || cfg_.n_head_kv == 0 || cfg_.n_layer == 0 ||
        cfg_.n_layer > 1024 || cfg_.n_embd % cfg_.n_head != 0 ||
        cfg_.n_head % cfg_.n_head_kv != 0 || cfg_.n_embd % kQBlock != 0 ||
        cfg_.n_ff % kQBlock != 0 || cfg_.n_ff == 0)
        bad_model(f, "its hyperparameters are inconsistent");
    cfg_.head_dim = cfg_.n_embd / cfg_.n_head;
    cfg_.rope_dim = size_t(f.get_int(key("rope.dimension_count"), int64_t(cfg_.head_dim)));
    if (cfg_.rope_dim > cfg_.head_dim || cfg_.rope_dim % 2 != 0)
        bad_model(f, "rope.dimension_count is not an even number up to the head size");

    const GgufTensor& emb = f.require("token_embd.weight");
    if (emb.ne.size() != 2 || emb.ne[0] != cfg_.n_embd) bad_model(f, "token_embd has a bad shape");
    cfg_.n_vocab = size_t(emb.ne[1]);
    tok_embd_ = matrix(f, "token_embd.weight", cfg_.n_embd, cfg_.n_vocab);
    output_ = f.tensor("output.weight") ? matrix(f, "output.weight", cfg_.n_embd, cfg_.n_vocab)
                                        : tok_embd_;  // tied embeddings
    output_norm_ = norm(f, "output_norm.weight", cfg_.n_embd);
    const size_t kvd = cfg_.kv_dim();
    for (size_t l = 0; l < cfg_.n_layer; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        LlamaLayer L;
        L.attn_norm = norm(f, p + "attn_norm.weight", cfg_.n_embd);
        L.ffn_norm = norm(f, p + "ffn_norm.weight", cfg_.n_embd);
        L.wq = matrix(f, p + "attn_q.weight", cfg_.n_embd, cfg_.n_embd);
        L.wk = matrix(f, p + "attn_k.weight", cfg_.n_embd, kvd);
        L.wv = matrix(f, p + "attn_v.weight", cfg_.n_embd, kvd);
        L.wo = matrix(f, p + "attn_output.weight", cfg_.n_embd, cfg_.n_embd);
        L.gate = matrix(f, p + "ffn_gate.weight", cfg_.n_embd, cfg_.n_ff);
        L.up = matrix(f, p + "ffn_up.weight", cfg_.n_embd, cfg_.n_ff);
        L.down = matrix(f, p + "ffn_down.weight", cfg_.n_ff, cfg_.n_embd);
        layers_.push_back(L);
    }

    if (n_ctx_ < 16 || n_ctx_ > (size_t{1} << 20))
        throw InvalidArgument("n_ctx must be in [16, 1048576], got " + std::to_string(n_ctx_));
    kv_bytes_ = 2 * cfg_.n_layer * n_ctx_ * kvd * sizeof(uint16_t);
    void* p =
        ::mmap(nullptr, kv_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        throw IoError("cannot reserve " + std::to_string(kv_bytes_ >> 20) +
                      " MiB for the KV cache: open the engine with a smaller n_ctx");
    kv_ = static_cast<uint16_t*>(p);
    theta_scale_ = std::pow(cfg_.rope_base, -2.0f / float(cfg_.rope_dim));

    const size_t E = cfg_.n_embd, F = cfg_.n_ff;
    x_.resize(kChunk * E);
    h_.resize(kChunk * E);
    q_.resize(kChunk * E);
    kv_new_.resize(kChunk * 2 * kvd);
    att_.resize(kChunk * E);
    tmp_.resize(kChunk * E);
    gate_up_.resize(kChunk * 2 * F);
    ffn_.resize(kChunk * F);
    xq_.resize(kChunk * std::max(E, F) / kQBlock);
    scores_.assign(team_.size(), std::vector<float>(n_ctx_ + 16));
    lanes_.assign(team_.size(), std::vector<float>(16 * cfg_.head_dim));
}

LlamaModel::~LlamaModel() {
    ws_.reset();  // its I/O thread stops before anything it reads into goes
    std::free(pinned_);
    if (kv_ != nullptr) ::munmap(kv_, kv_bytes_);
}

size_t LlamaModel::weight_bytes() const {
    size_t b = tok_embd_.bytes() + (output_.data != tok_embd_.data ? output_.bytes() : 0);
    b += cfg_.n_embd * 4 * (1 + 2 * cfg_.n_layer);
    for (const auto& L : layers_)
        b += L.wq.bytes() + L.wk.bytes() + L.wv.bytes() + L.wo.bytes() + L.gate.bytes() +
             L.up.bytes() + L.down.bytes();
    return b;
}

uint16_t* LlamaModel::k_at(size_t layer, size_t pos) const {
    return kv_ + (layer * n_ctx_ + pos) * cfg_.kv_dim();
}

uint16_t* LlamaModel::v_at(size_t layer, size_t pos) const {
    return kv_ + ((cfg_.n_layer + layer) * n_ctx_ + pos) * cfg_.kv_dim();
}

void LlamaModel::rope(float* v, float pos) const {
    // theta_i = pos * theta_scale^i, by repeated multiplication in float as in ggml.
    float theta = pos;
    for (size_t i = 0; i < cfg_.rope_dim / 2; ++i, theta *= theta_scale_) {
        const float c = std::cos(theta), s = std::sin(theta);
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = std::fma(a, c, -(b * s));
        v[2 * i + 1] = std::fma(a, s, b * c);
    }
}

size_t LlamaModel::resident_weight_bytes() const {
    size_t b = weight_bytes();
    for (const auto& L : layers_)
        b -= (stream_ && stream_->options().rule == NeuronRule::Gate ? L.up.bytes() : 0) +
             L.down.bytes();
    return b;
}

void LlamaModel::enable_streaming(const std::string& bundle_path, bool direct_io, StreamOptions o) {
    std::lock_guard<std::mutex> lk(mu_);
    if (plan_ || stream_)
        throw InvalidArgument("this model already has a memory plan or a streaming mode");
    auto bundle = std::make_unique<FfnBundle>(bundle_path, *file_, direct_io);
    stream_ = std::make_unique<FfnStream>(std::move(bundle), *k_, std::move(o));
    n_past_ = 0;
}

void LlamaModel::truncate(size_t n) {
    std::lock_guard<std::mutex> lk(mu_);
    if (n > n_past_)
        throw InvalidArgument("truncate(" + std::to_string(n) + ") beyond the " +
                              std::to_string(n_past_) + " cached tokens");
    n_past_ = n;
    if (stream_ && n == 0) stream_->clear();
}

void LlamaModel::remove(size_t begin, size_t end) {
    std::lock_guard<std::mutex> lk(mu_);
    if (begin > end || end > n_past_)
        throw InvalidArgument("remove(" + std::to_string(begin) + ", " + std::to_string(end) +
                              ") is not a span of the " + std::to_string(n_past_) +
                              " cached tokens");
    const size_t cut = end - begin, kvd = cfg_.kv_dim(), hd = cfg_.head_dim;
    if (cut == 0) return;
    std::vector<float> k(kvd);
    for (size_t l = 0; l < cfg_.n_layer; ++l) {
        for (size_t p = end; p < n_past_; ++p) {
            // Keys: back to f32, rotated by -cut positions, stored again (as llama.cpp's
            // K-shift does); values only move.
            const uint16_t* ks = k_at(l, p);
            for (size_t i = 0; i < kvd; ++i) k[i] = f16_to_f32(ks[i]);
            for (size_t g = 0; g < cfg_.n_head_kv; ++g) rope(k.data() + g * hd, -float(cut));
            k_->to_f16(k.data(), k_at(l, p - cut), kvd);
            std::memcpy(v_at(l, p - cut), v_at(l, p), kvd * sizeof(uint16_t));
        }
    }
    n_past_ -= cut;
}

void LlamaModel::eval(const int32_t* tokens, size_t n, bool all_logits, float* logits) {
    std::lock_guard<std::mutex> lk(mu_);
    if (n == 0) throw InvalidArgument("eval needs at least one token");
    if (n_past_ + n > n_ctx_)
        throw InvalidArgument(std::to_string(n_past_) + " cached + " + std::to_string(n) +
                              " new tokens exceed the context of " + std::to_string(n_ctx_) +
                              ": truncate the cache or open the engine with a larger n_ctx");
    for (size_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || size_t(tokens[i]) >= cfg_.n_vocab)
            throw InvalidArgument("token " + std::to_string(tokens[i]) + " at " +
                                  std::to_string(i) + " is not in the vocabulary [0, " +
                                  std::to_string(cfg_.n_vocab) + ")");
    for (size_t done = 0; done < n; done += kChunk) {
        const size_t m = std::min(kChunk, n - done);
        const bool last = done + m == n;
        float* out = all_logits ? logits + done * cfg_.n_vocab : logits;
        try {
            forward_chunk(tokens + done, m, all_logits, last || all_logits ? out : nullptr);
        } catch (...) {
            if (ws_) ws_->rewind();  // stopped half way through the weights: start over
            throw;
        }
    }
}

void LlamaModel::prepare_activations(const float* x, size_t n, size_t cols) {
    const size_t nb = cols / kQBlock;
    for (size_t t = 0; t < n; ++t) quantize_q8(x + t * cols, cols, xq_.data() + t * nb);
    xf_.assign(x, x + n * cols);
}

size_t LlamaModel::task_rows(size_t rows) const {
    // A few tasks per thread evens out the load without a claim per handful of rows.
    const size_t want = team_.size() * 4;
    return std::max(kTaskRows, (rows + want - 1) / want);
}

void LlamaModel::matrows(const MatJob& job, size_t r0, size_t r1, size_t n) const {
    const WeightMatrix& w = *job.w;
    const size_t nb = w.cols / kQBlock;
    const QKernels& k = *k_;
    const Q8Block* xq = xq_.data();
    const float* xf = xf_.data();
    for (size_t r = r0; r < r1; ++r) {
        const uint8_t* row = w.row(r);
        float* o = job.out + r;
        for (size_t t = 0; t < n; ++t)
            o[t * job.stride] = dot_row(k, w.type, row, xq + t * nb, xf + t * w.cols, w.cols);
    }
}

void LlamaModel::matmul(std::initializer_list<MatJob> jobs, size_t n) {
    size_t step[4], first[5] = {0};
    size_t j = 0;
    for (const MatJob& job : jobs) {
        step[j] = task_rows(job.w->rows);
        first[j + 1] = first[j] + (job.w->rows + step[j] - 1) / step[j];
        ++j;
    }
    const MatJob* js = jobs.begin();
    team_.run(first[j], [&](size_t task, size_t) {
        size_t i = 0;
        while (task >= first[i + 1]) ++i;
        const size_t r0 = (task - first[i]) * step[i];
        matrows(js[i], r0, std::min(js[i].w->rows, r0 + step[i]), n);
    });
}

void LlamaModel::ffn_in(const LlamaLayer& L, size_t n) {
    // Gate and up rows of one range in the same task, so the task can apply the gate too.
    const size_t F = cfg_.n_ff, step = task_rows(F);
    team_.run((F + step - 1) / step, [&](size_t task, size_t) {
        const size_t r0 = task * step, r1 = std::min(F, r0 + step);
        matrows({&L.gate, gate_up_.data(), 2 * F}, r0, r1, n);
        matrows({&L.up, gate_up_.data() + F, 2 * F}, r0, r1, n);
        for (size_t t = 0; t < n; ++t) {
            const float* g = gate_up_.data() + t * 2 * F;
            float* a = ffn_.data() + t * F;
            k_->silu(g + r0, a + r0, r1 - r0);
            for (size_t i = r0; i < r1; ++i) a[i] *= g[F + i];
        }
    });
}

void LlamaModel::attention(size_t layer, size_t n, size_t pos0) {
    const size_t hd = cfg_.head_dim, E = cfg_.n_embd, group = cfg_.n_head / cfg_.n_head_kv;
    const size_t stride = cfg_.kv_dim();  // elements from one position's key to the next
    const float scale = 1.0f / std::sqrt(float(hd));
    const QKernels& k = *k_;
    // One task per (token, query head): a single token still has n_head tasks to share.
    team_.run(n * cfg_.n_head, [&](size_t task, size_t thread) {
        const size_t t = task / cfg_.n_head, h = task % cfg_.n_head, g = h / group;
        const size_t npos = pos0 + t + 1;  // causal: positions 0..pos0+t
        float* s = scores_[thread].data();
        const float* q = q_.data() + t * E + h * hd;  // rounded to f16 like llama.cpp's
        float* o = att_.data() + t * E + h * hd;
        if (hd % 16 == 0) {
            k.attend_f16(k_at(layer, 0) + g * hd, v_at(layer, 0) + g * hd, stride, q, hd, npos,
                         scale, s, lanes_[thread].data(), o);
            return;
        }
        float mx = -INFINITY;
        for (size_t j = 0; j < npos; ++j) {
            s[j] = k.dot_f16(k_at(layer, j) + g * hd, q, hd) * scale;
            mx = std::max(mx, s[j]);
        }
        float sum = 0;
        for (size_t j = 0; j < npos; ++j) sum += (s[j] = std::exp(s[j] - mx));
        const float inv = 1.0f / sum;
        for (size_t j = 0; j < npos; ++j) s[j] *= inv;
        k.round_f16(s, npos);  // llama.cpp multiplies f16 values by f16 weights
        std::fill(o, o + hd, 0.0f);
        for (size_t j = 0; j < npos; ++j) k.axpy_f16(s[j], v_at(layer, j) + g * hd, o, hd);
    });
}

void LlamaModel::forward_chunk(const int32_t* tokens, size_t n, bool all_logits, float* logits) {
    const size_t E = cfg_.n_embd, F = cfg_.n_ff, kvd = cfg_.kv_dim(), hd = cfg_.head_dim;
    const size_t pos0 = n_past_;
    for (size_t t = 0; t < n; ++t)
        dequantize_row(tok_embd_.type, tok_embd_.row(size_t(tokens[t])), x_.data() + t * E, E);

    auto normed = [&](const float* w) {
        for (size_t t = 0; t < n; ++t)
            rms_norm(x_.data() + t * E, w, cfg_.rms_eps, E, h_.data() + t * E);
        prepare_activations(h_.data(), n, E);
    };

    for (size_t l = 0; l < cfg_.n_layer; ++l) {
        const LlamaLayer& L = layers_[l];
        normed(L.attn_norm);
        matmul({{&L.wq, q_.data(), E},
                {&L.wk, kv_new_.data(), 2 * kvd},
                {&L.wv, kv_new_.data() + kvd, 2 * kvd}},
               n);
        for (size_t t = 0; t < n; ++t) {
            const float pos = float(pos0 + t);
            float* q = q_.data() + t * E;
            for (size_t h = 0; h < cfg_.n_head; ++h) rope(q + h * hd, pos);
            k_->round_f16(q, E);
            float* kn = kv_new_.data() + t * 2 * kvd;
            for (size_t g = 0; g < cfg_.n_head_kv; ++g) rope(kn + g * hd, pos);
            k_->to_f16(kn, k_at(l, pos0 + t), kvd);
            k_->to_f16(kn + kvd, v_at(l, pos0 + t), kvd);
        }
        attention(l, n, pos0);
        prepare_activations(att_.data(), n, E);
        matmul({{&L.wo, tmp_.data(), E}}, n);
        for (size_t i = 0; i < n * E; ++i) x_[i] += tmp_[i];

        normed(L.ffn_norm);
        if (stream_ && stream_->options().rule == NeuronRule::Gate) {
            matmul({{&L.gate, gate_up_.data(), 2 * F}}, n);
            const size_t nb = E / kQBlock;
            for (size_t t = 0; t < n; ++t)
                stream_->forward(l, pos0 + t, gate_up_.data() + t * 2 * F, xq_.data() + t * nb,
                                 h_.data() + t * E, tmp_.data() + t * E, team_);
        } else if (stream_) {  // gate and up resident: the down projection's input chooses
            ffn_in(L, n);
            for (size_t t = 0; t < n; ++t)
                stream_->forward(l, pos0 + t, ffn_.data() + t * F, nullptr, nullptr,
                                 tmp_.data() + t * E, team_);
        } else if (plan_) {
            ffn_planned(l, n);
        } else {
            ffn_in(L, n);
            prepare_activations(ffn_.data(), n, F);
            matmul({{&L.down, tmp_.data(), E}}, n);
        }
        for (size_t i = 0; i < n * E; ++i) x_[i] += tmp_[i];
    }
    n_past_ = pos0 + n;
    if (logits == nullptr) return;
    // Logits of every token, or of the last one only.
    const size_t first = all_logits ? 0 : n - 1, m = n - first;
    for (size_t t = 0; t < m; ++t)
        rms_norm(x_.data() + (first + t) * E, output_norm_, cfg_.rms_eps, E, h_.data() + t * E);
    prepare_activations(h_.data(), m, E);
    matmul({{&output_, logits, cfg_.n_vocab}}, m);
}

}  // namespace lm
