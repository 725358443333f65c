// LlamaModel under a memory budget: which weights are pinned, which stream, and the FFN that
// reads the streamed ones (see WeightPlan in llama_model.h and weight_stream.h).
#include <fcntl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/errors.h"
#include "llm/llama_model.h"

namespace lm {

namespace {

constexpr size_t kPinAlign = 64;        // each pinned tensor starts on a cache line
constexpr size_t kRingBytes = 4 << 20;  // ~2.5 ms of reading at 1.7 GB/s

size_t pin_span(size_t bytes) { return (bytes + kPinAlign - 1) / kPinAlign * kPinAlign; }

size_t slot_span(const GgufFile& f, const WeightMatrix& w) {
    const uint64_t off = f.data_offset() + uint64_t(w.data - f.base() - f.data_offset());
    const size_t skew = size_t(off % kDirectAlign);
    return (skew + w.bytes() + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
}

std::string mb(size_t b) {
    if (b < 10'000'000) return std::to_string((b + 500) / 1000) + " KB";
    return std::to_string((b + 500'000) / 1'000'000) + " MB";
}

}  // namespace

LlamaModel::FfnExtent LlamaModel::ffn_extent() const {
    FfnExtent e;
    for (const auto& L : layers_)
        for (const WeightMatrix* w : {&L.gate, &L.up, &L.down}) {
            e.bytes += w->bytes();
            e.slot = std::max(e.slot, slot_span(*file_, *w));
        }
    return e;
}

size_t LlamaModel::min_budget() const {
    const FfnExtent ffn = ffn_extent();
    return weight_bytes() - ffn.bytes + 2 * ffn.slot;
}

const WeightPlan& LlamaModel::plan_memory(size_t budget, bool direct_io, size_t max_slots) {
    std::lock_guard<std::mutex> lk(mu_);
    if (plan_ || stream_)
        throw InvalidArgument("this model already has a memory plan or a streaming mode");
    const GgufFile& f = *file_;
    auto offset_of = [&](const uint8_t* p) { return uint64_t(p - f.base()); };

    // What must stay, in the order it is laid out in the pinned block.
    std::vector<WeightMatrix*> always;
    always.push_back(&tok_embd_);
    if (output_.data != tok_embd_.data) always.push_back(&output_);
    for (auto& L : layers_)
        for (WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo}) always.push_back(w);
    const size_t n_norms = 1 + 2 * cfg_.n_layer, norm_bytes = cfg_.n_embd * sizeof(float);
    std::vector<WeightMatrix*> ffn;  // forward order: gate, up, down per layer
    for (auto& L : layers_)
        for (WeightMatrix* w : {&L.gate, &L.up, &L.down}) ffn.push_back(w);
    const FfnExtent extent = ffn_extent();
    const size_t ffn_bytes = extent.bytes, slot = extent.slot, least = min_budget();
    WeightPlan p;
    p.budget = budget;
    p.resident_min = weight_bytes() - ffn_bytes;
    if (budget < p.resident_min + ffn_bytes && budget < least) {
        const size_t share = (least * 100 + weight_bytes() - 1) / weight_bytes();  // rounded up
        throw InvalidArgument("a memory budget of " + mb(budget) +
                              " is below the least this model runs in: embeddings, attention "
                              "and norms stay in memory, with two streaming buffers of " +
                              mb(slot) + "; give at least " + mb(least) + " (" +
                              std::to_string(share) + "% of its weights)");
    }

    // Everything fits: no streaming. Otherwise as many buffers as the budget allows (up to
    // max_slots), then whole FFN tensors while the rest lasts.
    std::vector<bool> pin(ffn.size(), true);
    if (budget < p.resident_min + ffn_bytes) {
        const size_t avail = budget - p.resident_min;
        // The ring holds about kRingBytes, at least 4 buffers: what the disk reads in the
        // time a pinned layer or the output head computes (on the embedded model, 8 buffers
        // keep the I/O thread reading 93-96% of the time at a 75% budget; 4: 87-89%). A
        // buffer only hides latency while a pinned tensor saves its bytes on every pass, so
        // buffers never take more than half the free room.
        const size_t want = std::max<size_t>(4, (kRingBytes + slot - 1) / slot);
        p.slots =
            std::clamp<size_t>(std::min(want, avail / slot), 2, std::max<size_t>(2, max_slots));
        while (p.slots > 2 && p.slots * slot > avail / 2) --p.slots;
        // Whole layers' FFN tensors, layers taken in an order that spreads them evenly over
        // the pass (0, L/2, L/4, 3L/4, ...): a long run of pinned layers would leave the I/O
        // thread idle, its ring full, while they compute. A tensor that does not fit is
        // skipped for a smaller one (tensor types may differ).
        const size_t L = cfg_.n_layer;
        std::vector<size_t> order(L);
        for (size_t i = 0; i < L; ++i) order[i] = i;
        auto spread = [](size_t i) {  // i's bits reversed: the van der Corput sequence
            uint32_t r = 0;
            for (int b = 0; b < 32; ++b, i >>= 1) r = (r << 1) | uint32_t(i & 1);
            return r;
        };
        std::stable_sort(order.begin(), order.end(),
                         [&](size_t a, size_t b) { return spread(a) < spread(b); });
        std::fill(pin.begin(), pin.end(), false);
        size_t room = avail - p.slots * slot;
        for (size_t l : order)
            for (size_t j = 0; j < 3; ++j)
                if (pin_span(ffn[3 * l + j]->bytes()) <= room) {
                    room -= pin_span(ffn[3 * l + j]->bytes());
                    pin[3 * l + j] = true;
                }
        p.slot_bytes = slot;
    }

    // Copy the pinned weights into one anonymous block, read with pread (not the mmap) and
    // then dropped from the page cache, so that they are charged once, as this process's
    // own memory.
    size_t total = n_norms * pin_span(norm_bytes);
    for (const WeightMatrix* w : always) total += pin_span(w->bytes());
    for (size_t i = 0; i < ffn.size(); ++i)
        if (pin[i]) total += pin_span(ffn[i]->bytes());
    uint8_t* block = static_cast<uint8_t*>(std::aligned_alloc(kPinAlign, pin_span(total)));
    if (block == nullptr) throw IoError("out of memory for " + mb(total) + " of pinned weights");
    const bool tied = output_.data == tok_embd_.data;
    try {
        UniqueFd fd = open_file(f.path(), O_RDONLY);
        size_t at = 0;
        auto copy = [&](const uint8_t* src, size_t bytes) {
            uint8_t* dst = block + at;
            if (pread_some(fd.get(), dst, bytes, offset_of(src), f.path()) != bytes)
                throw CorruptFile(f.path() + ": the file ended inside a tensor: it was " +
                                  "truncated while open; reopen the model");
            at += pin_span(bytes);
            return dst;
        };
        for (WeightMatrix* w : always) w->data = copy(w->data, w->bytes());
        if (tied) output_ = tok_embd_;
        auto copy_norm = [&](const float*& v) {
            v = reinterpret_cast<const float*>(
                copy(reinterpret_cast<const uint8_t*>(v), norm_bytes));
        };
        copy_norm(output_norm_);
        for (auto& L : layers_) {
            copy_norm(L.attn_norm);
            copy_norm(L.ffn_norm);
        }
        std::vector<StreamedTensor> seq;
        streamed_.assign(cfg_.n_layer, {false, false, false});
        static const char* kind[] = {"ffn_gate", "ffn_up", "ffn_down"};
        for (size_t i = 0; i < ffn.size(); ++i) {
            WeightMatrix* w = ffn[i];
            if (pin[i]) {
                w->data = copy(w->data, w->bytes());
                p.pinned_bytes += w->bytes();
                ++p.ffn_pinned;
                continue;
            }
            seq.push_back({offset_of(w->data), w->bytes()});
            streamed_[i / 3][i % 3] = true;
            p.streamed_bytes += w->bytes();
            p.streamed.push_back("blk." + std::to_string(i / 3) + "." + kind[i % 3]);
            ++p.ffn_streamed;
        }
        p.pinned_bytes += p.resident_min;
        ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
        if (!seq.empty()) {
            ws_ = std::make_unique<WeightStream>(f.path(), std::move(seq), p.slots, direct_io);
            p.direct_io = ws_->direct_io();
        } else {
            p.slots = 0;
        }
    } catch (...) {
        std::free(block);
        throw;  // the model is unusable now (its pointers half moved): the caller drops it
    }
    pinned_ = block;
    plan_ = std::make_unique<WeightPlan>(std::move(p));
    return *plan_;
}

void LlamaModel::ffn_planned(size_t layer, size_t n) {
    const LlamaLayer& L = layers_[layer];
    const auto& s = streamed_[layer];
    const size_t F = cfg_.n_ff;
    // One tensor at a time, so that two buffers suffice; the products are the same dots as
    // ffn_in's, and SiLU runs over the same ranges, so the result is the dense one's bit
    // for bit.
    auto product = [&](const WeightMatrix& w, bool streamed, float* out, size_t stride) {
        WeightMatrix m = w;
        if (streamed) m.data = ws_->acquire();
        matmul({{&m, out, stride}}, n);
        if (streamed) ws_->release();
    };
    product(L.gate, s[0], gate_up_.data(), 2 * F);
    product(L.up, s[1], gate_up_.data() + F, 2 * F);
    const size_t step = task_rows(F);
    team_.run((F + step - 1) / step, [&](size_t task, size_t) {
        const size_t r0 = task * step, r1 = std::min(F, r0 + step);
        for (size_t t = 0; t < n; ++t) {
            const float* g = gate_up_.data() + t * 2 * F;
            float* a = ffn_.data() + t * F;
            k_->silu(g + r0, a + r0, r1 - r0);
            for (size_t i = r0; i < r1; ++i) a[i] *= g[F + i];
        }
    });
    prepare_activations(ffn_.data(), n, F);
    product(L.down, s[2], tmp_.data(), cfg_.n_embd);
}

}  // namespace lm
