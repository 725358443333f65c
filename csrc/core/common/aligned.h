// Cache-line aligned storage, and a column that is either owned or a read-only view into a
// mapped file (copied into owned memory on first write).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace lm {

template <class T>
struct AlignedAllocator {
    using value_type = T;
    AlignedAllocator() = default;
    template <class U>
    AlignedAllocator(const AlignedAllocator<U>&) {}
    T* allocate(size_t n) {
        const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
        void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
        if (p == nullptr) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, size_t) { std::free(p); }
    template <class U>
    bool operator==(const AlignedAllocator<U>&) const {
        return true;
    }
    template <class U>
    bool operator!=(const AlignedAllocator<U>&) const {
        return false;
    }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

template <class T>
class Column {
public:
    const T* data() const { return viewing_ ? view_ : own_.data(); }
    size_t size() const { return viewing_ ? view_size_ : own_.size(); }
    bool is_view() const { return viewing_; }

    // Owned storage for writing; a view is copied first.
    AlignedVector<T>& mut() {
        if (viewing_) {
            own_.assign(view_, view_ + view_size_);
            viewing_ = false;
            view_ = nullptr;
            view_size_ = 0;
        }
        return own_;
    }

    void set_view(const T* p, size_t n) {
        AlignedVector<T>().swap(own_);
        view_ = p;
        view_size_ = n;
        viewing_ = true;
    }

private:
    AlignedVector<T> own_;
    const T* view_ = nullptr;
    size_t view_size_ = 0;
    bool viewing_ = false;
};

}  // namespace lm
