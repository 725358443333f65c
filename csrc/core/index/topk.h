// Bounded selection of the k best hits. "Best" is a total order: higher score first, and
// on equal scores the smaller id first, so results do not depend on thread count or on
// where a row sits in storage.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lm {

struct Hit {
    float score;
    int64_t id;
    uint32_t row;
};

inline bool better(const Hit& a, const Hit& b) {
    return a.score > b.score || (a.score == b.score && a.id < b.id);
}

class TopK {
public:
    explicit TopK(size_t k) : k_(k) { heap_.reserve(k); }

    // Scores below this cannot enter; equal ones may (they can win on id).
    float threshold() const { return heap_.size() < k_ ? -INFINITY : heap_.front().score; }

    void push(const Hit& h) {
        if (heap_.size() < k_) {
            heap_.push_back(h);
            std::push_heap(heap_.begin(), heap_.end(), better);  // front is the worst
        } else if (k_ > 0 && better(h, heap_.front())) {
            std::pop_heap(heap_.begin(), heap_.end(), better);
            heap_.back() = h;
            std::push_heap(heap_.begin(), heap_.end(), better);
        }
    }

    // Best first; leaves the selector empty.
    std::vector<Hit> take_sorted() {
        std::sort_heap(heap_.begin(), heap_.end(), better);
        return std::move(heap_);
    }

private:
    size_t k_;
    std::vector<Hit> heap_;
};

}  // namespace lm
