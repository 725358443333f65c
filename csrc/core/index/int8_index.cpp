#include "index/int8_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>

#include "common/errors.h"
#include "common/thread_pool.h"
#include "index/quantize.h"
#include "index/topk.h"

namespace lm {
namespace {

constexpr size_t kTileBlocks = 32;  // 512 rows: 192 KiB of codes at dim 384, stays in L2
constexpr size_t kQuerySub = 16;    // queries scored against a tile in one kernel call
constexpr size_t kMaxRows = (size_t{1} << 32) - kBlockRows;

size_t blocks_for(size_t rows) { return (rows + kBlockRows - 1) / kBlockRows; }

uint32_t mask16(const uint64_t* words, size_t block) {
    const size_t bit = block * kBlockRows;
    return static_cast<uint32_t>((words[bit / 64] >> (bit % 64)) & 0xFFFFu);
}

std::string id_str(int64_t id) { return std::to_string(id); }

}  // namespace

Int8Index::Int8Index(size_t dim, Metric metric)
    : dim_(dim), stride_(code_stride(dim)), metric_(metric) {
    if (dim == 0 || dim > kMaxDim)
        throw InvalidArgument("dim must be between 1 and " + std::to_string(kMaxDim) + ", got " +
                              std::to_string(dim));
}

size_t Int8Index::size() const {
    std::shared_lock lk(mu_);
    return rows_ - tombstones_;
}

bool Int8Index::contains(int64_t id) const {
    std::shared_lock lk(mu_);
    return row_by_id_.count(id) != 0;
}

IndexStats Int8Index::stats() const {
    std::shared_lock lk(mu_);
    IndexStats s{};
    s.live = rows_ - tombstones_;
    s.rows = rows_;
    s.tombstones = tombstones_;
    s.fp32_vectors = fp32_.size() / dim_;
    s.mapped = file_ != nullptr && file_->mapped() && codes_.is_view();
    // Hash map: one node (key, value, next, cached hash) per id plus a bucket pointer.
    s.memory_bytes = codes_.size() + scales_.size() * 4 + ids_.size() * 8 + fp32_.size() * 4 +
                     sums_.size() * 4 + live_.size() * 8 + fp32_slot_.size() * 4 +
                     row_by_id_.size() * 32 + row_by_id_.bucket_count() * 8;
    return s;
}

uint32_t Int8Index::row_of(int64_t id) const {
    const auto it = row_by_id_.find(id);
    if (it == row_by_id_.end()) throw UnknownId("id " + id_str(id) + " is not in the index");
    return it->second;
}

void Int8Index::resize_rows(size_t rows) {
    const size_t padded = blocks_for(rows) * kBlockRows;
    codes_.mut().resize(padded * stride_, 0);
    scales_.mut().resize(padded, 0.0f);
    ids_.mut().resize(rows);
    sums_.resize(padded, 0);
    fp32_slot_.resize(rows, -1);
    live_.resize((padded + 63) / 64, 0);
}

void Int8Index::add(const int64_t* ids, const float* vectors, size_t n, bool keep_fp32) {
    if (n == 0) return;
    // Everything that can fail on the input happens before the lock and before any change.
    std::vector<float> normalized;
    const float* src = vectors;
    if (metric_ == Metric::Cosine) {
        check_finite(vectors, n, dim_, "vectors");
        normalized.assign(vectors, vectors + n * dim_);
        normalize_rows(normalized.data(), n, dim_, "vectors");
        src = normalized.data();
    }
    std::vector<int8_t> codes(n * stride_);
    std::vector<float> scales(n);
    quantize_rows(src, n, dim_, codes.data(), stride_, scales.data());
    {
        std::vector<int64_t> sorted(ids, ids + n);
        std::sort(sorted.begin(), sorted.end());
        const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
        if (dup != sorted.end())
            throw DuplicateId("id " + id_str(*dup) + " appears more than once in this batch");
    }

    std::unique_lock lk(mu_);
    for (size_t i = 0; i < n; ++i)
        if (row_by_id_.count(ids[i]))
            throw DuplicateId("id " + id_str(ids[i]) +
                              " is already in the index; remove it first or use a new id");
    if (rows_ + n > kMaxRows)
        throw InvalidArgument("an index holds at most " + std::to_string(kMaxRows) + " rows");

    const size_t first = rows_;
    resize_rows(rows_ + n);
    int8_t* dst = codes_.mut().data();
    float* dst_scales = scales_.mut().data();
    int64_t* dst_ids = ids_.mut().data();
    if (keep_fp32) fp32_.mut().reserve(fp32_.size() + n * dim_);
    row_by_id_.reserve(row_by_id_.size() + n);
    for (size_t i = 0; i < n; ++i) {
        const size_t row = first + i;
        const int8_t* c = codes.data() + i * stride_;
        int8_t* base = dst + block_offset(row, stride_);
        int32_t sum = 0;
        for (size_t g = 0; g < stride_ / kGroup; ++g) {
            std::memcpy(base + g * kBlockRows * kGroup, c + g * kGroup, kGroup);
            for (size_t j = 0; j < kGroup; ++j) sum += c[g * kGroup + j];
        }
        sums_[row] = sum;
        dst_scales[row] = scales[i];
        dst_ids[row] = ids[i];
        live_[row / 64] |= uint64_t{1} << (row % 64);
        row_by_id_.emplace(ids[i], static_cast<uint32_t>(row));
        if (keep_fp32) {
            auto& f = fp32_.mut();
            fp32_slot_[row] = static_cast<int32_t>(f.size() / dim_);
            f.insert(f.end(), src + i * dim_, src + (i + 1) * dim_);
        }
    }
    rows_ += n;
}

size_t Int8Index::remove(const int64_t* ids, size_t n, bool missing_ok) {
    std::unique_lock lk(mu_);
    if (!missing_ok)
        for (size_t i = 0; i < n; ++i) row_of(ids[i]);
    size_t removed = 0;
    for (size_t i = 0; i < n; ++i) {
        const auto it = row_by_id_.find(ids[i]);
        if (it == row_by_id_.end()) continue;  // missing, or repeated in this call
        const uint32_t row = it->second;
        live_[row / 64] &= ~(uint64_t{1} << (row % 64));
        row_by_id_.erase(it);
        ++tombstones_;
        ++removed;
    }
    // Dead rows still cost scan time: reclaim them once they are half of the storage.
    if (tombstones_ * 2 > rows_ && rows_ >= 2 * kBlockRows) compact_locked();
    return removed;
}

size_t Int8Index::compact() {
    std::unique_lock lk(mu_);
    return compact_locked();
}

size_t Int8Index::compact_locked() {
    if (tombstones_ == 0) return 0;
    int8_t* codes = codes_.mut().data();
    float* scales = scales_.mut().data();
    int64_t* ids = ids_.mut().data();
    const float* old_fp32 = fp32_.data();
    AlignedVector<float> new_fp32;
    size_t w = 0;
    for (size_t r = 0; r < rows_; ++r) {
        if (!live(r)) continue;
        if (w != r) {
            for (size_t g = 0; g < stride_ / kGroup; ++g)
                std::memcpy(codes + block_offset(w, stride_) + g * kBlockRows * kGroup,
                            codes + block_offset(r, stride_) + g * kBlockRows * kGroup, kGroup);
            scales[w] = scales[r];
            ids[w] = ids[r];
            sums_[w] = sums_[r];
            row_by_id_[ids[w]] = static_cast<uint32_t>(w);
        }
        const int32_t slot = fp32_slot_[r];
        if (slot >= 0) {
            fp32_slot_[w] = static_cast<int32_t>(new_fp32.size() / dim_);
            new_fp32.insert(new_fp32.end(), old_fp32 + size_t(slot) * dim_,
                            old_fp32 + (size_t(slot) + 1) * dim_);
        } else {
            fp32_slot_[w] = -1;
        }
        ++w;
    }
    // Rows past the end of the last block must read as zero codes, zero scale, not live.
    const size_t old_padded = blocks_for(rows_) * kBlockRows;
    for (size_t r = w; r < old_padded; ++r) {
        for (size_t g = 0; g < stride_ / kGroup; ++g)
            std::memset(codes + block_offset(r, stride_) + g * kBlockRows * kGroup, 0, kGroup);
        scales[r] = 0.0f;
        sums_[r] = 0;
    }
    std::fill(live_.begin(), live_.end(), 0);
    for (size_t r = 0; r < w; ++r) live_[r / 64] |= uint64_t{1} << (r % 64);
    const size_t reclaimed = rows_ - w;
    rows_ = w;
    tombstones_ = 0;
    fp32_.mut().swap(new_fp32);
    resize_rows(w);
    return reclaimed;
}

void Int8Index::get_codes(const int64_t* ids, size_t n, int8_t* out, float* scales) const {
    std::shared_lock lk(mu_);
    for (size_t i = 0; i < n; ++i) {
        const uint32_t row = row_of(ids[i]);
        const int8_t* base = codes_.data() + block_offset(row, stride_);
        for (size_t j = 0; j < dim_; ++j)
            out[i * dim_ + j] = base[(j / kGroup) * kBlockRows * kGroup + j % kGroup];
        scales[i] = scales_.data()[row];
    }
}

SearchResult Int8Index::search(const float* queries, size_t nq, const SearchOptions& opt) const {
    if (opt.k == 0) throw InvalidArgument("k must be at least 1");
    const Kernel& kern = opt.kernel != nullptr ? *opt.kernel : active_kernel();

    check_finite(queries, nq, dim_, "queries");
    std::vector<float> qf(queries, queries + nq * dim_);
    if (metric_ == Metric::Cosine) normalize_rows(qf.data(), nq, dim_, "queries");
    std::vector<int8_t> qcodes(nq * stride_);
    std::vector<float> qscales(nq);
    quantize_rows(qf.data(), nq, dim_, qcodes.data(), stride_, qscales.data());
    const size_t pstride = kern.prepared_factor * stride_;
    std::vector<uint8_t> prepared(nq * pstride);
    for (size_t q = 0; q < nq; ++q)
        kern.prepare(qcodes.data() + q * stride_, stride_, prepared.data() + q * pstride);

    std::shared_lock lk(mu_);
    SearchResult res;
    res.k = std::min(opt.k, rows_ - tombstones_);
    res.ids.assign(nq * res.k, -1);
    res.scores.assign(nq * res.k, -INFINITY);
    if (res.k == 0 || nq == 0) return res;

    // Rows that may be returned: live, then narrowed by allow / deny.
    std::vector<uint64_t> filtered;
    const uint64_t* mask = live_.data();
    if (opt.has_allow || opt.n_deny > 0) {
        if (opt.has_allow) {
            filtered.assign(live_.size(), 0);
            for (size_t i = 0; i < opt.n_allow; ++i) {
                const auto it = row_by_id_.find(opt.allow[i]);
                if (it != row_by_id_.end())
                    filtered[it->second / 64] |= uint64_t{1} << (it->second % 64);
            }
        } else {
            filtered = live_;
        }
        for (size_t i = 0; i < opt.n_deny; ++i) {
            const auto it = row_by_id_.find(opt.deny[i]);
            if (it != row_by_id_.end())
                filtered[it->second / 64] &= ~(uint64_t{1} << (it->second % 64));
        }
        mask = filtered.data();
    }
    size_t candidates = 0;
    for (size_t w = 0; w < live_.size(); ++w) candidates += __builtin_popcountll(mask[w]);
    const bool rerank = opt.rerank > 0 && fp32_.size() > 0;
    const size_t want = std::min(candidates, rerank ? opt.k * opt.rerank : opt.k);
    if (want == 0) return res;

    const size_t nblocks = blocks_for(rows_);
    const size_t threads = opt.threads == 0 ? hardware_threads() : opt.threads;
    // Many queries: each task takes a slice of queries over every row. Fewer queries than
    // threads: each task takes a slice of rows, and the slices' hits are merged.
    const size_t splits =
        nq >= threads ? 1 : std::max<size_t>(1, std::min(threads, nblocks / kTileBlocks));
    const size_t qchunk = std::clamp<size_t>((nq + threads * 4 - 1) / (threads * 4), 1, 128);
    const size_t qtasks = (nq + qchunk - 1) / qchunk;
    const size_t blocks_per_split = (nblocks + splits - 1) / splits;
    std::vector<std::vector<Hit>> partial(nq * splits);

    const int8_t* codes = codes_.data();
    const float* scales = scales_.data();
    const int64_t* ids = ids_.data();
    auto task = [&](size_t t) {
        const size_t q0 = (t / splits) * qchunk, q1 = std::min(nq, q0 + qchunk);
        const size_t sp = t % splits;
        const size_t b0 = sp * blocks_per_split, b1 = std::min(nblocks, b0 + blocks_per_split);
        std::vector<TopK> heaps(q1 - q0, TopK(want));
        std::vector<float> out(kQuerySub * kTileBlocks * kBlockRows);
        for (size_t tb = b0; tb < b1; tb += kTileBlocks) {
            const size_t tn = std::min(kTileBlocks, b1 - tb);
            bool any = false;
            for (size_t b = tb; b < tb + tn && !any; ++b) any = mask16(mask, b) != 0;
            if (!any) continue;
            const size_t ostride = tn * kBlockRows;
            for (size_t qs = q0; qs < q1; qs += kQuerySub) {
                const size_t qn = std::min(kQuerySub, q1 - qs);
                const ScoreArgs a{prepared.data() + qs * pstride,
                                  pstride,
                                  qscales.data() + qs,
                                  qn,
                                  codes + tb * kBlockRows * stride_,
                                  sums_.data() + tb * kBlockRows,
                                  scales + tb * kBlockRows,
                                  tn,
                                  stride_,
                                  out.data(),
                                  ostride};
                kern.score(a);
                for (size_t i = 0; i < qn; ++i) {
                    TopK& heap = heaps[qs + i - q0];
                    const float* s = out.data() + i * ostride;
                    for (size_t b = 0; b < tn; ++b) {
                        uint32_t m = mask16(mask, tb + b);
                        if (m == 0) continue;
                        const float* sb = s + b * kBlockRows;
                        const float thr = heap.threshold();
                        uint32_t above = 0;
                        for (uint32_t r = 0; r < kBlockRows; ++r)
                            above |= uint32_t(sb[r] >= thr) << r;
                        m &= above;
                        while (m != 0) {
                            const uint32_t r = __builtin_ctz(m);
                            m &= m - 1;
                            const uint32_t row = static_cast<uint32_t>((tb + b) * kBlockRows + r);
                            heap.push(Hit{sb[r], ids[row], row});
                        }
                    }
                }
            }
        }
        for (size_t q = q0; q < q1; ++q) partial[q * splits + sp] = heaps[q - q0].take_sorted();
    };
    parallel_for(qtasks * splits, threads, task);

    const float* fp32 = fp32_.data();
    for (size_t q = 0; q < nq; ++q) {
        std::vector<Hit> hits;
        for (size_t sp = 0; sp < splits; ++sp) {
            auto& p = partial[q * splits + sp];
            hits.insert(hits.end(), p.begin(), p.end());
        }
        std::sort(hits.begin(), hits.end(), better);
        if (hits.size() > want) hits.resize(want);
        if (rerank) {
            const float* qv = qf.data() + q * dim_;
            for (Hit& h : hits) {
                const int32_t slot = fp32_slot_[h.row];
                if (slot < 0) continue;
                const float* v = fp32 + size_t(slot) * dim_;
                double dot = 0.0;
                for (size_t j = 0; j < dim_; ++j) dot += double(qv[j]) * double(v[j]);
                h.score = static_cast<float>(dot);
            }
            std::sort(hits.begin(), hits.end(), better);
        }
        const size_t n = std::min(hits.size(), res.k);
        for (size_t i = 0; i < n; ++i) {
            res.ids[q * res.k + i] = hits[i].id;
            res.scores[q * res.k + i] = hits[i].score;
        }
    }
    return res;
}

}  // namespace lm
