#include "ffn_stream.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../errors.h"

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
    : bundle_(std::move(bundle)), k_(k), opt_(std::move(options)), lay_(bundle_->layout()) {
    if (opt_.thresholds.size() != lay_.n_layer)
        throw InvalidArgument("thresholds must have one value per layer (" +
                              std::to_string(lay_.n_layer) + "), got " +
                              std::to_string(opt_.thresholds.size()));
    capacity_ =
        opt_.window == 0
            ? 0
            : std::min<size_t>(lay_.n_ff, opt_.cache_bytes / lay_.n_layer / lay_.bundle_bytes);
    caches_.resize(lay_.n_layer);
    for (auto& c : caches_) {
        c.data = aligned_bytes(capacity_ * lay_.bundle_bytes);
        c.slot_of.assign(lay_.n_ff, -1);
        c.neuron_of.assign(capacity_, -1);
        c.last_used.assign(lay_.n_ff, -1);
    }
    staging_ = aligned_bytes(size_t(lay_.n_ff) * lay_.bundle_bytes);
    mark_.resize(lay_.n_ff);
    silu_.resize(lay_.n_ff);
    where_.resize(lay_.n_ff);
    stats_.active_per_layer.assign(lay_.n_layer, 0);
}

FfnStream::~FfnStream() {
    for (auto& c : caches_) std::free(c.data);
    std::free(staging_);
}

void FfnStream::reset_stats() {
    const size_t n = stats_.active_per_layer.size();
    stats_ = StreamStats{};
    stats_.active_per_layer.assign(n, 0);
}

void FfnStream::clear() {
    for (auto& c : caches_) {
        std::fill(c.slot_of.begin(), c.slot_of.end(), -1);
        std::fill(c.last_used.begin(), c.last_used.end(), -1);
        c.used = 0;
    }
}

void FfnStream::forward(size_t layer, size_t pos, const float* g, const Q8Block* xq,
                        const float* xf, float* y, SpinTeam& team) {
    const size_t F = lay_.n_ff, E = lay_.n_embd, bb = lay_.bundle_bytes;
    const float thr = opt_.thresholds[layer];
    LayerCache& c = caches_[layer];
    const int64_t now = int64_t(pos);

    // Which neurons this token needs: the gate, already computed, is the predictor.
    active_.clear();
    k_.silu(g, silu_.data(), F);
    for (size_t i = 0; i < F; ++i) {
        mark_[i] = thr <= 0 || std::fabs(silu_[i]) > thr;
        if (mark_[i]) active_.push_back(int32_t(i));
    }
    // Evict neurons not used within the window, unless this token needs them again.
    for (size_t s = 0; s < c.used;) {
        const int32_t n = c.neuron_of[s];
        if (!mark_[n] && now - c.last_used[n] >= int64_t(opt_.window)) {
            const size_t last = --c.used;
            if (s != last) {
                const int32_t m = c.neuron_of[last];
                std::memcpy(c.data + s * bb, c.data + last * bb, bb);
                c.neuron_of[s] = m;
                c.slot_of[m] = int32_t(s);
            }
            c.slot_of[n] = -1;
            continue;
        }
        ++s;
    }
    // Read what is missing, then keep what fits. One read spans the missing neurons that lie
    // close together, gaps included: a read costs the disk's latency (~70 us here, under
    // O_DIRECT) whatever its size, about what kMergeGapBytes take to transfer, so a shorter
    // gap is cheaper to read through than to skip.
    missing_.clear();
    for (int32_t i : active_) {
        if (c.slot_of[i] >= 0)
            where_[i] = c.data + size_t(c.slot_of[i]) * bb;
        else
            missing_.push_back(i);
    }
    stats_.neurons_missing += missing_.size();
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
            if (c.used < capacity_) {
                const size_t slot = c.used++;
                std::memcpy(c.data + slot * bb, src, bb);
                c.slot_of[n] = int32_t(slot);
                c.neuron_of[slot] = n;
                where_[n] = c.data + slot * bb;
            } else {
                where_[n] = src;
            }
        }
        staged += span;
        j = k;
    }
    for (int32_t i : active_) c.last_used[i] = now;
    stats_.neurons_active += active_.size();
    stats_.active_per_layer[layer] += active_.size();
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
            const uint8_t* up = where_[i];
            const float u = dot_row(k_, lay_.up_type, up, xq, xf, E);
            k_.axpy_q8_0(silu_[i] * u, up + lay_.up_bytes, out, E);
        }
    });
    std::fill(y, y + E, 0.0f);
    for (size_t t = 0; t < threads; ++t)
        for (size_t d = 0; d < E; ++d) y[d] += partial_[t][d];
}

}  // namespace lm
