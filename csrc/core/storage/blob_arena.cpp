#include "storage/blob_arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/crc32c.h"
#include "common/errors.h"
#include "common/le_bytes.h"
#include "common/mapped_file.h"
#include "monocypher/monocypher.h"

namespace lm {
namespace {

constexpr char kMagic[8] = {'L', 'M', 'A', 'R', 'E', 'N', 'A', '1'};
constexpr uint32_t kVersion = 1;           // plain
constexpr uint32_t kVersionEncrypted = 2;  // payloads sealed; key id at byte 12
constexpr size_t kBlobAdBytes = 24;

void encode_header(uint8_t* h, uint64_t generation, uint32_t key_id) {
    std::memset(h, 0, kArenaHeader);
    std::memcpy(h, kMagic, 8);
    store_le<uint32_t>(h + 8, key_id ? kVersionEncrypted : kVersion);
    store_le<uint32_t>(h + 12, key_id);
    store_le<uint64_t>(h + 16, generation);
    store_le<uint32_t>(h + 60, crc32c(h, 60));
}

uint32_t blob_crc(const uint8_t* blob, size_t n) {
    return crc32c(blob + kBlobHeader, n, crc32c(blob + 4, kBlobHeader - 4));
}

void encode_blob_header(uint8_t* h, int64_t key, uint64_t lsn, uint32_t flags, uint32_t n) {
    store_le<uint32_t>(h + 4, n);
    store_le<uint64_t>(h + 8, lsn);
    store_le<int64_t>(h + 16, key);
    store_le<uint32_t>(h + 24, flags);
    store_le<uint32_t>(h + 28, ~n);
}

// What binds a sealed payload to its blob: a blob moved, or its key or flags changed (a PUT
// turned into a tombstone), fails authentication.
void blob_ad(uint8_t ad[kBlobAdBytes], int64_t key, uint64_t lsn, uint32_t flags) {
    std::memcpy(ad, "ABLB", 4);
    store_le<uint32_t>(ad + 4, flags);
    store_le<uint64_t>(ad + 8, lsn);
    store_le<int64_t>(ad + 16, key);
}

// The MAC that ends an encrypted blob's payload: its header fields and its AEAD tag. A scan
// trusts a blob's key, LSN and flags (which items exist, which are deleted) without
// decrypting it; the CRC alone would let anyone rewrite them.
void header_mac(const AeadKey& k, const uint8_t* blob, uint32_t n,
                uint8_t out[AeadKey::kMacBytes]) {
    uint8_t m[kBlobAdBytes + 4 + kAeadTagBytes];
    blob_ad(m, load_le<int64_t>(blob + 16), load_le<uint64_t>(blob + 8),
            load_le<uint32_t>(blob + 24));
    store_le<uint32_t>(m + kBlobAdBytes, n);
    std::memcpy(m + kBlobAdBytes + 4, blob + kBlobHeader + n - AeadKey::kMacBytes - kAeadTagBytes,
                kAeadTagBytes);
    k.mac(m, sizeof m, out);
}

}  // namespace

Mapping::Mapping(int fd, size_t size, const std::string& path) : size_(size) {
    if (size == 0) return;
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw_errno("cannot mmap", path);
    data_ = static_cast<const uint8_t*>(p);
}

Mapping::~Mapping() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void BlobArena::create(const std::string& path, uint64_t generation, const SharedKey& key) {
    AtomicFileWriter out(path);
    uint8_t h[kArenaHeader];
    encode_header(h, generation, key_id_of(key));
    out.write(h, sizeof h);
    out.commit();
}

BlobArena::BlobArena(std::string path, uint64_t generation, SharedKey key)
    : path_(std::move(path)), generation_(generation), key_(std::move(key)) {
    fd_ = open_file(path_, O_RDWR);
    uint8_t h[kArenaHeader];
    const size_t got = pread_some(fd_.get(), h, sizeof h, 0, path_);
    std::string problem;
    if (got < kArenaHeader)
        problem = "truncated header";
    else if (std::memcmp(h, kMagic, 8) != 0)
        problem = "not a localmem blob arena (bad magic)";
    else if (load_le<uint32_t>(h + 60) != crc32c(h, 60))
        problem = "header checksum mismatch";
    else if (load_le<uint32_t>(h + 8) != kVersion && load_le<uint32_t>(h + 8) != kVersionEncrypted)
        problem = "format version " + std::to_string(load_le<uint32_t>(h + 8)) +
                  " is not supported by this localmem";
    else if ((load_le<uint32_t>(h + 8) == kVersion) != (load_le<uint32_t>(h + 12) == 0))
        problem = "header fields are inconsistent";
    else if (load_le<uint64_t>(h + 16) != generation)
        problem = "it holds generation " + std::to_string(load_le<uint64_t>(h + 16)) +
                  ", the manifest expects " + std::to_string(generation);
    if (!problem.empty()) throw CorruptFile("blob arena " + path_ + ": " + problem);
    check_key_id("blob arena " + path_, load_le<uint32_t>(h + 12), key_id_of(key_));
}

BlobScan BlobArena::refresh(uint64_t max_lsn) {
    std::lock_guard lk(mu_);
    BlobScan s;
    s.file_size = file_size(fd_.get(), path_);
    ChunkReader in(fd_.get(), path_, s.file_size);
    uint64_t off = end_;
    while (off < s.file_size) {
        const uint8_t* h = in.get(off, kBlobHeader);
        if (h == nullptr) {
            s.stop = BlobScan::Torn;
            s.reason = "torn blob (partial header at the end of the file)";
            break;
        }
        const uint32_t n = load_le<uint32_t>(h + 4);
        const uint64_t lsn = load_le<uint64_t>(h + 8);
        if (load_le<uint32_t>(h + 28) != ~n || n > kArenaMaxBlob) {
            s.stop = BlobScan::Corrupt;
            s.reason = "bad blob length";
            break;
        }
        const size_t total = kBlobHeader + pad8(n);
        h = in.get(off, total);
        if (h == nullptr) {
            s.stop = BlobScan::Torn;
            s.reason = "torn blob (extends past the end of the file)";
            break;
        }
        if (blob_crc(h, n) != load_le<uint32_t>(h)) {
            s.stop = BlobScan::Corrupt;
            s.reason = "blob checksum mismatch";
            break;
        }
        if (key_) {
            uint8_t mac[AeadKey::kMacBytes];
            if (n >= overhead()) header_mac(*key_, h, n, mac);
            if (n < overhead() || crypto_verify16(mac, h + kBlobHeader + n - sizeof mac) != 0) {
                s.stop = BlobScan::Corrupt;
                s.reason = "blob header failed authentication (changed on disk)";
                break;
            }
        }
        if (lsn <= last_lsn_) {
            s.stop = BlobScan::Corrupt;
            s.reason = "blob LSNs out of order";
            break;
        }
        if (lsn > max_lsn) {
            s.stop = BlobScan::Beyond;
            s.reason = "blob of LSN " + std::to_string(lsn) + " is past the end of the log (" +
                       std::to_string(max_lsn) + ")";
            break;
        }
        s.keys.push_back(load_le<int64_t>(h + 16));
        s.lsns.push_back(lsn);
        s.flags.push_back(load_le<uint32_t>(h + 24));
        s.offsets.push_back(off + kBlobHeader);
        s.lengths.push_back(n);
        last_lsn_ = lsn;
        off += total;
        end_ = off;
    }
    s.end = end_;
    return s;
}

BlobScan BlobArena::recover(uint64_t max_lsn, ArenaRepair* repair) {
    BlobScan s = refresh(max_lsn);
    std::lock_guard lk(mu_);
    const uint64_t size = file_size(fd_.get(), path_);
    if (size > end_) {
        if (repair) {
            repair->any = true;
            repair->reason = s.reason.empty() ? "bytes past the last blob" : s.reason;
            repair->offset = end_;
            repair->dropped_bytes = size - end_;
        }
        if (::ftruncate(fd_.get(), static_cast<off_t>(end_)) != 0)
            throw_errno("cannot truncate blob arena", path_);
    }
    return s;
}

uint64_t BlobArena::append(int64_t key, uint64_t lsn, uint32_t flags, const void* data, size_t n) {
    uint64_t offset;
    append_batch(&key, &lsn, &flags, &data, &n, 1, &offset);
    return offset;
}

void BlobArena::append_batch(const int64_t* keys, const uint64_t* lsns, const uint32_t* flags,
                             const void* const* data, const size_t* sizes, size_t count,
                             uint64_t* offsets) {
    const size_t extra = overhead();
    size_t total = 0;
    for (size_t i = 0; i < count; ++i) {
        if (sizes[i] > kArenaMaxBlob - extra)
            throw InvalidArgument("a blob holds at most 1 GiB, got " + std::to_string(sizes[i]) +
                                  " bytes");
        total += kBlobHeader + pad8(sizes[i] + extra);
    }
    std::lock_guard lk(mu_);
    uint64_t prev = last_lsn_;
    for (size_t i = 0; i < count; ++i) {
        if (lsns[i] <= prev)
            throw InvalidArgument("blob LSN " + std::to_string(lsns[i]) +
                                  " is not after the arena's last (" + std::to_string(prev) + ")");
        prev = lsns[i];
    }
    if (file_size(fd_.get(), path_) != end_)
        throw StaleState("blob arena " + path_ +
                         " changed since it was last read; recover() under the store lock first");
    std::vector<uint8_t> buf(total, 0);
    size_t at = 0;
    for (size_t i = 0; i < count; ++i) {
        const uint32_t n = static_cast<uint32_t>(sizes[i] + extra);
        uint8_t* blob = buf.data() + at;
        encode_blob_header(blob, keys[i], lsns[i], flags[i], n);
        if (key_) {
            uint8_t ad[kBlobAdBytes];
            blob_ad(ad, keys[i], lsns[i], flags[i]);
            key_->seal(static_cast<const uint8_t*>(data[i]), sizes[i], ad, sizeof ad,
                       blob + kBlobHeader);
            header_mac(*key_, blob, n, blob + kBlobHeader + n - AeadKey::kMacBytes);
        } else if (n) {
            std::memcpy(blob + kBlobHeader, data[i], n);
        }
        store_le<uint32_t>(blob, blob_crc(blob, n));
        offsets[i] = end_ + at + kBlobHeader;
        at += kBlobHeader + pad8(n);
    }
    try {
        pwrite_all(fd_.get(), buf.data(), buf.size(), end_, path_);
    } catch (const IoError&) {
        if (::ftruncate(fd_.get(), static_cast<off_t>(end_)) != 0) {
            // Leave it: the next recover() under the lock cuts the partial blob.
        }
        throw;
    }
    end_ += buf.size();
    last_lsn_ = prev;
}

std::shared_ptr<Mapping> BlobArena::mapping_locked(uint64_t upto) {
    if (!map_ || map_->size() < upto) map_ = std::make_shared<Mapping>(fd_.get(), end_, path_);
    return map_;
}

std::pair<std::shared_ptr<Mapping>, const uint8_t*> BlobArena::view(uint64_t offset, uint32_t len,
                                                                    bool verify) {
    std::lock_guard lk(mu_);
    if (offset < kArenaHeader + kBlobHeader || offset > end_ || end_ - offset < len)
        throw InvalidArgument("blob handle (" + std::to_string(offset) + ", " +
                              std::to_string(len) + ") is outside arena " + path_ +
                              " (generation " + std::to_string(generation_) + ")");
    auto m = mapping_locked(offset + len);
    const uint8_t* h = m->data() + offset - kBlobHeader;
    if (load_le<uint32_t>(h + 4) != len || load_le<uint32_t>(h + 28) != ~len)
        throw InvalidArgument("(" + std::to_string(offset) + ", " + std::to_string(len) +
                              ") is not a blob handle of arena " + path_);
    if (verify && blob_crc(h, len) != load_le<uint32_t>(h))
        throw CorruptFile("blob arena " + path_ + ": the blob at " + std::to_string(offset) +
                          " no longer matches its checksum (damaged on disk)");
    return {m, h + kBlobHeader};
}

std::vector<uint8_t> BlobArena::open(uint64_t offset, uint32_t len) {
    auto [m, p] = view(offset, len, key_ == nullptr);
    if (!key_) return std::vector<uint8_t>(p, p + len);
    const uint8_t* h = p - kBlobHeader;
    std::vector<uint8_t> out(len >= overhead() ? len - overhead() : 0);
    uint8_t ad[kBlobAdBytes];
    blob_ad(ad, load_le<int64_t>(h + 16), load_le<uint64_t>(h + 8), load_le<uint32_t>(h + 24));
    if (len < overhead() || !key_->open(p, len - AeadKey::kMacBytes, ad, sizeof ad, out.data()))
        throw CorruptFile("blob arena " + path_ + ": the blob at " + std::to_string(offset) +
                          " failed authentication (damaged or tampered with on disk)");
    return out;
}

bool BlobArena::is_current() const {
    std::lock_guard lk(mu_);
    return file_size(fd_.get(), path_) == end_;
}

void BlobArena::sync() {
    if (::fdatasync(fd_.get()) != 0) throw_errno("cannot fdatasync blob arena", path_);
}

std::vector<uint64_t> BlobArena::copy_to(const std::string& path, uint64_t generation,
                                         const uint64_t* offsets, size_t n) {
    std::shared_ptr<Mapping> m;
    uint64_t end;
    {
        std::lock_guard lk(mu_);
        end = end_;
        m = mapping_locked(end_);
    }
    AtomicFileWriter out(path);
    uint8_t h[kArenaHeader];
    encode_header(h, generation, key_id_of(key_));
    out.write(h, sizeof h);
    std::vector<uint64_t> placed(n);
    uint64_t prev = 0;
    for (size_t i = 0; i < n; ++i) {
        const uint64_t off = offsets[i];
        if (off <= prev && i > 0)
            throw InvalidArgument("copy_to: offsets must be strictly increasing");
        if (off < kArenaHeader + kBlobHeader || off > end)
            throw InvalidArgument("copy_to: offset " + std::to_string(off) +
                                  " is outside the arena");
        const uint8_t* blob = m->data() + off - kBlobHeader;
        const uint32_t len = load_le<uint32_t>(blob + 4);
        if (load_le<uint32_t>(blob + 28) != ~len || end - off < len)
            throw InvalidArgument("copy_to: " + std::to_string(off) + " is not a blob offset");
        if (blob_crc(blob, len) != load_le<uint32_t>(blob))
            throw CorruptFile("blob arena " + path_ + ": blob at " + std::to_string(off) +
                              " no longer matches its checksum");
        placed[i] = out.offset() + kBlobHeader;
        out.write(blob, kBlobHeader + pad8(len));
        prev = off;
    }
    out.commit();
    return placed;
}

uint64_t BlobArena::end() const {
    std::lock_guard lk(mu_);
    return end_;
}

uint64_t BlobArena::last_lsn() const {
    std::lock_guard lk(mu_);
    return last_lsn_;
}

}  // namespace lm
