// Opening the log: finding its segments, scanning each one's records to the end of valid
// data, and recovering a torn or damaged tail (recover) -- a record that fails its checksum
// ends the log there, and what follows it is cut off, never replayed.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/errors.h"
#include "storage/wal.h"
#include "storage/wal_format.h"

namespace lm {

using namespace wal_format;

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
    const std::string problem = check_segment_header(h, got, first_lsn, key_id_of(opt_.key));
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

}  // namespace lm
