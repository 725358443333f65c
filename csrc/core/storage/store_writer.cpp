#include "storage/store_writer.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "common/errors.h"

namespace lm {

FileLock::FileLock(std::string path) : path_(std::move(path)) {
    fd_ = open_file(path_, O_RDWR | O_CREAT);
}

bool FileLock::acquire(double timeout_s) {
    using clock = std::chrono::steady_clock;
    const auto deadline =
        clock::now() + std::chrono::duration_cast<clock::duration>(
                           std::chrono::duration<double>(timeout_s < 0 ? 0 : timeout_s));
    if (!mu_.try_lock_until(deadline)) return false;
    auto delay = std::chrono::microseconds(200);
    for (;;) {
        if (::flock(fd_.get(), LOCK_EX | LOCK_NB) == 0) return true;
        if (errno != EWOULDBLOCK && errno != EINTR) {
            const int err = errno;
            mu_.unlock();
            errno = err;
            throw_errno("cannot lock", path_);
        }
        if (clock::now() >= deadline) {
            mu_.unlock();
            return false;
        }
        std::this_thread::sleep_for(delay);
        delay = std::min(delay * 2, std::chrono::microseconds(10000));
    }
}

void FileLock::release() {
    ::flock(fd_.get(), LOCK_UN);
    mu_.unlock();
}

uint64_t StoreWriter::put(const uint32_t* types, const int64_t* keys, const uint32_t* flags,
                          const uint8_t* blob_mask, const void* const* data, const size_t* sizes,
                          size_t count, double lock_timeout_s) {
    if (!lock_->acquire(lock_timeout_s))
        throw LockTimeout(
            "the store is busy: another process has held its write lock for more "
            "than " +
            std::to_string(lock_timeout_s) + " s; try again, or raise lock_timeout");
    std::shared_ptr<Wal> wal;
    uint64_t last = 0;
    try {
        std::shared_ptr<BlobArena> arena;
        uint64_t expected;
        {
            std::lock_guard lk(mu_);
            wal = wal_;
            arena = arena_;
            expected = expected_;
        }
        if (!wal || !arena || expected == 0 || wal->last_lsn() != expected ||
            !arena->is_current()) {
            lock_->release();
            return 0;
        }
        try {
            last = wal->append_batch(types, data, sizes, count);
        } catch (const StaleState&) {
            lock_->release();
            return 0;
        }
        std::vector<int64_t> bkeys;
        std::vector<uint64_t> blsns, boffs;
        std::vector<uint32_t> bflags;
        std::vector<const void*> bdata;
        std::vector<size_t> bsizes;
        for (size_t i = 0; i < count; ++i) {
            if (!blob_mask[i]) continue;
            bkeys.push_back(keys[i]);
            blsns.push_back(last - count + 1 + i);
            bflags.push_back(flags[i]);
            bdata.push_back(data[i]);
            bsizes.push_back(sizes[i]);
        }
        std::lock_guard lk(mu_);
        expected_ = 0;  // until the blobs are in: if this fails, the next put goes slow
        if (!bkeys.empty()) {
            boffs.resize(bkeys.size());
            arena->append_batch(bkeys.data(), blsns.data(), bflags.data(), bdata.data(),
                                bsizes.data(), bkeys.size(), boffs.data());
            const size_t extra = arena->overhead();
            for (size_t i = 0; i < bkeys.size(); ++i)
                written_.push_back(
                    WrittenBlob{blsns[i], boffs[i], static_cast<uint32_t>(bsizes[i] + extra)});
        }
        expected_ = last;
    } catch (...) {
        lock_->release();
        throw;
    }
    lock_->release();
    wal->commit(last);
    return last;
}

void StoreWriter::attach(std::shared_ptr<Wal> wal, std::shared_ptr<BlobArena> arena, uint64_t lsn) {
    std::lock_guard lk(mu_);
    wal_ = std::move(wal);
    arena_ = std::move(arena);
    expected_ = lsn;
    written_.clear();
}

void StoreWriter::detach() {
    std::lock_guard lk(mu_);
    wal_.reset();
    arena_.reset();
    expected_ = 0;
    written_.clear();
}

std::vector<WrittenBlob> StoreWriter::drain() {
    std::lock_guard lk(mu_);
    std::vector<WrittenBlob> out;
    out.swap(written_);
    return out;
}

}  // namespace lm
