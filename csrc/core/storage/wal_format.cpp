#include "storage/wal_format.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>

#include "common/errors.h"

namespace lm {
namespace wal_format {
namespace {

constexpr char kMagic[8] = {'L', 'M', 'W', 'A', 'L', 'S', 'G', '1'};
constexpr uint32_t kVersion = 1;           // plain
constexpr uint32_t kVersionEncrypted = 2;  // payloads sealed; key id at byte 12

}  // namespace

std::string segment_name(uint64_t first_lsn) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%016llx.wal", static_cast<unsigned long long>(first_lsn));
    return buf;
}

bool parse_segment_name(const std::string& name, uint64_t* lsn) {
    if (name.size() != 20 || name.compare(16, 4, ".wal") != 0) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < 16; ++i) {
        const char c = name[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return false;
        v = v << 4 | static_cast<uint64_t>(d);
    }
    *lsn = v;
    return true;
}

void encode_segment_header(uint8_t* h, uint64_t first_lsn, uint32_t key_id) {
    std::memset(h, 0, kWalSegmentHeader);
    std::memcpy(h, kMagic, 8);
    store_le<uint32_t>(h + 8, key_id ? kVersionEncrypted : kVersion);
    store_le<uint32_t>(h + 12, key_id);
    store_le<uint64_t>(h + 16, first_lsn);
    store_le<uint32_t>(h + 28, crc32c(h, 28));
}

std::string check_segment_header(const uint8_t* h, size_t n, uint64_t first_lsn, uint32_t key_id) {
    if (n < kWalSegmentHeader) return "segment header is truncated";
    if (std::memcmp(h, kMagic, 8) != 0) return "not a localmem log segment (bad magic)";
    if (load_le<uint32_t>(h + 28) != crc32c(h, 28)) return "segment header checksum mismatch";
    const uint32_t version = load_le<uint32_t>(h + 8), found = load_le<uint32_t>(h + 12);
    if (version != kVersion && version != kVersionEncrypted)
        return "segment format version " + std::to_string(version) +
               " is not supported by this localmem";
    if ((version == kVersion) != (found == 0)) return "segment header fields are inconsistent";
    if (load_le<uint64_t>(h + 16) != first_lsn) return "segment header LSN does not match its name";
    check_key_id("log segment " + segment_name(first_lsn), found, key_id);
    return {};
}

void record_ad(uint8_t ad[kRecordAdBytes], uint64_t lsn, uint32_t type) {
    std::memcpy(ad, "WREC", 4);
    store_le<uint32_t>(ad + 4, type);
    store_le<uint64_t>(ad + 8, lsn);
}

void encode_record(std::vector<uint8_t>& out, uint64_t lsn, uint32_t type, const void* data,
                   size_t n, const AeadKey* key) {
    const size_t plain = n;
    if (key != nullptr) n += kAeadOverhead;
    const size_t at = out.size();
    out.resize(at + kWalRecordHeader + pad8(n), 0);
    uint8_t* r = out.data() + at;
    store_le<uint32_t>(r + 4, static_cast<uint32_t>(n));
    store_le<uint64_t>(r + 8, lsn);
    store_le<uint32_t>(r + 16, type);
    store_le<uint32_t>(r + 20, ~static_cast<uint32_t>(n));
    if (key != nullptr) {
        uint8_t ad[kRecordAdBytes];
        record_ad(ad, lsn, type);
        key->seal(static_cast<const uint8_t*>(data), plain, ad, sizeof ad, r + kWalRecordHeader);
    } else if (n) {
        std::memcpy(r + kWalRecordHeader, data, n);
    }
    store_le<uint32_t>(r, crc32c(r + kWalRecordHeader, n, crc32c(r + 4, kWalRecordHeader - 4)));
}

bool all_zero(int fd, const std::string& path, uint64_t from, uint64_t to) {
    std::vector<uint8_t> buf(size_t{1} << 16);
    for (uint64_t off = from; off < to;) {
        const size_t n =
            pread_some(fd, buf.data(), std::min<uint64_t>(buf.size(), to - off), off, path);
        if (n == 0) break;
        for (size_t i = 0; i < n; ++i)
            if (buf[i] != 0) return false;
        off += n;
    }
    return true;
}

uint64_t end_of_data(int fd, const std::string& path, uint64_t from, uint64_t to) {
    std::vector<uint8_t> buf(size_t{1} << 16);
    while (to > from) {
        const uint64_t start = to - std::min<uint64_t>(buf.size(), to - from);
        const size_t n = pread_some(fd, buf.data(), to - start, start, path);
        for (size_t i = n; i > 0; --i)
            if (buf[i - 1] != 0) return start + i;
        if (n == 0) return start;
        to = start;
    }
    return from;
}

bool path_exists(const std::string& path) {
    struct stat st{};
    return ::stat(path.c_str(), &st) == 0;
}

}  // namespace wal_format
}  // namespace lm
