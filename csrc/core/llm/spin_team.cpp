#include "llm/spin_team.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LM_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define LM_PAUSE() asm volatile("yield")
#else
#define LM_PAUSE() ((void)0)
#endif

namespace lm {

namespace {
// How long an idle worker spins before it sleeps: longer than the gap between two steps of
// a token (sampling in Python included), short enough that a finished reply frees the core.
constexpr auto kSpinFor = std::chrono::milliseconds(20);
}  // namespace

SpinTeam::SpinTeam(size_t threads) {
    for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker(i); });
}

SpinTeam::~SpinTeam() {
    stop_.store(true);
    {
        std::lock_guard<std::mutex> lk(mu_);
        epoch_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
}

void SpinTeam::work(size_t thread) {
    for (size_t i = next_.fetch_add(1, std::memory_order_relaxed); i < n_;
         i = next_.fetch_add(1, std::memory_order_relaxed)) {
        try {
            (*fn_)(i, thread);
        } catch (...) {
            std::lock_guard<std::mutex> lk(error_mu_);
            if (!error_) error_ = std::current_exception();
            next_.store(n_);
        }
    }
}

void SpinTeam::run(size_t n, const Task& fn) {
    if (n == 0) return;
    if (workers_.empty() || n == 1) {
        for (size_t i = 0; i < n; ++i) fn(i, 0);
        return;
    }
    fn_ = &fn;
    n_ = n;
    error_ = nullptr;
    next_.store(0, std::memory_order_relaxed);
    busy_.store(workers_.size(), std::memory_order_relaxed);
    // Sequentially consistent: either this load sees a worker about to sleep (and the lock
    // orders the wake-up after its check), or that worker's check sees the new epoch.
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
        {
            std::lock_guard<std::mutex> lk(mu_);
        }
        cv_.notify_all();
    }
    work(0);
    while (busy_.load(std::memory_order_acquire) != 0) LM_PAUSE();
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
}

void SpinTeam::worker(size_t index) {
    uint64_t seen = 0;
    for (;;) {
        auto until = std::chrono::steady_clock::now() + kSpinFor;
        unsigned spins = 0;
        while (epoch_.load(std::memory_order_acquire) == seen) {
            LM_PAUSE();
            if (++spins % 1024 == 0 && std::chrono::steady_clock::now() > until) {
                std::unique_lock<std::mutex> lk(mu_);
                sleepers_.fetch_add(1);
                cv_.wait(lk, [&] { return epoch_.load() != seen; });
                sleepers_.fetch_sub(1);
                break;
            }
        }
        seen = epoch_.load(std::memory_order_acquire);
        if (stop_.load()) return;
        work(index);
        busy_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

}  // namespace lm
