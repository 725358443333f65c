#include "storage/wal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "common/crc32c.h"
#include "common/errors.h"
#include "common/file_util.h"
#include "common/le_bytes.h"
#include "storage/wal_format.h"

namespace lm {

using namespace wal_format;

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

void Wal::create_segment(uint64_t first_lsn) {
    const std::string path = dir_ + "/" + segment_name(first_lsn);
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    {
        UniqueFd fd = open_file(tmp, O_RDWR | O_CREAT | O_TRUNC);
        uint8_t h[kWalSegmentHeader];
        encode_segment_header(h, first_lsn, key_id_of(opt_.key));
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
        if (sizes[i] > kWalMaxRecord - (opt_.key ? kAeadOverhead : 0))
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
            const size_t rec = kWalRecordHeader + pad8(sizes[i] + (opt_.key ? kAeadOverhead : 0));
            if (end_ + buf.size() + rec + kWalRecordHeader > opt_.segment_bytes &&
                end_ + buf.size() > kWalSegmentHeader) {
                if (!buf.empty()) write_locked(buf.data(), buf.size());
                buf.clear();
                buf_first = next_lsn_;
                rotate_locked();
            }
            encode_record(buf, next_lsn_, types[i], data[i], sizes[i], opt_.key.get());
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
            if (opt_.key) {
                std::string plain(len >= kAeadOverhead ? len - kAeadOverhead : 0, '\0');
                uint8_t ad[kRecordAdBytes];
                record_ad(ad, meta.lsn, meta.type);
                if (!opt_.key->open(payload, len, ad, sizeof ad,
                                    reinterpret_cast<uint8_t*>(plain.data())))
                    throw CorruptFile("log segment " + seg.path + ": record " +
                                      std::to_string(meta.lsn) +
                                      " failed authentication (its checksum holds: it was "
                                      "tampered with, or sealed with another key)");
                out.push_back(WalRecord{meta.lsn, meta.type, std::move(plain)});
            } else {
                out.push_back(WalRecord{meta.lsn, meta.type,
                                        std::string(reinterpret_cast<const char*>(payload), len)});
            }
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
