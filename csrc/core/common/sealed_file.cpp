#include "common/sealed_file.h"

#include <algorithm>
#include <cstring>

#include "common/crc32c.h"
#include "common/errors.h"
#include "common/le_bytes.h"

namespace lm {
namespace {

constexpr char kMagic[8] = {'L', 'M', 'S', 'E', 'A', 'L', 'E', 'D'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kChunkBytes = uint32_t{1} << 20;
constexpr uint32_t kMaxChunkBytes = uint32_t{64} << 20;  // what a reader accepts

// header | index | last | the file's name: a sealed file renamed over another (an older index
// snapshot over the current one) fails authentication too.
std::vector<uint8_t> chunk_ad(const uint8_t* header, const std::string& name) {
    std::vector<uint8_t> ad(kSealedHeader + 9 + name.size());
    std::memcpy(ad.data(), header, kSealedHeader);
    std::memcpy(ad.data() + kSealedHeader + 9, name.data(), name.size());
    return ad;
}

void set_chunk(std::vector<uint8_t>& ad, uint64_t index, bool last) {
    store_le<uint64_t>(ad.data() + kSealedHeader, index);
    ad[kSealedHeader + 8] = last ? 1 : 0;
}

std::string base_name_of(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

bool is_sealed_file(const uint8_t* data, size_t n) {
    return n >= sizeof kMagic && std::memcmp(data, kMagic, sizeof kMagic) == 0;
}

uint32_t sealed_key_id(const uint8_t* data, size_t n) {
    return n >= kSealedHeader ? load_le<uint32_t>(data + 16) : 0;
}

SealedFileWriter::SealedFileWriter(std::string path, const AeadKey& key, uint32_t kind)
    : key_(key), name_(base_name_of(path)), out_(std::move(path)) {
    std::memset(header_, 0, sizeof header_);
    std::memcpy(header_, kMagic, 8);
    store_le<uint32_t>(header_ + 8, kVersion);
    store_le<uint32_t>(header_ + 12, kind);
    store_le<uint32_t>(header_ + 16, key.key_id());
    store_le<uint32_t>(header_ + 20, kChunkBytes);
    store_le<uint32_t>(header_ + 60, crc32c(header_, 60));
    out_.write(header_, sizeof header_);
    chunk_.reserve(kChunkBytes);
    sealed_.resize(kChunkBytes + kAeadOverhead);
}

void SealedFileWriter::write(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
        if (chunk_.size() == kChunkBytes) seal_chunk(false);
        const size_t k = std::min(n, kChunkBytes - chunk_.size());
        chunk_.insert(chunk_.end(), p, p + k);
        p += k;
        n -= k;
        offset_ += k;
    }
}

void SealedFileWriter::pad_to(size_t offset) {
    static const uint8_t zeros[64] = {};
    while (offset_ < offset) write(zeros, std::min<size_t>(sizeof zeros, offset - offset_));
}

void SealedFileWriter::seal_chunk(bool last) {
    std::vector<uint8_t> ad = chunk_ad(header_, name_);
    set_chunk(ad, index_++, last);
    key_.seal(chunk_.data(), chunk_.size(), ad.data(), ad.size(), sealed_.data());
    out_.write(sealed_.data(), chunk_.size() + kAeadOverhead);
    std::fill(chunk_.begin(), chunk_.end(), 0);  // plaintext kept no longer than needed
    chunk_.clear();
}

void SealedFileWriter::commit() {
    seal_chunk(true);
    out_.commit();
}

std::shared_ptr<FileBytes> read_sealed_file(const std::string& path, const uint8_t* data, size_t n,
                                            const AeadKey& key, uint32_t kind) {
    auto corrupt = [&](const std::string& why) { return CorruptFile(path + ": " + why); };
    if (n < kSealedHeader || !is_sealed_file(data, n))
        throw corrupt("not an encrypted localmem file (bad magic or truncated header)");
    if (load_le<uint32_t>(data + 60) != crc32c(data, 60))
        throw corrupt("header checksum mismatch: the file is damaged");
    if (load_le<uint32_t>(data + 8) != kVersion)
        throw corrupt("encrypted-file version " + std::to_string(load_le<uint32_t>(data + 8)) +
                      " is not supported; upgrade localmem");
    if (load_le<uint32_t>(data + 12) != kind)
        throw corrupt("holds another kind of content (" +
                      std::to_string(load_le<uint32_t>(data + 12)) + ")");
    if (sealed_key_id(data, n) == 0) throw corrupt("no key id in the header");
    check_key_id(path, sealed_key_id(data, n), key.key_id());
    const uint64_t chunk = load_le<uint32_t>(data + 20);
    if (chunk == 0 || chunk > kMaxChunkBytes) throw corrupt("bad chunk size in the header");
    const uint64_t body = n - kSealedHeader, full = chunk + kAeadOverhead;
    const uint64_t chunks = body == 0 ? 1 : (body + full - 1) / full;
    const uint64_t last_len = body - (chunks - 1) * full;
    if (last_len < kAeadOverhead) throw corrupt("truncated (a chunk is cut short)");
    auto out = std::make_shared<FileBytes>(static_cast<size_t>(body - chunks * kAeadOverhead));
    uint8_t* dst = out->mutable_data();
    std::vector<uint8_t> ad = chunk_ad(data, base_name_of(path));
    const uint8_t* src = data + kSealedHeader;
    for (uint64_t i = 0; i < chunks; ++i) {
        const bool last = i + 1 == chunks;
        const size_t len = static_cast<size_t>(last ? last_len : full);
        set_chunk(ad, i, last);
        if (!key.open(src, len, ad.data(), ad.size(), dst))
            throw corrupt("chunk " + std::to_string(i) + " of " + std::to_string(chunks) +
                          " failed authentication: the file was damaged, cut or tampered with");
        src += len;
        dst += len - kAeadOverhead;
    }
    return out;
}

}  // namespace lm
