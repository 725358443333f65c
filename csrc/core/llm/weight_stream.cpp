#include "llm/weight_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>

#include "common/crc32c.h"
#include "common/errors.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LM_PAUSE() _mm_pause()
#else
#define LM_PAUSE() ((void)0)
#endif

namespace lm {

namespace {

uint64_t now_ns() {
    return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count());
}

// A tensor waits this long spinning before sleeping: a read lands within tens of
// microseconds of the wait's start as often as not, and a condition variable's wake-up
// costs about as much.
constexpr uint64_t kSpinNs = 50'000;

}  // namespace

WeightStream::WeightStream(const std::string& path, std::vector<StreamedTensor> sequence,
                           size_t slots, bool direct_io)
    : path_(path), seq_(std::move(sequence)), slots_(slots) {
    if (seq_.empty()) throw InvalidArgument("a weight stream needs at least one tensor");
    if (slots_ == 0) throw InvalidArgument("a weight stream needs at least one slot");
    int fd = -1;
    if (direct_io) {
        fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
        direct_ = fd >= 0;  // not every file system has O_DIRECT (tmpfs): read through
    }
    if (fd < 0) fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno("cannot open", path_);
    fd_ = UniqueFd(fd);
    const uint64_t size = file_size(fd_.get(), path_);
    for (const auto& t : seq_) {
        if (t.bytes == 0 || t.offset > size || t.bytes > size - t.offset)
            throw CorruptFile(path_ + ": a tensor lies past the end of the file (" +
                              std::to_string(size) + " bytes): the file is truncated");
        const size_t skew = size_t(t.offset % kDirectAlign);
        skew_.push_back(skew);
        const size_t span = (skew + t.bytes + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
        slot_bytes_ = std::max(slot_bytes_, span);
    }
    ring_ = static_cast<uint8_t*>(std::aligned_alloc(kDirectAlign, slots_ * slot_bytes_));
    if (ring_ == nullptr)
        throw IoError("out of memory for " + std::to_string(slots_ * slot_bytes_) +
                      " bytes of streaming buffers");
    // A GGUF has no checksums of its own: each streamed tensor's CRC32C is taken from this
    // first read, and every later read must match it, so a file changed or damaged while
    // it is open is an error rather than silently different weights.
    try {
        for (size_t i = 0; i < seq_.size(); ++i) {
            read_item(i, ring_);
            crc_.push_back(crc32c(ring_ + skew_[i], seq_[i].bytes));
        }
    } catch (...) {
        std::free(ring_);
        throw;
    }
    reset_stats();
    start();
}

WeightStream::~WeightStream() {
    stop();
    std::free(ring_);
}

size_t WeightStream::sequence_bytes() const {
    size_t b = 0;
    for (const auto& t : seq_) b += t.bytes;
    return b;
}

WeightStreamStats WeightStream::stats() const {
    std::lock_guard<std::mutex> lk(stats_mu_);
    return stats_;
}

void WeightStream::reset_stats() {
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_ = WeightStreamStats{};
}

void WeightStream::start() {
    ready_ = 0;
    released_ = 0;
    acquired_ = 0;
    stop_ = false;
    error_ = nullptr;
    io_ = std::thread([this] { io_loop(); });
}

void WeightStream::stop() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (io_.joinable()) io_.join();
    io_ = std::thread();
}

void WeightStream::rewind() {
    stop();  // the next acquire() starts reading again from the first item
}

void WeightStream::read_item(size_t item, uint8_t* slot) {
    const StreamedTensor& t = seq_[item];
    const uint64_t begin = t.offset - skew_[item];
    const size_t want = skew_[item] + t.bytes;
    const size_t len = direct_ ? (want + kDirectAlign - 1) / kDirectAlign * kDirectAlign : want;
    const uint64_t t0 = now_ns();
    size_t got = 0;
    uint64_t calls = 0;
    while (got < want) {
        const ssize_t r = ::pread(fd_.get(), slot + got, len - got, off_t(begin + got));
        ++calls;
        if (r < 0) {
            if (errno == EINTR) continue;
            throw_errno("cannot read weights from", path_);
        }
        if (r == 0) break;
        got += size_t(r);
        // A short read in the middle leaves an unaligned position O_DIRECT cannot continue
        // from; it only happens at the end of the file, past what is wanted.
        if (direct_ && got % kDirectAlign != 0 && got < want)
            throw IoError(path_ + ": a short O_DIRECT read in the middle of a tensor");
    }
    if (got < want)
        throw CorruptFile(path_ +
                          ": the file ended inside a tensor: it was truncated while "
                          "open; reopen the model");
    // Buffered reads leave the pages in the page cache, charged to this process: drop them
    // so that streaming does not hold more than the budget.
    if (!direct_) ::posix_fadvise(fd_.get(), off_t(begin), off_t(len), POSIX_FADV_DONTNEED);
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_.io_ns += now_ns() - t0;
    stats_.bytes_read += got;
    stats_.reads += calls;
}

void WeightStream::io_loop() {
    const size_t n = seq_.size();
    try {
        for (uint64_t k = 0;; ++k) {
            {
                std::unique_lock<std::mutex> lk(mu_);
                cv_.wait(lk, [&] { return stop_.load() || k - released_.load() < slots_; });
                if (stop_) return;
            }
            read_item(size_t(k % n), ring_ + (k % slots_) * slot_bytes_);
            {
                std::lock_guard<std::mutex> lk(mu_);
                ready_ = k + 1;
            }
            cv_.notify_all();
        }
    } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        error_ = std::current_exception();
        cv_.notify_all();
    }
}

const uint8_t* WeightStream::acquire() {
    if (!io_.joinable()) start();
    const uint64_t k = acquired_;
    if (ready_.load(std::memory_order_acquire) <= k) {
        const uint64_t t0 = now_ns();
        while (ready_.load(std::memory_order_acquire) <= k && now_ns() - t0 < kSpinNs) LM_PAUSE();
        if (ready_.load(std::memory_order_acquire) <= k) {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return ready_.load() > k || error_ != nullptr; });
            if (ready_.load() <= k) std::rethrow_exception(error_);
        }
        std::lock_guard<std::mutex> lk(stats_mu_);
        stats_.wait_ns += now_ns() - t0;
    }
    ++acquired_;
    {
        std::lock_guard<std::mutex> lk(stats_mu_);
        ++stats_.tensors;
    }
    const size_t item = size_t(k % seq_.size());
    const uint8_t* p = ring_ + (k % slots_) * slot_bytes_ + skew_[item];
    // Checked here rather than on the I/O thread: the computation waits for reads anyway,
    // and on a machine with as many busy threads as cores a checksum on the I/O thread
    // steals time from both (measured: 52 -> 41 tok/s at a 75% cap; here: 51).
    if (crc32c(p, seq_[item].bytes) != crc_[item])
        throw CorruptFile(path_ + ": a streamed tensor read back different from when the " +
                          "model was opened (at byte " + std::to_string(seq_[item].offset) +
                          "): the file was changed or the disk is failing; reopen the model");
    return p;
}

void WeightStream::release() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (released_.load() >= acquired_) throw InvalidArgument("release() without acquire()");
        released_ = released_.load() + 1;
    }
    cv_.notify_all();
}

}  // namespace lm
