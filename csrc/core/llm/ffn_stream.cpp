#include "llm/ffn_stream.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/errors.h"

namespace lm {

namespace {

uint8_t* aligned_bytes(size_t n) {
    if (n == 0) return nullptr;
    void* p = std::aligned_alloc(4096, (n + 4095) / 4096 * 4096);
    if (p == nullptr)
        throw IoError("out of memory for " + std::to_string(n) + " bytes of FFN cache");
    return static_cast<uint8_t*>(p);
}

}  // namespace

FfnStream::FfnStream(std::unique_ptr<FfnBundle> bundle, const QKernels& k, StreamOptions options)
    : bundle_(std::move(bundle)), k_(k), opt_(options), lay_(bundle_->layout()) {
    if (!(opt_.keep > 0.0f && opt_.keep <= 1.0f))
        throw InvalidArgument("keep (the share of neurons used) must be in (0, 1], got " +
                              std::to_string(opt_.keep));
    if (!(opt_.cache_bias >= 0.0f && opt_.cache_bias <= 10.0f))
        throw InvalidArgument("cache_bias must be in [0, 10], got " +
                              std::to_string(opt_.cache_bias));
    if (opt_.rule != NeuronRule::Activation && opt_.rule != NeuronRule::Gate)
        throw InvalidArgument("rule must be 0 (activation) or 1 (gate)");
    capacity_ = std::min<size_t>(lay_.n_ff, opt_.cache_neurons);
    caches_.resize(lay_.n_layer);
    for (auto& c : caches_) {
        c.data = aligned_bytes(capacity_ * lay_.bundle_bytes);
        c.slot_of.assign(lay_.n_ff, -1);
        c.neuron_of.assign(capacity_, -1);
        c.last_used.assign(lay_.n_ff, -1);
    }
    staging_ = aligned_bytes(size_t(lay_.n_ff) * lay_.bundle_bytes);
    mark_.resize(lay_.n_ff);
    act_.resize(lay_.n_ff);
    score_.resize(lay_.n_ff);
    order_.resize(lay_.n_ff);
    where_.resize(lay_.n_ff);
}

FfnStream::~FfnStream() {
    for (auto& c : caches_) std::free(c.data);
    std::free(staging_);
}

void FfnStream::reset_stats() {
    stats_ = StreamStats{};
    trace_.clear();
}

void FfnStream::clear() {
    for (auto& c : caches_) {
        std::fill(c.slot_of.begin(), c.slot_of.end(), -1);
        std::fill(c.last_used.begin(), c.last_used.end(), -1);
        c.used = 0;
    }
}

void FfnStream::forward(size_t layer, size_t pos, const float* in, const Q8Block* xq,
                        const float* xf, float* y, SpinTeam& team) {
    const size_t F = lay_.n_ff, E = lay_.n_embd, bb = lay_.bundle_bytes;
    const bool gate_rule = opt_.rule == NeuronRule::Gate;
    LayerCache& c = caches_[layer];
    const int64_t now = int64_t(pos);

    // Which neurons this token uses: the top `keep` share by score.
    if (gate_rule)
        k_.silu(in, act_.data(), F);
    else
        std::copy(in, in + F, act_.data());
    const float favour = 1.0f + opt_.cache_bias;
    for (size_t i = 0; i < F; ++i) {
        score_[i] = std::fabs(act_[i]) * (c.slot_of[i] >= 0 ? favour : 1.0f);
        order_[i] = int32_t(i);
    }
    const size_t keep = std::max<size_t>(1, size_t(std::lround(double(opt_.keep) * double(F))));
    if (keep < F)
        std::nth_element(order_.begin(), order_.begin() + ptrdiff_t(keep), order_.end(),
                         [&](int32_t a, int32_t b) { return score_[a] > score_[b]; });
    std::fill(mark_.begin(), mark_.end(), 0);
    for (size_t j = 0; j < keep; ++j) mark_[order_[j]] = 1;
    active_.clear();
    missing_.clear();
    for (size_t i = 0; i < F; ++i) {
        if (!mark_[i]) continue;
        active_.push_back(int32_t(i));
        if (c.slot_of[i] >= 0)
            where_[i] = c.data + size_t(c.slot_of[i]) * bb;
        else
            missing_.push_back(int32_t(i));
    }
    stats_.neurons_missing += missing_.size();
    if (opt_.trace) {
        if (F > 65536) throw InvalidArgument("tracing needs n_ff <= 65536");
        StreamTraceEntry e;
        e.layer = uint32_t(layer);
        e.pos = uint32_t(pos);
        e.active.assign(active_.begin(), active_.end());
        e.missing.assign(missing_.begin(), missing_.end());
        trace_.push_back(std::move(e));
    }
    // Slots the missing neurons may take: free ones, then those of the least recently used
    // neurons this token does not need.
    victims_.clear();
    const size_t free_slots = capacity_ - c.used;
    if (missing_.size() > free_slots) {
        for (size_t slot = 0; slot < c.used; ++slot)
            if (!mark_[c.neuron_of[slot]]) victims_.push_back(int32_t(slot));
        const size_t want = std::min(victims_.size(), missing_.size() - free_slots);
        std::partial_sort(victims_.begin(), victims_.begin() + ptrdiff_t(want), victims_.end(),
                          [&](int32_t a, int32_t b) {
                              return c.last_used[c.neuron_of[a]] < c.last_used[c.neuron_of[b]];
                          });
        victims_.resize(want);
    }
    size_t next_victim = 0;
    auto take_slot = [&]() -> int32_t {
        if (c.used < capacity_) return int32_t(c.used++);
        if (next_victim < victims_.size()) {
            const int32_t slot = victims_[next_victim++];
            c.slot_of[c.neuron_of[slot]] = -1;
            return slot;
        }
        return -1;
    };
    // Read what is missing. One read spans the missing neurons that lie close together, gaps
    // included: a read costs the disk's latency (~70 us here, under O_DIRECT) whatever its
    // size, about what kMergeGapBytes take to transfer, so a shorter gap is cheaper to read
    // through than to skip.
    const int32_t max_gap = int32_t(kMergeGapBytes / bb);
    size_t staged = 0;
    for (size_t j = 0; j < missing_.size();) {
        const int32_t first = missing_[j];
        size_t k = j + 1;
        while (k < missing_.size() && missing_[k] - missing_[k - 1] - 1 <= max_gap) ++k;
        const size_t span = size_t(missing_[k - 1] - first) + 1;
        uint8_t* dst = staging_ + staged * bb;
        stats_.bytes_read += bundle_->read(layer, size_t(first), span, dst);
        ++stats_.reads;
        stats_.neurons_read += span;
        for (size_t m = j; m < k; ++m) {
            const int32_t n = missing_[m];
            const uint8_t* src = dst + size_t(n - first) * bb;
            const int32_t slot = take_slot();
            if (slot >= 0) {
                std::memcpy(c.data + size_t(slot) * bb, src, bb);
                c.slot_of[n] = slot;
                c.neuron_of[size_t(slot)] = n;
                where_[n] = c.data + size_t(slot) * bb;
            } else {
                where_[n] = src;
            }
        }
        staged += span;
        j = k;
    }
    for (int32_t i : active_) c.last_used[i] = now;
    stats_.neurons_active += active_.size();
    ++stats_.token_layers;

    // y = sum over active neurons of act * (up_i . x) * down_i, split across the team.
    const size_t threads = team.size();
    if (partial_.size() != threads) partial_.assign(threads, std::vector<float>(E));
    const size_t nb = E / kQBlock;
    const size_t per = (active_.size() + threads - 1) / std::max<size_t>(1, threads);
    team.run(threads, [&](size_t task, size_t) {
        float* out = partial_[task].data();
        std::fill(out, out + E, 0.0f);
        const size_t b = task * per, e = std::min(active_.size(), b + per);
        for (size_t j = b; j < e; ++j) {
            const int32_t i = active_[j];
            const uint8_t* b = where_[i];
            const float a = gate_rule ? act_[i] * dot_row(k_, lay_.up_type, b, xq, xf, E) : act_[i];
            k_.axpy_q8_0(a, b + lay_.up_bytes, out, E);
        }
    });
    std::fill(y, y + E, 0.0f);
    for (size_t t = 0; t < threads; ++t)
        for (size_t d = 0; d < E; ++d) y[d] += partial_[t][d];
}

}  // namespace lm
