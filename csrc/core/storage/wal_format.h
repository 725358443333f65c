// The log's on-disk format, shared by the writer (wal.cpp) and recovery
// (wal_recovery.cpp): segment files named after their first LSN, each with a checksummed
// header, then records of [crc32c | len | lsn | type | ~len] + payload padded to 8 bytes.
// A record is valid only if its checksum, its length's complement and its LSN (the next in
// sequence) all hold: a torn or damaged tail is told apart from the log's end.
// In an encrypted log (segment header version 2, the key id at byte 12) each payload is
// sealed (common/aead.h) with its LSN and type as associated data; the checksum covers the
// sealed bytes, so a torn tail is found without the key, exactly as in a plain log.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/aead.h"
#include "common/crc32c.h"
#include "common/file_util.h"
#include "common/le_bytes.h"
#include "storage/wal.h"

namespace lm {

struct Wal::Fd {
    UniqueFd fd;
    std::string path;
};

namespace wal_format {

std::string segment_name(uint64_t first_lsn);
bool parse_segment_name(const std::string& name, uint64_t* lsn);
void encode_segment_header(uint8_t* h, uint64_t first_lsn, uint32_t key_id);
// Empty string if the header is valid for a segment named after `first_lsn`; a valid header
// of a segment encrypted otherwise than `key_id` says (0: plain) throws KeyMismatch: that is
// not damage, and nothing may be dropped for it.
std::string check_segment_header(const uint8_t* h, size_t n, uint64_t first_lsn, uint32_t key_id);
// Appends one encoded record (header, payload sealed with `key` if given, zero padding).
void encode_record(std::vector<uint8_t>& out, uint64_t lsn, uint32_t type, const void* data,
                   size_t n, const AeadKey* key = nullptr);
// A sealed record's associated data: what binds its payload to its place in the log.
constexpr size_t kRecordAdBytes = 16;
void record_ad(uint8_t ad[kRecordAdBytes], uint64_t lsn, uint32_t type);
// Whether [from, to) of a file is all zero bytes.
bool all_zero(int fd, const std::string& path, uint64_t from, uint64_t to);
// One past the last non-zero byte of [from, to) (from if all zero), read backwards in chunks.
uint64_t end_of_data(int fd, const std::string& path, uint64_t from, uint64_t to);
bool path_exists(const std::string& path);

// Reads records sequentially from [offset, limit) of a segment.
class RecordScanner {
public:
    enum Status { Ok, Eof, End, Torn, Corrupt };

    RecordScanner(int fd, const std::string& path, uint64_t offset, uint64_t limit)
        : in_(fd, path, limit), offset_(offset), limit_(limit) {}

    // The payload pointer stays valid until the next call.
    Status next(uint64_t expected_lsn, WalRecord* meta, const uint8_t** payload, size_t* len,
                std::string* reason) {
        if (offset_ >= limit_) return Eof;
        const uint8_t* h = in_.get(offset_, kWalRecordHeader);
        if (h == nullptr) {
            *reason = "torn record (partial header at the end of the file)";
            return Torn;
        }
        if (std::all_of(h, h + kWalRecordHeader, [](uint8_t b) { return b == 0; }))
            return End;  // preallocated zeros: the log ends here (recover() checks the rest)
        const uint32_t n = load_le<uint32_t>(h + 4);
        if (load_le<uint32_t>(h + 20) != ~n || n > kWalMaxRecord) {
            *reason = "bad record length";
            return Corrupt;
        }
        const size_t total = kWalRecordHeader + pad8(n);
        h = in_.get(offset_, total);
        if (h == nullptr) {
            *reason = "torn record (extends past the end of the file)";
            return Torn;
        }
        const uint32_t crc = crc32c(h + kWalRecordHeader, n, crc32c(h + 4, kWalRecordHeader - 4));
        if (crc != load_le<uint32_t>(h)) {
            *reason = "record checksum mismatch";
            return Corrupt;
        }
        meta->lsn = load_le<uint64_t>(h + 8);
        meta->type = load_le<uint32_t>(h + 16);
        if (meta->lsn != expected_lsn) {
            *reason = "LSN out of sequence (expected " + std::to_string(expected_lsn) + ", found " +
                      std::to_string(meta->lsn) + ")";
            return Corrupt;
        }
        if (meta->type == kSealType && n != 0) {
            *reason = "malformed segment seal";
            return Corrupt;
        }
        *payload = h + kWalRecordHeader;
        *len = n;
        offset_ += total;
        return Ok;
    }

    uint64_t offset() const { return offset_; }

private:
    ChunkReader in_;
    uint64_t offset_, limit_;
};

}  // namespace wal_format
}  // namespace lm
