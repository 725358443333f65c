// The store's write lock and its native write path.
//
// FileLock = an in-process mutex + an exclusive flock on <store>/LOCK (flock belongs to an
// open file description, so the mutex is what excludes threads of one process; the kernel
// drops the flock when its holder dies, even by kill -9).
//
// StoreWriter::put is the hot path of Store.put: under the lock it appends the records to
// the log and their blobs to the arena, releases the lock, and waits for the record to be
// durable (group commit), all without the GIL. It only proceeds when this process's view is
// current: the log has not moved since `attach()` (another writer, a torn tail, a
// checkpoint's seal) and the arena has not changed. Otherwise it returns 0 and the Python
// store takes its slow path (catch up, repair, then append). The records it wrote are
// applied to the Python views lazily, from the log, using the blob offsets from drain().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "storage/blob_arena.h"
#include "storage/wal.h"

namespace lm {

class FileLock {
public:
    explicit FileLock(std::string path);
    // Waits up to timeout_s for both the mutex and the flock; false on timeout.
    bool acquire(double timeout_s);
    void release();
    const std::string& path() const { return path_; }

private:
    std::string path_;
    UniqueFd fd_;
    std::timed_mutex mu_;
};

struct WrittenBlob {
    uint64_t lsn, offset;
    uint32_t length;
};

class StoreWriter {
public:
    explicit StoreWriter(std::shared_ptr<FileLock> lock) : lock_(std::move(lock)) {}

    // Appends records (blob_mask[i]: record i also gets an arena blob with keys[i], flags[i])
    // and returns the last LSN once durable; 0 if the view is stale (nothing written).
    // Throws on a timeout (lock_timeout_s) or an I/O error.
    uint64_t put(const uint32_t* types, const int64_t* keys, const uint32_t* flags,
                 const uint8_t* blob_mask, const void* const* data, const size_t* sizes,
                 size_t count, double lock_timeout_s);

    // Called by the Python store, holding the lock, after it caught up: these are the log
    // and arena its views use, and both are complete up to `lsn`. Clears drain().
    void attach(std::shared_ptr<Wal> wal, std::shared_ptr<BlobArena> arena, uint64_t lsn);
    void detach();
    // Blobs written by put() since the last drain, for the Python views.
    std::vector<WrittenBlob> drain();

private:
    std::shared_ptr<FileLock> lock_;
    std::mutex mu_;  // guards wal_, arena_, expected_ and written_
    std::shared_ptr<Wal> wal_;
    std::shared_ptr<BlobArena> arena_;
    uint64_t expected_ = 0;
    std::vector<WrittenBlob> written_;
};

}  // namespace lm
