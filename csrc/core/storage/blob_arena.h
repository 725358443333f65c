// Blob arena: one append-only file per generation of variable-length blobs (texts,
// metadata, fp32 vectors), read through mmap with no copy. A handle is (generation, payload
// offset, length); the store keeps the handles and the generation.
//
// On disk (little-endian):
//   header, 64 bytes: "LMARENA1" | u32 version=1 | u32 0 | u64 generation | zeros |
//                     u32 crc32c(bytes 0..60) at 60
//   blob, 8-aligned:  u32 crc | u32 len | u64 lsn | u64 key | u32 flags | u32 ~len |
//                     payload | zero pad to 8
//   crc = crc32c over bytes 4..32 of the blob header and the payload. Payloads start
//   8-aligned, so an fp32 vector inside one can be viewed in place.
//   Encrypted (header version 2, the key id at byte 12): each payload is sealed
//   (common/aead.h) with its LSN, key and flags as associated data and followed by a 16-byte
//   MAC of the header fields and the seal's tag, which every scan checks (a scan trusts a
//   blob's key and flags without decrypting it); `len` counts both. open() authenticates and
//   decrypts a payload. Compaction copies sealed blobs as they are.
//   Blobs appear in strictly increasing LSN order (the LSN of the log record they mirror);
//   `key` and `flags` are the caller's (the store: memory id, tombstone bit).
//
// The arena is a view of the log: its tail is never fsynced on its own (the log is), and a
// damaged or orphaned tail is cut by recover() and rebuilt from the log. A checkpoint syncs
// it; compaction copies live blobs into the next generation (written aside, fsynced, and
// renamed into place) and the store switches generations with an atomic manifest rename.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/aead.h"
#include "common/file_util.h"

namespace lm {

constexpr size_t kArenaHeader = 64;
constexpr size_t kBlobHeader = 32;
constexpr uint32_t kArenaMaxBlob = uint32_t{1} << 30;

// A read-only MAP_SHARED view of a file prefix; views handed out keep it alive.
class Mapping {
public:
    Mapping(int fd, size_t size, const std::string& path);
    ~Mapping();
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }

private:
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// Blobs found by a scan, as parallel arrays, and why the scan stopped.
struct BlobScan {
    enum Stop { Clean, Beyond, Torn, Corrupt };
    std::vector<int64_t> keys;
    std::vector<uint64_t> lsns;
    std::vector<uint32_t> flags;
    std::vector<uint64_t> offsets;  // of payloads
    std::vector<uint32_t> lengths;
    Stop stop = Clean;
    std::string reason;
    uint64_t end = 0;        // good bytes in the file after the scan
    uint64_t file_size = 0;  // bytes in the file when scanned
};

struct ArenaRepair {
    bool any = false;
    std::string reason;
    uint64_t offset = 0, dropped_bytes = 0;
};

class BlobArena {
public:
    // Creates an empty arena file for `generation` (atomically; replaces a leftover).
    // Encrypted with `key` if given.
    static void create(const std::string& path, uint64_t generation, const SharedKey& key = {});

    // Opens an existing arena. Throws CorruptFile if the header is not an arena of
    // `generation`, KeyMismatch if it is not encrypted with `key` (or is, without one).
    // Nothing is scanned yet: call refresh() or recover().
    BlobArena(std::string path, uint64_t generation, SharedKey key = {});
    BlobArena(const BlobArena&) = delete;
    BlobArena& operator=(const BlobArena&) = delete;

    // Reads blobs appended since the last scan, stopping before any blob whose LSN exceeds
    // max_lsn (its log record is not visible yet) and at a damaged or unfinished blob.
    // Read-only.
    BlobScan refresh(uint64_t max_lsn);
    // Writer side, under the store lock: refresh(max_lsn), then cut what follows the last
    // good blob (torn or corrupt bytes, blobs past the end of the log).
    BlobScan recover(uint64_t max_lsn, ArenaRepair* repair);

    // Appends a blob and returns the offset of its payload. Throws StaleState if the file
    // changed since the last scan.
    uint64_t append(int64_t key, uint64_t lsn, uint32_t flags, const void* data, size_t n);
    // Appends `count` blobs with one write (LSNs strictly increasing); fills `offsets`.
    void append_batch(const int64_t* keys, const uint64_t* lsns, const uint32_t* flags,
                      const void* const* data, const size_t* sizes, size_t count,
                      uint64_t* offsets);

    // A zero-copy view of a payload found by a scan or returned by append(). With verify,
    // the blob's checksum is checked first (CorruptFile if it no longer matches): what a
    // read hands out as content is then vouched for, not just where it lies.
    std::pair<std::shared_ptr<Mapping>, const uint8_t*> view(uint64_t offset, uint32_t len,
                                                             bool verify = false);

    // The plaintext of a blob (of an encrypted arena: authenticated and decrypted; else
    // checksum-verified and copied). CorruptFile, naming the file and offset, if neither holds.
    std::vector<uint8_t> open(uint64_t offset, uint32_t len);
    bool encrypted() const { return key_ != nullptr; }
    // Bytes a blob's payload takes beyond its plaintext: encrypted, the AEAD's nonce and tag
    // and the header MAC.
    size_t overhead() const { return key_ ? kAeadOverhead + AeadKey::kMacBytes : 0; }

    void sync();
    // True if the file is exactly as this object last saw it (no other writer, no torn tail).
    bool is_current() const;

    // Writes the blobs at `offsets` (payload offsets in this arena, strictly increasing) into
    // a new arena file of `generation` at `path`: written aside, fsynced, renamed. Returns
    // their payload offsets in the new file.
    std::vector<uint64_t> copy_to(const std::string& path, uint64_t generation,
                                  const uint64_t* offsets, size_t n);

    uint64_t generation() const { return generation_; }
    uint64_t end() const;
    uint64_t last_lsn() const;
    const std::string& path() const { return path_; }

private:
    std::shared_ptr<Mapping> mapping_locked(uint64_t upto);

    std::string path_;
    uint64_t generation_;
    SharedKey key_;
    UniqueFd fd_;
    mutable std::mutex mu_;
    uint64_t end_ = kArenaHeader;
    uint64_t last_lsn_ = 0;
    std::shared_ptr<Mapping> map_;
};

}  // namespace lm
