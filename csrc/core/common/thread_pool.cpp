#include "common/thread_pool.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace lm {
namespace {

class Pool {
public:
    void run(size_t n, size_t threads, const std::function<void(size_t)>& fn) {
        std::unique_lock<std::mutex> busy(submit_, std::try_to_lock);
        if (!busy.owns_lock()) return run_serial(n, fn);
        const size_t helpers = std::min(threads, n) - 1;
        ensure_workers(helpers);
        {
            std::lock_guard<std::mutex> lk(mu_);
            fn_ = &fn;
            n_ = n;
            next_.store(0);
            participants_ = helpers;
            finished_ = 0;
            error_ = nullptr;
            ++generation_;
        }
        wake_.notify_all();
        work();
        std::unique_lock<std::mutex> lk(mu_);
        done_.wait(lk, [&] { return finished_ == participants_; });
        fn_ = nullptr;
        if (error_) std::rethrow_exception(error_);
    }

private:
    static void run_serial(size_t n, const std::function<void(size_t)>& fn) {
        for (size_t i = 0; i < n; ++i) fn(i);
    }

    void ensure_workers(size_t count) {
        // A forked child inherits the pool object but not its threads: start afresh.
        if (owner_pid_ != getpid()) {
            for (auto& t : workers_) t.detach();
            workers_.clear();
            owner_pid_ = getpid();
        }
        while (workers_.size() < count) {
            const size_t index = workers_.size();
            workers_.emplace_back([this, index] { worker_loop(index); });
        }
    }

    void worker_loop(size_t index) {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(mu_);
                wake_.wait(lk, [&] { return generation_ != seen && index < participants_; });
                seen = generation_;
            }
            work();
            std::lock_guard<std::mutex> lk(mu_);
            if (++finished_ == participants_) done_.notify_one();
        }
    }

    void work() {
        for (size_t i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) {
            try {
                (*fn_)(i);
            } catch (...) {
                std::lock_guard<std::mutex> lk(error_mu_);
                if (!error_) error_ = std::current_exception();
                next_.store(n_);  // stop handing out work
            }
        }
    }

    std::mutex submit_;
    std::mutex mu_;
    std::mutex error_mu_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    pid_t owner_pid_ = getpid();
    const std::function<void(size_t)>* fn_ = nullptr;
    size_t n_ = 0;
    std::atomic<size_t> next_{0};
    size_t participants_ = 0;
    size_t finished_ = 0;
    uint64_t generation_ = 0;
    std::exception_ptr error_;
};

Pool& pool() {
    // Never destroyed: joining workers during interpreter shutdown can deadlock.
    static Pool* p = new Pool();
    return *p;
}

}  // namespace

size_t hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
}

void parallel_for(size_t n, size_t threads, const std::function<void(size_t)>& fn) {
    if (n == 0) return;
    if (threads <= 1 || n == 1) {
        for (size_t i = 0; i < n; ++i) fn(i);
        return;
    }
    pool().run(n, threads, fn);
}

}  // namespace lm
