#include "wal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "crc32c.h"
#include "errors.h"
#include "file_util.h"
#include "le_bytes.h"

namespace lm {

struct Wal::Fd {
    UniqueFd fd;
    std::string path;
};

namespace {

constexpr char kMagic[8] = {'L', 'M', 'W', 'A', 'L', 'S', 'G', '1'};
constexpr uint32_t kVersion = 1;

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

void encode_segment_header(uint8_t* h, uint64_t first_lsn) {
    std::memset(h, 0, kWalSegmentHeader);
    std::memcpy(h, kMagic, 8);
    store_le<uint32_t>(h + 8, kVersion);
    store_le<uint64_t>(h + 16, first_lsn);
    store_le<uint32_t>(h + 28, crc32c(h, 28));
}

// Empty string if the header is valid for a segment named after `first_lsn`.
std::string check_segment_header(const uint8_t* h, size_t n, uint64_t first_lsn) {
    if (n < kWalSegmentHeader) return "segment header is truncated";
    if (std::memcmp(h, kMagic, 8) != 0) return "not a localmem log segment (bad magic)";
    if (load_le<uint32_t>(h + 28) != crc32c(h, 28)) return "segment header checksum mismatch";
    if (load_le<uint32_t>(h + 8) != kVersion)
        return "segment format version " + std::to_string(load_le<uint32_t>(h + 8)) +
               " is not supported by this localmem";
    if (load_le<uint64_t>(h + 16) != first_lsn) return "segment header LSN does not match its name";
    return {};
}

// Appends one encoded record (header, payload, zero padding) to `out`.
void encode_record(std::vector<uint8_t>& out, uint64_t lsn, uint32_t type, const void* data,
                   size_t n) {
    const size_t at = out.size();
    out.resize(at + kWalRecordHeader + pad8(n), 0);
    uint8_t* r = out.data() + at;
    store_le<uint32_t>(r + 4, static_cast<uint32_t>(n));
    store_le<uint64_t>(r + 8, lsn);
    store_le<uint32_t>(r + 16, type);
    store_le<uint32_t>(r + 20, ~static_cast<uint32_t>(n));
    if (n) std::memcpy(r + kWalRecordHeader, data, n);
    store_le<uint32_t>(r, crc32c(r + kWalRecordHeader, n, crc32c(r + 4, kWalRecordHeader - 4)));
}

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

// One past the last non-zero byte of [from, to) (from if all zero), read backwards in chunks.
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

}  // namespace

const char* sync_mode_name(SyncMode m) {
    switch (m) {
        case SyncMode::Always:
            return "always";
        case SyncMode::Batch:
            return "batch";
        case SyncMode::Off:
            return "off";
    }
    return "?";
}

Wal::Wal(std::string dir, WalOptions options) : dir_(std::move(dir)), opt_(options) {
    if (opt_.segment_bytes < 4096)
        throw InvalidArgument("segment_bytes must be at least 4096, got " +
                              std::to_string(opt_.segment_bytes));
    if (opt_.start_lsn == 0) throw InvalidArgument("start_lsn must be at least 1");
    make_private_dir(dir_);
    scan_from_start();
}

Wal::~Wal() { stop_flusher(); }

void Wal::stop_flusher() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    flush_cv_.notify_all();
    if (flusher_.joinable()) {
        if (flusher_pid_ == ::getpid())
            flusher_.join();
        else
            flusher_.detach();  // inherited through fork: that thread does not exist here
    }
}

void Wal::flusher_loop() {
    std::unique_lock lk(mu_);
    for (;;) {
        flush_cv_.wait(lk, [&] {
            return stopping_ || !failed_.empty() || (wanted_lsn_ > durable_lsn_ && !syncing_);
        });
        if (stopping_ || !failed_.empty()) return;
        if (opt_.group_commit_us > 0) {
            syncing_ = true;  // commit() callers queue behind this group while it gathers
            lk.unlock();
            std::this_thread::sleep_for(std::chrono::microseconds(opt_.group_commit_us));
            lk.lock();
            syncing_ = false;
        }
        const uint64_t before = durable_lsn_;
        try {
            fdatasync_tail_locked(lk, true);
        } catch (const IoError&) {
            return;  // failed_ is set; waiters were woken and will throw
        }
        ++groups_;
        max_group_ = std::max(max_group_, durable_lsn_ - before);
    }
}

void Wal::scan_from_start() {
    std::vector<std::pair<uint64_t, std::string>> found;
    for (const std::string& name : list_dir(dir_)) {
        uint64_t lsn;
        if (parse_segment_name(name, &lsn)) found.emplace_back(lsn, dir_ + "/" + name);
    }
    std::sort(found.begin(), found.end());
    segments_.clear();
    tail_.reset();
    damage_ = WalDamage{};
    end_ = 0;
    sealed_ = false;
    next_lsn_ = found.empty() ? opt_.start_lsn : found.front().first;
    if (!found.empty() && !open_next_segment(found.front().first, &damage_)) {
        // The first segment is unreadable: the log is empty and that file is damage.
        next_lsn_ = opt_.start_lsn;
    }
    if (tail_) scan_tail(&damage_, false);
    check_zero_tail_locked();
    // Files that are not part of the chain of seals are past the end of the log.
    const uint64_t tail_first = segments_.empty() ? 0 : segments_.back().first_lsn;
    for (const auto& [lsn, path] : found) {
        const bool in_chain = std::any_of(segments_.begin(), segments_.end(),
                                          [&](const Segment& s) { return s.first_lsn == lsn; });
        if (in_chain) continue;
        if (std::find(damage_.later_segments.begin(), damage_.later_segments.end(), path) !=
            damage_.later_segments.end())
            continue;
        if (tail_ && lsn < tail_first) continue;  // below the chain: never produced by us
        damage_.later_segments.push_back(path);
        if (!damage_.any) {
            damage_.any = true;
            damage_.reason = "segment " + base_name(path) + " does not follow the log's last seal";
            damage_.segment = tail_ ? tail_->path : std::string();
            damage_.offset = end_;
        }
        struct stat st{};
        if (::stat(path.c_str(), &st) == 0) damage_.dropped_bytes += st.st_size;
    }
    durable_lsn_ = next_lsn_ - 1;
    synced_end_ = end_;
    cursor_path_.clear();
}

bool Wal::open_next_segment(uint64_t first_lsn, WalDamage* damage) {
    const std::string path = dir_ + "/" + segment_name(first_lsn);
    const int raw = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (raw < 0) {
        if (errno == ENOENT) return false;
        throw_errno("cannot open log segment", path);
    }
    auto fd = std::make_shared<Fd>(Fd{UniqueFd(raw), path});
    uint8_t h[kWalSegmentHeader];
    const size_t got = pread_some(raw, h, sizeof h, 0, path);
    const std::string problem = check_segment_header(h, got, first_lsn);
    if (!problem.empty()) {
        if (damage) {
            damage->later_segments.push_back(path);
            damage->dropped_bytes += file_size(raw, path);
            if (!damage->any) {
                damage->any = true;
                damage->reason = problem + " in " + base_name(path);
                damage->segment = tail_ ? tail_->path : std::string();
                damage->offset = end_;
            }
        }
        return false;
    }
    segments_.push_back(Segment{first_lsn, path});
    tail_ = std::move(fd);
    end_ = kWalSegmentHeader;
    synced_end_ = end_;
    sealed_ = false;
    return true;
}

bool Wal::scan_tail(WalDamage* damage, bool gap_is_stale) {
    for (;;) {
        if (!tail_ || sealed_) {
            if (open_next_segment(next_lsn_, damage)) continue;
            // The next segment is missing. Normal for a moment while another writer rotates;
            // but if later segments exist, a checkpoint deleted the ones this object still
            // had to read: its view is stale, and it must not report an early end of log.
            if (gap_is_stale && tail_) {
                for (const std::string& name : list_dir(dir_)) {
                    uint64_t lsn;
                    if (parse_segment_name(name, &lsn) && lsn > next_lsn_)
                        throw StaleState("log segments after LSN " + std::to_string(next_lsn_ - 1) +
                                         " were checkpointed away by another process; reopen "
                                         "the log from the checkpoint");
                }
            }
            return true;
        }
        const uint64_t size = file_size(tail_->fd.get(), tail_->path);
        alloc_end_ = size;
        if (size == end_ || (size > end_ && header_is_zero(tail_->fd.get(), tail_->path, end_)))
            return true;
        RecordScanner scan(tail_->fd.get(), tail_->path, end_, size);
        WalRecord meta;
        const uint8_t* payload;
        size_t len;
        std::string reason;
        for (;;) {
            const auto st = scan.next(next_lsn_, &meta, &payload, &len, &reason);
            if (st == RecordScanner::Ok && meta.type == kSealType &&
                meta.lsn <= segments_.back().first_lsn) {
                // A seal must follow at least one record: a segment is named after its first
                // LSN, so an empty sealed segment would name itself as its successor.
                if (damage && !damage->any) {
                    damage->any = true;
                    damage->reason = "seal of an empty segment";
                    damage->segment = tail_->path;
                    damage->offset = end_;
                    damage->dropped_bytes += size - end_;
                }
                return false;
            }
            if (st == RecordScanner::Ok) {
                end_ = scan.offset();
                if (meta.type == kSealType) {
                    sealed_ = true;
                    break;
                }
                ++next_lsn_;
                continue;
            }
            if (st == RecordScanner::Eof || st == RecordScanner::End) return true;
            if (damage && !damage->any) {
                damage->any = true;
                damage->reason = reason;
                damage->segment = tail_->path;
                damage->offset = end_;
                damage->dropped_bytes += size - end_;
            }
            return false;
        }
    }
}

WalDamage Wal::recover() {
    std::unique_lock lk(mu_);
    if (!failed_.empty()) throw IoError(failed_);
    if (damage_.any)
        scan_from_start();  // confirm: another process may have repaired it since
    else
        scan_tail(&damage_, true);
    check_zero_tail_locked();
    WalDamage report = damage_;
    if (report.any) {
        const std::string qdir = dir_ + "/quarantine";
        make_private_dir(qdir);
        const auto stamp = std::to_string(std::chrono::system_clock::now().time_since_epoch() /
                                          std::chrono::microseconds(1));
        if (tail_ && report.segment == tail_->path) {
            const uint64_t size = file_size(tail_->fd.get(), tail_->path);
            if (size > end_ && all_zero(tail_->fd.get(), tail_->path, end_, size)) {
                // Zeros (space a file system extended, or a preallocation): nothing to keep.
                if (::ftruncate(tail_->fd.get(), static_cast<off_t>(end_)) != 0)
                    throw_errno("cannot truncate log segment", tail_->path);
                alloc_end_ = end_;
            } else if (size > end_) {
                // Keep what was written; the zeros after it are the preallocation (a torn
                // record in preallocated space would otherwise copy a megabyte of them).
                const uint64_t used = end_of_data(tail_->fd.get(), tail_->path, end_, size);
                report.dropped_bytes -= std::min(report.dropped_bytes, size - used);
                const std::string q =
                    qdir + "/" + base_name(tail_->path) + "." + std::to_string(end_) + "." + stamp;
                UniqueFd out = open_file(q, O_WRONLY | O_CREAT | O_EXCL);
                std::vector<uint8_t> buf(size_t{1} << 20);
                for (uint64_t off = end_; off < used;) {
                    const size_t n =
                        pread_some(tail_->fd.get(), buf.data(),
                                   std::min<uint64_t>(buf.size(), used - off), off, tail_->path);
                    if (n == 0) break;
                    pwrite_all(out.get(), buf.data(), n, off - end_, q);
                    off += n;
                }
                if (::fsync(out.get()) != 0) throw_errno("cannot fsync", q);
                report.quarantined.push_back(q);
                if (::ftruncate(tail_->fd.get(), static_cast<off_t>(end_)) != 0)
                    throw_errno("cannot truncate log segment", tail_->path);
                alloc_end_ = end_;
            }
        }
        for (const std::string& path : report.later_segments) {
            const std::string q = qdir + "/" + base_name(path) + "." + stamp;
            if (::rename(path.c_str(), q.c_str()) != 0) {
                if (errno == ENOENT) continue;
                throw_errno("cannot move damaged log segment to", q);
            }
            report.quarantined.push_back(q);
        }
        fsync_dir(qdir);
        fsync_dir(dir_);
        damage_ = WalDamage{};
    }
    if (!recovered_) {
        // Segments half-created by a writer that died before publishing them (create_segment).
        for (const std::string& name : list_dir(dir_))
            if (name.find(".wal.tmp-") != std::string::npos) ::unlink((dir_ + "/" + name).c_str());
    }
    if (!tail_) {
        create_segment(next_lsn_);
    } else if (report.any || !recovered_) {
        // What an earlier (crashed) writer left in the page cache becomes durable before
        // this process acknowledges anything after it. Later calls only pick up records of
        // live writers, which commit their own.
        if (::fdatasync(tail_->fd.get()) != 0)
            throw_errno("cannot fdatasync log segment", tail_->path);
        ++fsyncs_;
        synced_end_ = end_;
        durable_lsn_ = next_lsn_ - 1;
    }
    recovered_ = true;
    return report;
}

uint64_t Wal::refresh() {
    std::lock_guard lk(mu_);
    scan_tail(nullptr, true);
    return next_lsn_ - 1;
}

void Wal::create_segment(uint64_t first_lsn) {
    const std::string path = dir_ + "/" + segment_name(first_lsn);
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    {
        UniqueFd fd = open_file(tmp, O_RDWR | O_CREAT | O_TRUNC);
        uint8_t h[kWalSegmentHeader];
        encode_segment_header(h, first_lsn);
        pwrite_all(fd.get(), h, sizeof h, 0, tmp);
        // The first preallocation step, made durable with the header: the segment's first
        // fdatasyncs have no size change to journal.
        static const std::vector<uint8_t> zeros(size_t{1} << 16);
        const uint64_t target = std::min(opt_.segment_bytes, opt_.prealloc_bytes);
        for (uint64_t off = sizeof h; off < target;) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), target - off));
            pwrite_all(fd.get(), zeros.data(), n, off, tmp);
            off += n;
        }
        if (::fsync(fd.get()) != 0) throw_errno("cannot fsync", tmp);
    }
    // link() instead of rename(): it refuses to replace a segment another process created.
    if (::link(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        if (err == EEXIST)
            throw StaleState("log segment " + path +
                             " was created by another process; refresh under the store lock");
        errno = err;
        throw_errno("cannot create log segment", path);
    }
    ::unlink(tmp.c_str());
    fsync_dir(dir_);
    auto fd = std::make_shared<Fd>(Fd{open_file(path, O_RDWR), path});
    segments_.push_back(Segment{first_lsn, path});
    tail_ = std::move(fd);
    end_ = kWalSegmentHeader;
    synced_end_ = end_;
    alloc_end_ = std::max<uint64_t>(end_, std::min(opt_.segment_bytes, opt_.prealloc_bytes));
    sealed_ = false;
}

void Wal::check_not_stale_locked() {
    if (!tail_ || sealed_) {
        if (path_exists(dir_ + "/" + segment_name(next_lsn_)))
            throw StaleState("another process extended the log; refresh under the store lock");
        return;
    }
    const uint64_t size = file_size(tail_->fd.get(), tail_->path);
    alloc_end_ = size;
    if (size < end_ || (size > end_ && !header_is_zero(tail_->fd.get(), tail_->path, end_)))
        throw StaleState("log segment " + tail_->path +
                         " changed since it was last read (another writer, or a torn record "
                         "awaiting recovery); call recover() under the store lock first");
}

void Wal::fail_locked(const std::string& what) {
    failed_ = what + " (the log refuses further writes; reopen the store)";
    wake_waiters_locked();
    flush_cv_.notify_all();
    throw IoError(failed_);
}

void Wal::check_zero_tail_locked() {
    if (damage_.any || !tail_ || sealed_) return;
    // The log ended at a zero header: what follows must be zeros too (a preallocation);
    // anything else is the torn remainder of a write that never completed. (Refreshes only
    // look at the header; opening and repairing read the rest, at most prealloc_bytes.)
    const uint64_t size = file_size(tail_->fd.get(), tail_->path);
    if (size > end_ && !all_zero(tail_->fd.get(), tail_->path, end_, size)) {
        damage_.any = true;
        damage_.reason = "torn record (data after a zero header)";
        damage_.segment = tail_->path;
        damage_.offset = end_;
        damage_.dropped_bytes += size - end_;
    }
}

bool Wal::header_is_zero(int fd, const std::string& path, uint64_t offset) const {
    uint8_t h[kWalRecordHeader];
    const size_t got = pread_some(fd, h, sizeof h, offset, path);
    return got == sizeof h && std::all_of(h, h + sizeof h, [](uint8_t b) { return b == 0; });
}

void Wal::extend_locked(uint64_t upto) {
    // Zeros written for real (not fallocate: unwritten extents still cost a journal commit
    // per fdatasync), in steps of prealloc_bytes, never past the segment's size limit.
    const uint64_t size = file_size(tail_->fd.get(), tail_->path);
    alloc_end_ = std::max(alloc_end_, size);
    if (alloc_end_ >= upto) return;
    const uint64_t step = opt_.prealloc_bytes;
    const uint64_t target =
        std::max(upto, std::min(opt_.segment_bytes, (upto + step - 1) / step * step));
    static const std::vector<uint8_t> zeros(size_t{1} << 16);
    for (uint64_t off = alloc_end_; off < target;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), target - off));
        pwrite_all(tail_->fd.get(), zeros.data(), n, off, tail_->path);
        off += n;
    }
    alloc_end_ = target;
}

void Wal::write_locked(const uint8_t* data, size_t n) {
    try {
        if (opt_.prealloc_bytes > 0 && end_ + n + kWalRecordHeader > alloc_end_)
            extend_locked(end_ + n + kWalRecordHeader);
        pwrite_all(tail_->fd.get(), data, n, end_, tail_->path);
    } catch (const IoError& e) {
        // Drop whatever part of the write landed so the next record starts on a boundary.
        if (::ftruncate(tail_->fd.get(), static_cast<off_t>(end_)) != 0)
            fail_locked(std::string(e.what()) + "; truncating the partial record also failed");
        alloc_end_ = end_;
        throw;
    }
    end_ += n;
}

void Wal::rotate_locked() {
    if (tail_ && !sealed_) {
        std::vector<uint8_t> seal;
        encode_record(seal, next_lsn_, kSealType, nullptr, 0);
        write_locked(seal.data(), seal.size());
        // A sealed segment keeps no preallocated zeros (its size is then its records'),
        // made durable by the same fdatasync as the seal.
        if (alloc_end_ > end_ && ::ftruncate(tail_->fd.get(), static_cast<off_t>(end_)) != 0)
            fail_locked("cannot truncate log segment " + tail_->path + ": " + std::strerror(errno));
        alloc_end_ = end_;
        ++fsyncs_;
        if (::fdatasync(tail_->fd.get()) != 0)
            fail_locked("cannot fdatasync log segment " + tail_->path + ": " +
                        std::strerror(errno));
        durable_lsn_ = next_lsn_ - 1;
        sealed_ = true;
    }
    create_segment(next_lsn_);
}

uint64_t Wal::append(uint32_t type, const void* data, size_t n) {
    const void* d[1] = {data};
    return append_batch(&type, d, &n, 1);
}

uint64_t Wal::append_batch(const uint32_t* types, const void* const* data, const size_t* sizes,
                           size_t count) {
    for (size_t i = 0; i < count; ++i) {
        if (types[i] == kSealType)
            throw InvalidArgument("record type 0xFFFFFFFF is reserved for segment seals");
        if (sizes[i] > kWalMaxRecord)
            throw InvalidArgument("a log record holds at most " + std::to_string(kWalMaxRecord) +
                                  " bytes, got " + std::to_string(sizes[i]) +
                                  "; store large blobs in pieces");
    }
    std::unique_lock lk(mu_);
    if (!failed_.empty()) throw IoError(failed_);
    check_not_stale_locked();
    if (!tail_ || sealed_) {
        // A seal this object did not write (a writer that died before its fsync) may be
        // only in the page cache: make it durable before records follow it elsewhere.
        if (tail_ && ::fdatasync(tail_->fd.get()) != 0)
            fail_locked("cannot fdatasync log segment " + tail_->path + ": " +
                        std::strerror(errno));
        create_segment(next_lsn_);
    }
    // On an error, the records already flushed by a rotation stay in the log (each record
    // stands alone); the rest of the batch is not written and its LSNs are not used.
    std::vector<uint8_t> buf;
    uint64_t buf_first = next_lsn_;
    try {
        for (size_t i = 0; i < count; ++i) {
            const size_t rec = kWalRecordHeader + pad8(sizes[i]);
            if (end_ + buf.size() + rec + kWalRecordHeader > opt_.segment_bytes &&
                end_ + buf.size() > kWalSegmentHeader) {
                if (!buf.empty()) write_locked(buf.data(), buf.size());
                buf.clear();
                buf_first = next_lsn_;
                rotate_locked();
            }
            encode_record(buf, next_lsn_, types[i], data[i], sizes[i]);
            ++next_lsn_;
        }
        if (!buf.empty()) write_locked(buf.data(), buf.size());
    } catch (...) {
        next_lsn_ = buf_first;
        throw;
    }
    appends_ += count;
    const uint64_t last = next_lsn_ - 1;
    if (opt_.sync == SyncMode::Always) fdatasync_tail_locked(lk, false);
    return last;
}

void Wal::fdatasync_tail_locked(std::unique_lock<std::mutex>& lk, bool release_while_syncing) {
    const std::shared_ptr<Fd> fd = tail_;
    const uint64_t target_lsn = next_lsn_ - 1, target_end = end_;
    if (release_while_syncing) {
        syncing_ = true;
        lk.unlock();
    }
    const int rc = ::fdatasync(fd->fd.get());
    const int err = errno;
    if (release_while_syncing) {
        lk.lock();
        syncing_ = false;
    }
    ++fsyncs_;
    if (rc != 0) {
        // After a failed fsync the page cache may have dropped the dirty pages: nothing
        // written since the last good fsync can be trusted (PostgreSQL's "fsyncgate").
        fail_locked("fdatasync failed on " + fd->path + ": " + std::strerror(err));
    }
    if (fd == tail_) synced_end_ = std::max(synced_end_, target_end);
    durable_lsn_ = std::max(durable_lsn_, target_lsn);
    wake_waiters_locked();
    flush_cv_.notify_one();
}

void Wal::wake_waiters_locked() {
    const bool all = !failed_.empty();
    CommitWaiter* head = nullptr;
    CommitWaiter** link = &head;
    auto keep = waiters_.begin();
    for (CommitWaiter* w : waiters_) {
        if (!all && w->lsn > durable_lsn_) {
            *keep++ = w;
            continue;
        }
        *link = w;  // a waiter cannot return before its `done`: it is alive until woken
        link = &w->next;
    }
    waiters_.erase(keep, waiters_.end());
    if (head) wake(head);
}

void Wal::wake(CommitWaiter* w) {
    // Notified under its mutex: once that is released the waiter may return and free it.
    std::lock_guard g(w->mu);
    w->done = true;
    w->cv.notify_one();
}

void Wal::commit(uint64_t lsn) {
    if (opt_.sync == SyncMode::Off) return;
    std::unique_lock lk(mu_);
    if (lsn >= next_lsn_)
        throw InvalidArgument("commit(" + std::to_string(lsn) + "): no such record was appended");
    if (durable_lsn_ >= lsn) return;
    if (!failed_.empty()) throw IoError(failed_);
    if (flusher_pid_ != ::getpid()) {
        if (flusher_.joinable()) flusher_.detach();  // a parent's thread, gone after fork
        stopping_ = false;
        flusher_pid_ = ::getpid();
        flusher_ = std::thread([this] { flusher_loop(); });
    }
    wanted_lsn_ = std::max(wanted_lsn_, lsn);
    CommitWaiter me;
    me.lsn = lsn;
    waiters_.push_back(&me);
    flush_cv_.notify_one();
    lk.unlock();
    {
        std::unique_lock g(me.mu);
        me.cv.wait(g, [&] { return me.done; });
    }
    if (me.next) wake(me.next);
    lk.lock();
    if (durable_lsn_ < lsn) throw IoError(failed_);
}

void Wal::sync() {
    std::unique_lock lk(mu_);
    if (!failed_.empty()) throw IoError(failed_);
    if (tail_) fdatasync_tail_locked(lk, false);
}

void Wal::rotate() {
    std::lock_guard lk(mu_);
    if (!failed_.empty()) throw IoError(failed_);
    check_not_stale_locked();
    if (tail_ && !sealed_ && end_ > kWalSegmentHeader) rotate_locked();
}

size_t Wal::truncate_before(uint64_t lsn) {
    std::lock_guard lk(mu_);
    size_t removed = 0;
    while (segments_.size() > 1 && segments_[1].first_lsn <= lsn) {
        if (::unlink(segments_.front().path.c_str()) != 0 && errno != ENOENT)
            throw_errno("cannot delete log segment", segments_.front().path);
        if (cursor_path_ == segments_.front().path) cursor_path_.clear();
        segments_.erase(segments_.begin());
        ++removed;
    }
    if (removed) fsync_dir(dir_);
    return removed;
}

std::vector<WalRecord> Wal::read(uint64_t after_lsn, size_t max_records, size_t max_bytes) {
    std::lock_guard lk(mu_);
    std::vector<WalRecord> out;
    uint64_t want = after_lsn + 1;
    if (want >= next_lsn_ || max_records == 0) return out;
    if (segments_.empty() || want < segments_.front().first_lsn)
        throw StaleState("log records after LSN " + std::to_string(after_lsn) +
                         " were checkpointed away; reload from the checkpoint");
    size_t si = segments_.size() - 1;
    while (segments_[si].first_lsn > want) --si;
    size_t bytes = 0;
    while (si < segments_.size() && want < next_lsn_) {
        const Segment& seg = segments_[si];
        const bool is_tail = si + 1 == segments_.size();
        UniqueFd own;
        int fd;
        if (is_tail) {
            fd = tail_->fd.get();
        } else {
            const int raw = ::open(seg.path.c_str(), O_RDONLY | O_CLOEXEC);
            if (raw < 0) {
                if (errno == ENOENT)
                    throw StaleState("log segment " + seg.path +
                                     " was checkpointed away; reload from the checkpoint");
                throw_errno("cannot open log segment", seg.path);
            }
            own = UniqueFd(raw);
            fd = raw;
        }
        uint64_t offset = kWalSegmentHeader, expect = seg.first_lsn;
        if (cursor_path_ == seg.path && cursor_lsn_ <= want && cursor_lsn_ > expect) {
            offset = cursor_offset_;
            expect = cursor_lsn_;
        }
        const uint64_t limit = is_tail ? end_ : file_size(fd, seg.path);
        RecordScanner scan(fd, seg.path, offset, limit);
        WalRecord meta;
        const uint8_t* payload;
        size_t len;
        std::string reason;
        bool next_segment = false;
        while (want < next_lsn_) {
            const uint64_t rec_offset = scan.offset();
            const auto st = scan.next(expect, &meta, &payload, &len, &reason);
            if (st == RecordScanner::Eof) break;
            if (st != RecordScanner::Ok)
                throw CorruptFile("log segment " + seg.path + " at offset " +
                                  std::to_string(rec_offset) + ": " + reason +
                                  " (it was valid when scanned: the file changed underneath)");
            if (meta.type == kSealType) {
                next_segment = true;
                break;
            }
            ++expect;
            if (meta.lsn < want) continue;
            if (out.size() >= max_records || (!out.empty() && bytes + len > max_bytes)) {
                cursor_path_ = seg.path;
                cursor_lsn_ = meta.lsn;
                cursor_offset_ = rec_offset;
                return out;
            }
            out.push_back(WalRecord{meta.lsn, meta.type,
                                    std::string(reinterpret_cast<const char*>(payload), len)});
            bytes += len;
            want = meta.lsn + 1;
            cursor_path_ = seg.path;
            cursor_lsn_ = want;
            cursor_offset_ = scan.offset();
        }
        if (!next_segment) break;
        ++si;
    }
    return out;
}

uint64_t Wal::first_lsn() const {
    std::lock_guard lk(mu_);
    return segments_.empty() ? next_lsn_ : segments_.front().first_lsn;
}

uint64_t Wal::last_lsn() const {
    std::lock_guard lk(mu_);
    return next_lsn_ - 1;
}

uint64_t Wal::durable_lsn() const {
    std::lock_guard lk(mu_);
    return durable_lsn_;
}

WalStats Wal::stats() const {
    std::lock_guard lk(mu_);
    WalStats s{};
    s.first_lsn = segments_.empty() ? next_lsn_ : segments_.front().first_lsn;
    s.last_lsn = next_lsn_ - 1;
    s.durable_lsn = durable_lsn_;
    s.segments = segments_.size();
    for (const Segment& seg : segments_) {
        if (tail_ && seg.path == tail_->path) {
            s.bytes += end_;  // records only: not the preallocated zeros after them
            continue;
        }
        struct stat st{};
        if (::stat(seg.path.c_str(), &st) == 0) s.bytes += st.st_size;
    }
    s.appends = appends_;
    s.fsyncs = fsyncs_;
    s.commit_groups = groups_;
    s.max_group = max_group_;
    s.tail_segment = tail_ ? tail_->path : std::string();
    s.tail_size = end_;
    s.tail_synced = synced_end_;
    return s;
}

}  // namespace lm
