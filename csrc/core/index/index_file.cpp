// The index file: a 128-byte header, then sections each aligned to 64 bytes so that a
// mapped file can be used in place. All integers little-endian.
//
//   header: magic "LMINT8IX" | u32 version | u32 header bytes (128) | u32 dim | u32 stride
//           | u32 metric | u32 flags (0) | u64 rows | u64 fp32 vectors | u64 body bytes
//           | u32 body crc32c | zeros ... | u32 header crc32c (of bytes 0..123, at 124)
//   body:   i64 ids[rows] | f32 scales[blocks*16] | i8 codes[blocks*16*stride] (blocked)
//           | u32 fp32_rows[n_fp32] (ascending) | f32 fp32[n_fp32*dim]
//
// In an encrypted store the same bytes are sealed (common/sealed_file.h, kind kSealedKind)
// and read back whole into memory.
//
// Row sums are not stored: they are recomputed on load, in the same pass that checks every
// code is in [-127, 127] (a -128 would break the sign trick of the AVX2 kernel).
#include <cmath>
#include <cstring>
#include <mutex>

#include "common/crc32c.h"
#include "common/errors.h"
#include "common/sealed_file.h"
#include "index/int8_index.h"

namespace lm {
namespace {

constexpr char kMagic[8] = {'L', 'M', 'I', 'N', 'T', '8', 'I', 'X'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 128;
constexpr uint32_t kSealedKind = 1;  // sealed_file kind of an index snapshot

size_t align64(size_t x) { return (x + 63) / 64 * 64; }

struct Layout {
    size_t ids, scales, codes, fp32_rows, fp32, total;
};

Layout layout_for(size_t rows, size_t dim, size_t stride, size_t n_fp32) {
    const size_t padded = (rows + kBlockRows - 1) / kBlockRows * kBlockRows;
    Layout l{};
    l.ids = kHeaderBytes;
    l.scales = align64(l.ids + rows * 8);
    l.codes = align64(l.scales + padded * 4);
    l.fp32_rows = align64(l.codes + padded * stride);
    l.fp32 = align64(l.fp32_rows + n_fp32 * 4);
    l.total = l.fp32 + n_fp32 * dim * 4;
    return l;
}

template <class T>
void put(uint8_t* h, size_t off, T v) {
    std::memcpy(h + off, &v, sizeof v);
}
template <class T>
T get(const uint8_t* h, size_t off) {
    T v;
    std::memcpy(&v, h + off, sizeof v);
    return v;
}

[[noreturn]] void corrupt(const std::string& path, const std::string& why) {
    throw CorruptFile(path + ": " + why);
}

}  // namespace

void Int8Index::save(const std::string& path, const AeadKey* key) {
    std::unique_lock lk(mu_);
    compact_locked();
    write_file(path, key);
}

void Int8Index::write_file(const std::string& path, const AeadKey* key) const {
    if (key != nullptr) {
        SealedFileWriter out(path, *key, kSealedKind);
        write_to(out);
    } else {
        AtomicFileWriter out(path);
        write_to(out);
    }
}

template <class Out>
void Int8Index::write_to(Out& out) const {
    const size_t n_fp32 = fp32_.size() / dim_;
    const Layout l = layout_for(rows_, dim_, stride_, n_fp32);
    const size_t padded = blocks_for_rows(rows_);
    std::vector<uint32_t> fp32_rows;
    fp32_rows.reserve(n_fp32);
    for (size_t r = 0; r < rows_; ++r)
        if (fp32_slot_[r] >= 0) fp32_rows.push_back(static_cast<uint32_t>(r));

    // Body bytes in file order, each section followed by zeros up to the next offset.
    struct Piece {
        size_t offset;
        const void* data;
        size_t bytes;
    };
    const Piece pieces[] = {
        {l.ids, ids_.data(), rows_ * 8},
        {l.scales, scales_.data(), padded * 4},
        {l.codes, codes_.data(), padded * stride_},
        {l.fp32_rows, fp32_rows.data(), n_fp32 * 4},
        {l.fp32, fp32_.data(), n_fp32 * dim_ * 4},
    };
    static const uint8_t zeros[64] = {};
    uint32_t crc = 0;
    size_t at = kHeaderBytes;
    for (const Piece& p : pieces) {
        for (; at < p.offset; ++at) crc = crc32c(zeros, 1, crc);
        crc = crc32c(p.data, p.bytes, crc);
        at += p.bytes;
    }

    uint8_t h[kHeaderBytes] = {};
    std::memcpy(h, kMagic, 8);
    put<uint32_t>(h, 8, kVersion);
    put<uint32_t>(h, 12, kHeaderBytes);
    put<uint32_t>(h, 16, static_cast<uint32_t>(dim_));
    put<uint32_t>(h, 20, static_cast<uint32_t>(stride_));
    put<uint32_t>(h, 24, static_cast<uint32_t>(metric_));
    put<uint32_t>(h, 28, 0);
    put<uint64_t>(h, 32, rows_);
    put<uint64_t>(h, 40, n_fp32);
    put<uint64_t>(h, 48, l.total - kHeaderBytes);
    put<uint32_t>(h, 56, crc);
    put<uint32_t>(h, 124, crc32c(h, 124));

    out.write(h, kHeaderBytes);
    for (const Piece& p : pieces) {
        out.pad_to(p.offset);
        out.write(p.data, p.bytes);
    }
    out.commit();
}

std::unique_ptr<Int8Index> Int8Index::load(const std::string& path, bool use_mmap, bool verify,
                                           const AeadKey* key) {
    auto file = std::make_shared<FileBytes>(path, use_mmap && key == nullptr);
    if (is_sealed_file(file->data(), file->size())) {
        if (key == nullptr) check_key_id(path, sealed_key_id(file->data(), file->size()), 0);
        file = read_sealed_file(path, file->data(), file->size(), *key, kSealedKind);
    } else if (key != nullptr) {
        // Not an encryption mismatch of the store (its other files opened with this key):
        // a plain snapshot here is damage, rebuilt from the arena like any other.
        corrupt(path, "is not encrypted, in an encrypted store");
    }
    const uint8_t* h = file->data();
    const size_t size = file->size();
    if (size < kHeaderBytes)
        corrupt(path, "file is " + std::to_string(size) +
                          " bytes, shorter than an index header: truncated or not an index");
    if (std::memcmp(h, kMagic, 8) != 0) corrupt(path, "not a localmem index file (bad magic)");
    if (get<uint32_t>(h, 124) != crc32c(h, 124))
        corrupt(path, "header checksum mismatch: the file is damaged");
    const uint32_t version = get<uint32_t>(h, 8);
    if (version != kVersion)
        corrupt(path, "format version " + std::to_string(version) +
                          " is not supported (this "
                          "build reads version " +
                          std::to_string(kVersion) + "); upgrade localmem");
    const size_t dim = get<uint32_t>(h, 16), stride = get<uint32_t>(h, 20);
    const uint32_t metric = get<uint32_t>(h, 24);
    const uint64_t rows = get<uint64_t>(h, 32), n_fp32 = get<uint64_t>(h, 40);
    if (get<uint32_t>(h, 12) != kHeaderBytes || dim == 0 || dim > kMaxDim ||
        stride != code_stride(dim) || metric > 1 || get<uint32_t>(h, 28) != 0 ||
        rows > (uint64_t{1} << 32) - kBlockRows || n_fp32 > rows)
        corrupt(path, "header fields are inconsistent");
    const Layout l = layout_for(rows, dim, stride, n_fp32);
    if (get<uint64_t>(h, 48) != l.total - kHeaderBytes)
        corrupt(path, "header fields are inconsistent (body size)");
    if (size < l.total)
        corrupt(path, "truncated: the header promises " + std::to_string(l.total) +
                          " bytes, the file has " + std::to_string(size));
    if (size > l.total)
        corrupt(path, "has " + std::to_string(size - l.total) + " unexpected trailing bytes");
    if (verify && get<uint32_t>(h, 56) != crc32c(h + kHeaderBytes, l.total - kHeaderBytes))
        corrupt(path,
                "checksum mismatch: the file is damaged; restore it from a backup or "
                "rebuild the index");

    auto idx = std::make_unique<Int8Index>(dim, static_cast<Metric>(metric));
    const size_t padded = blocks_for_rows(rows);
    idx->file_ = file;
    idx->ids_.set_view(reinterpret_cast<const int64_t*>(h + l.ids), rows);
    idx->scales_.set_view(reinterpret_cast<const float*>(h + l.scales), padded);
    idx->codes_.set_view(reinterpret_cast<const int8_t*>(h + l.codes), padded * stride);
    idx->fp32_.set_view(reinterpret_cast<const float*>(h + l.fp32), n_fp32 * dim);
    idx->rows_ = rows;

    // Content checks: a file that passed the checksum was still written by someone.
    const float* scales = idx->scales_.data();
    for (size_t r = 0; r < padded; ++r)
        if (!std::isfinite(scales[r]) || scales[r] < 0.0f || (r >= rows && scales[r] != 0.0f))
            corrupt(path, "scale of row " + std::to_string(r) + " is invalid");
    idx->sums_.assign(padded, 0);
    const int8_t* codes = idx->codes_.data();
    for (size_t r = 0; r < padded; ++r) {
        const int8_t* base = codes + block_offset(r, stride);
        int32_t sum = 0;
        for (size_t j = 0; j < stride; ++j) {
            const int8_t c = base[(j / kGroup) * kBlockRows * kGroup + j % kGroup];
            if (c == -128 || (c != 0 && (j >= dim || r >= rows)))
                corrupt(path, "code " + std::to_string(j) + " of row " + std::to_string(r) +
                                  " is out of range");
            sum += c;
        }
        idx->sums_[r] = sum;
    }
    idx->live_.assign((padded + 63) / 64, 0);
    for (size_t r = 0; r < rows; ++r) idx->live_[r / 64] |= uint64_t{1} << (r % 64);
    const int64_t* ids = idx->ids_.data();
    idx->row_by_id_.reserve(rows);
    for (size_t r = 0; r < rows; ++r)
        if (!idx->row_by_id_.emplace(ids[r], static_cast<uint32_t>(r)).second)
            corrupt(path, "id " + std::to_string(ids[r]) + " appears twice");
    idx->fp32_slot_.assign(rows, -1);
    const uint8_t* fr = h + l.fp32_rows;
    for (size_t i = 0; i < n_fp32; ++i) {
        const uint32_t row = get<uint32_t>(fr, i * 4);
        if (row >= rows || (i > 0 && row <= get<uint32_t>(fr, (i - 1) * 4)))
            corrupt(path, "fp32 row table is invalid");
        idx->fp32_slot_[row] = static_cast<int32_t>(i);
    }
    const float* f = idx->fp32_.data();
    for (size_t i = 0; i < n_fp32 * dim; ++i)
        if (!std::isfinite(f[i])) corrupt(path, "a kept fp32 vector holds NaN or infinity");
    return idx;
}

}  // namespace lm
