// Write-ahead log: segmented, append-only files of checksummed records with monotonically
// numbered LSNs. Records are opaque bytes to the core; the Python store defines the types.
//
// On disk (all integers little-endian):
//   wal/<first lsn as 16 hex digits>.wal
//   segment header, 32 bytes: "LMWALSG1" | u32 version=1 | u32 0 | u64 first_lsn | u32 0 |
//                             u32 crc32c(bytes 0..28)
//   record, 8-aligned:        u32 crc | u32 len | u64 lsn | u32 type | u32 ~len | payload |
//                             zero pad to 8
//   crc = crc32c over bytes 4..24 of the record header and the payload. ~len lets a reader
//   refuse a garbage length before it reads the payload.
//   A full segment ends with a seal record (type kSealType, lsn = first lsn of the next
//   segment, no payload), so readers and stale writers know the log moved on.
//
// Durability: append() writes into the page cache (a kill -9 of this process cannot lose it);
// commit(lsn) returns once the record is on stable storage under the sync mode: `always`
// fdatasyncs inside append(), `batch` shares one fdatasync between all the appends that
// arrived while the previous one ran (group commit), `off` never syncs.
//
// Concurrency: one Wal object is safe to use from many threads. Several processes may each
// open a Wal on the same directory; the caller serializes their appends with a file lock and
// calls refresh() (under that lock) before appending, so the next LSN is known. A reader
// never modifies files; only recover() (writer, under the lock) truncates a damaged tail.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/aead.h"

namespace lm {

enum class SyncMode { Always, Batch, Off };

constexpr uint32_t kSealType = 0xFFFFFFFFu;
constexpr size_t kWalSegmentHeader = 32;
constexpr size_t kWalRecordHeader = 24;
constexpr size_t kWalMaxRecord = size_t{64} << 20;  // payload bytes (sealed, if encrypted)

struct WalOptions {
    SyncMode sync = SyncMode::Batch;
    uint64_t segment_bytes = uint64_t{64} << 20;  // rotate once a segment would grow past this
    uint32_t group_commit_us = 0;  // extra time a batch leader waits for followers (0: none)
    uint64_t start_lsn = 1;        // first LSN of a log created in an empty directory
    // The tail segment is kept this far ahead of the last record in written zeros: an
    // fdatasync then has no file size to journal (~141 -> ~87 us here, half the CPU). The
    // log ends at the first all-zero record header. 0: grow the file record by record.
    uint64_t prealloc_bytes = uint64_t{1} << 20;
    // An encrypted store's key: every record payload is sealed with it (wal_format.h). A log
    // whose segments were written otherwise (plain, another key) throws KeyMismatch on open.
    SharedKey key;
};

struct WalRecord {
    uint64_t lsn;
    uint32_t type;
    std::string payload;
};

// What a scan found past the last good record. Reported by open (as pending) and recover().
struct WalDamage {
    bool any = false;
    std::string reason;          // first problem met: "torn record", "checksum mismatch", ...
    std::string segment;         // file where the log ends
    uint64_t offset = 0;         // good bytes in that file
    uint64_t dropped_bytes = 0;  // bytes after `offset` in that file + bytes of later files
    std::vector<std::string> later_segments;  // whole files past the end of the log
    std::vector<std::string> quarantined;     // where recover() moved the dropped bytes
};

struct WalStats {
    uint64_t first_lsn, last_lsn, durable_lsn;
    uint64_t segments, bytes;
    uint64_t appends, fsyncs, commit_groups, max_group;
    std::string tail_segment;
    uint64_t tail_size, tail_synced;  // bytes written / known durable in the tail segment
};

class Wal {
public:
    // Opens the log in `dir` (created, 0700, if missing) and scans it to find its end. Does
    // not modify anything: damage is kept in pending_damage() until recover().
    Wal(std::string dir, WalOptions options);
    ~Wal();
    Wal(const Wal&) = delete;
    Wal& operator=(const Wal&) = delete;

    // Writer-side repair, to be called under the store lock: moves bytes past the last good
    // record (and later segments) into wal/quarantine/, truncates, and creates the first
    // segment of an empty log. Returns what was dropped (any = false if nothing).
    WalDamage recover();
    const WalDamage& pending_damage() const { return damage_; }

    // Picks up records appended by other processes since the last scan. Read-only; stops at
    // a record still being written. Returns the last LSN of the log.
    uint64_t refresh();

    // Records with lsn > after_lsn, up to the end known from the last scan, at most
    // max_records and (after the first) max_bytes of payload.
    std::vector<WalRecord> read(uint64_t after_lsn, size_t max_records, size_t max_bytes);

    // Appends records and returns the LSN of the last one. Throws StaleState if another
    // process appended since the last refresh(); IoError if the disk refuses.
    uint64_t append(uint32_t type, const void* data, size_t n);
    uint64_t append_batch(const uint32_t* types, const void* const* data, const size_t* sizes,
                          size_t count);

    // Returns once the record `lsn` is durable under the sync mode (no-op for `off`).
    void commit(uint64_t lsn);
    // fdatasync now, whatever the mode; everything appended so far becomes durable.
    void sync();
    // Seals the tail segment and starts a new one (no-op if the tail holds no record), so
    // that a checkpoint can drop every record it covers. Writer side, under the store lock.
    void rotate();
    // Deletes whole segments whose records all have lsn < `lsn` (never the last segment).
    size_t truncate_before(uint64_t lsn);

    uint64_t first_lsn() const;
    uint64_t last_lsn() const;
    uint64_t durable_lsn() const;
    SyncMode sync_mode() const { return opt_.sync; }
    WalStats stats() const;
    const std::string& dir() const { return dir_; }

private:
    struct Fd;
    struct Segment {
        uint64_t first_lsn;
        std::string path;
    };

    void scan_from_start();
    // Extends end_/next_lsn_; true if it reached clean EOF. With gap_is_stale, throws
    // StaleState when segments this object still had to read were deleted by a checkpoint.
    bool scan_tail(WalDamage* damage, bool gap_is_stale);
    bool open_next_segment(uint64_t first_lsn, WalDamage* damage);
    void create_segment(uint64_t first_lsn);
    void rotate_locked();
    void check_not_stale_locked();
    void write_locked(const uint8_t* data, size_t n);
    void extend_locked(uint64_t upto);
    void check_zero_tail_locked();
    bool header_is_zero(int fd, const std::string& path, uint64_t offset) const;
    void fdatasync_tail_locked(std::unique_lock<std::mutex>& lk, bool release_while_syncing);
    void flusher_loop();
    void stop_flusher();
    [[noreturn]] void fail_locked(const std::string& what);
    void wake_waiters_locked();

    // A commit() caller waiting for its LSN. Each has its own mutex and condition so that an
    // fsync wakes exactly the callers it made durable, and they do not then queue on mu_:
    // with a shared condition every waiter woke after every fsync and went back to sleep.
    // The flusher wakes only the first of a group; each waiter wakes the `next` before it
    // returns, so the flusher starts the next fsync at once instead of paying one futex
    // wake per caller first (a wake costs microseconds in a VM).
    struct CommitWaiter {
        uint64_t lsn;
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        CommitWaiter* next = nullptr;
    };
    static void wake(CommitWaiter* w);

    std::string dir_;
    WalOptions opt_;
    mutable std::mutex mu_;
    std::vector<CommitWaiter*> waiters_;  // guarded by mu_

    std::vector<Segment> segments_;  // in LSN order; the last one is the tail
    std::shared_ptr<Fd> tail_;       // open read-write on the tail segment (null: empty log)
    uint64_t end_ = 0;               // bytes of good records in the tail segment
    bool sealed_ = false;            // the tail ends with a seal whose next segment is missing
    uint64_t next_lsn_ = 1;
    uint64_t durable_lsn_ = 0;
    uint64_t synced_end_ = 0;
    uint64_t alloc_end_ = 0;  // the tail segment's size: end_ .. alloc_end_ holds zeros
    bool syncing_ = false;
    bool recovered_ = false;

    // `batch` mode: a native thread fsyncs back to back while records wait to be durable,
    // so the next group starts the moment the previous fsync returns, whatever the calling
    // (Python) threads are doing. Started on the first commit, by the process that uses it
    // (a forked child starts its own).
    std::thread flusher_;
    int flusher_pid_ = 0;
    bool stopping_ = false;
    uint64_t wanted_lsn_ = 0;  // highest LSN a commit() waits for
    std::condition_variable flush_cv_;
    std::string failed_;  // set after a failed write/fsync: the log refuses further appends
    WalDamage damage_;

    uint64_t appends_ = 0, fsyncs_ = 0, groups_ = 0, max_group_ = 0;

    // read() cursor: where the previous read stopped, to avoid rescanning a segment.
    uint64_t cursor_lsn_ = 0, cursor_offset_ = 0;
    std::string cursor_path_;
};

const char* sync_mode_name(SyncMode m);

}  // namespace lm
