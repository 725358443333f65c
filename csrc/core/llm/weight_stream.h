// Weights read from disk as the forward pass needs them, when the memory a model may use is
// smaller than its weights (LLM in a flash, at tensor granularity). The tensors that do not
// fit the budget are read whole, in the GGUF's own layout (so the output is bit-identical to
// the dense pass), by an I/O thread that runs ahead of the computation: it reads them in the
// order a forward pass uses them, cycling, into a ring of slots, and waits only when every
// slot holds a tensor not used yet. Reads bypass the page cache (O_DIRECT) where the file
// system allows, so streaming never grows the memory the kernel charges to this process.
// Every read is checked against the CRC32C the tensor had when the stream opened.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/file_util.h"

namespace lm {

// O_DIRECT needs offsets, lengths and buffers aligned to the device's logical block.
constexpr size_t kDirectAlign = 4096;

struct StreamedTensor {
    uint64_t offset = 0;  // in the file
    size_t bytes = 0;
};

struct WeightStreamStats {
    uint64_t bytes_read = 0;  // from the file, alignment included
    uint64_t reads = 0;       // pread calls
    uint64_t tensors = 0;     // tensors handed to the computation
    uint64_t wait_ns = 0;     // time the computation waited for a tensor not read yet
    uint64_t io_ns = 0;       // time the I/O thread spent in pread
};

class WeightStream {
public:
    // `sequence`: the streamed tensors in the order one forward pass uses each once;
    // `slots`: buffers in the ring (>= 1; 2 or more lets reading overlap computing).
    WeightStream(const std::string& path, std::vector<StreamedTensor> sequence, size_t slots,
                 bool direct_io);
    ~WeightStream();
    WeightStream(const WeightStream&) = delete;
    WeightStream& operator=(const WeightStream&) = delete;

    // The next tensor of the sequence (blocks until it is read; throws CorruptFile when its
    // CRC32C is not the one it had at open); valid until its release().
    const uint8_t* acquire();
    // The oldest acquired tensor is no longer needed: its slot may be read into again.
    void release();
    // Back to the start of the sequence (after a forward pass stopped half way): stops the
    // I/O thread; the next acquire() starts it again from the first tensor, so an error
    // (a file cut short) is met again only if it is still there.
    void rewind();

    size_t slots() const { return slots_; }
    size_t slot_bytes() const { return slot_bytes_; }
    size_t sequence_bytes() const;  // bytes one pass streams (as stored, before alignment)
    size_t sequence_length() const { return seq_.size(); }
    bool direct_io() const { return direct_; }
    WeightStreamStats stats() const;
    void reset_stats();

private:
    void start();
    void stop();
    void io_loop();
    void read_item(size_t item, uint8_t* slot);

    std::string path_;
    UniqueFd fd_;
    bool direct_ = false;
    std::vector<StreamedTensor> seq_;
    size_t slots_ = 0, slot_bytes_ = 0;
    uint8_t* ring_ = nullptr;
    std::vector<size_t> skew_;   // per item: its offset's distance past the aligned start
    std::vector<uint32_t> crc_;  // per item: CRC32C of its bytes at open

    // Items are numbered from the start of the stream (k -> sequence item k % n, slot
    // k % slots). The I/O thread reads k once k - released_ < slots; acquire(k) waits
    // until ready_ > k.
    std::atomic<uint64_t> ready_{0}, released_{0};
    uint64_t acquired_ = 0;
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::condition_variable cv_;  // ready_ or released_ moved, or stop_
    std::exception_ptr error_;    // the I/O thread's, rethrown by acquire()
    std::thread io_;

    mutable std::mutex stats_mu_;
    WeightStreamStats stats_;
};

}  // namespace lm
