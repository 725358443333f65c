// A small persistent pool of worker threads for batch search. Spawning threads per call
// would cost more than a single-query search at 100k vectors.
#pragma once

#include <cstddef>
#include <functional>

namespace lm {

// Number of hardware threads (at least 1).
size_t hardware_threads();

// Runs fn(i) for every i in [0, n) on up to `threads` threads, the caller included, and
// returns when all are done. The first exception thrown by fn is rethrown here. When the
// pool is already busy (a search running on another thread), the call runs serially on the
// caller rather than wait.
void parallel_for(size_t n, size_t threads, const std::function<void(size_t)>& fn);

}  // namespace lm
