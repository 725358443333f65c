// Exact top-k search over symmetric per-vector INT8 codes.
//
// Rows are stored in the blocked layout of kernels.h; a row's position is internal (ids are
// what callers see). Removal leaves a tombstone that compaction reclaims. An index loaded
// with mmap reads its codes straight from the page cache until the first write.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/aead.h"
#include "common/aligned.h"
#include "common/mapped_file.h"
#include "index/kernels.h"

namespace lm {

enum class Metric : uint32_t { InnerProduct = 0, Cosine = 1 };

struct SearchOptions {
    size_t k = 10;
    bool has_allow = false;  // only these ids may be returned
    const int64_t* allow = nullptr;
    size_t n_allow = 0;
    const int64_t* deny = nullptr;  // these ids are never returned
    size_t n_deny = 0;
    size_t rerank = 0;               // > 0: re-rank the best k * rerank with kept fp32 vectors
    size_t threads = 1;              // 0: every hardware thread
    const Kernel* kernel = nullptr;  // nullptr: the active kernel
};

struct SearchResult {
    size_t k = 0;               // columns: min(k, live vectors)
    std::vector<int64_t> ids;   // nq * k, -1 where fewer hits passed the filter
    std::vector<float> scores;  // nq * k, -inf where ids is -1
};

struct IndexStats {
    size_t live, rows, tombstones, fp32_vectors, memory_bytes;
    bool mapped;
};

class Int8Index {
public:
    Int8Index(size_t dim, Metric metric);

    size_t dim() const { return dim_; }
    size_t stride() const { return stride_; }
    Metric metric() const { return metric_; }
    size_t size() const;
    bool contains(int64_t id) const;
    IndexStats stats() const;

    // Adds n vectors (row-major float32). All-or-nothing: a bad value, a duplicate id in
    // the batch or an id already present throws before anything changes.
    void add(const int64_t* ids, const float* vectors, size_t n, bool keep_fp32);
    // Tombstones the ids; returns how many were removed. Unknown ids throw UnknownId
    // (before anything changes) unless missing_ok.
    size_t remove(const int64_t* ids, size_t n, bool missing_ok);
    // Drops tombstoned rows; returns how many rows were reclaimed.
    size_t compact();

    SearchResult search(const float* queries, size_t nq, const SearchOptions& opt) const;

    // Codes (n x dim, row-major) and scales of the given ids, as stored.
    void get_codes(const int64_t* ids, size_t n, int8_t* codes, float* scales) const;

    // Writes the live rows to `path` atomically (compacting first).
    // With a key, the file is sealed (common/sealed_file.h) and load() decrypts it whole into
    // memory; without one it is the plain format, mapped in place.
    void save(const std::string& path, const AeadKey* key = nullptr);
    static std::unique_ptr<Int8Index> load(const std::string& path, bool use_mmap, bool verify,
                                           const AeadKey* key = nullptr);

private:
    size_t compact_locked();
    void write_file(const std::string& path, const AeadKey* key) const;
    template <class Out>
    void write_to(Out& out) const;
    uint32_t row_of(int64_t id) const;  // throws UnknownId
    bool live(size_t row) const { return (live_[row / 64] >> (row % 64)) & 1; }
    void resize_rows(size_t rows);                // grows or shrinks every column to hold `rows`
    static size_t blocks_for_rows(size_t rows) {  // rows rounded up to whole blocks
        return (rows + kBlockRows - 1) / kBlockRows * kBlockRows;
    }

    size_t dim_, stride_;
    Metric metric_;
    size_t rows_ = 0;  // rows in storage, tombstones included
    size_t tombstones_ = 0;
    Column<int8_t> codes_;            // ceil(rows/16) blocks of 16 * stride bytes
    Column<float> scales_;            // padded to whole blocks (0 for padding)
    Column<int64_t> ids_;             // rows_
    Column<float> fp32_;              // kept fp32 vectors, dim each, in row order
    AlignedVector<int32_t> sums_;     // per row: sum of its codes (VNNI offset correction)
    std::vector<uint64_t> live_;      // bit per row (padding rows are 0)
    std::vector<int32_t> fp32_slot_;  // per row: index into fp32_, or -1
    std::unordered_map<int64_t, uint32_t> row_by_id_;
    std::shared_ptr<FileBytes> file_;  // keeps mapped columns alive
    mutable std::shared_mutex mu_;
};

}  // namespace lm
