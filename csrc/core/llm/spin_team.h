// The engine's threads: a fixed team that spins between the ~150 parallel steps of one
// token (a matrix-vector product takes tens of microseconds, less than a condition
// variable's wake-up), and sleeps after a short idle spell so an idle engine costs no CPU.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lm {

class SpinTeam {
public:
    using Task = std::function<void(size_t task, size_t thread)>;

    explicit SpinTeam(size_t threads);  // threads >= 1, the caller included
    ~SpinTeam();
    SpinTeam(const SpinTeam&) = delete;
    SpinTeam& operator=(const SpinTeam&) = delete;

    size_t size() const { return workers_.size() + 1; }
    // Runs fn(i, thread) for every i in [0, n); thread is in [0, size()). Tasks are claimed
    // one at a time; the first exception is rethrown here after every thread is done.
    void run(size_t n, const Task& fn);

private:
    void worker(size_t index);
    void work(size_t thread);

    std::vector<std::thread> workers_;
    std::atomic<uint64_t> epoch_{0};
    std::atomic<size_t> next_{0};
    std::atomic<size_t> busy_{0};
    std::atomic<bool> stop_{false};
    std::atomic<int> sleepers_{0};
    const Task* fn_ = nullptr;
    size_t n_ = 0;
    std::mutex mu_;
    std::condition_variable cv_;
    std::mutex error_mu_;
    std::exception_ptr error_;
};

}  // namespace lm
