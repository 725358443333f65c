// The one kernel dispatcher. Every kernel family (the index's scoring kernels, the LLM
// engine's block kernels) names its kernel sets on one ladder of instruction sets, and each
// family takes, once, the best set this CPU runs. LOCALMEM_KERNEL=<name> caps the ladder at
// that set, to test a lower path on a machine that has a higher one (every family then runs
// its best set at or below it); it can never select a set the CPU lacks.
#pragma once

#include <string>
#include <vector>

namespace lm {

// A set's place on the ladder: scalar 0; neon_dotprod and avx2 1; avx_vnni 2; avx512_vnni
// 3. -1 for a name not on it.
int isa_rank(const std::string& name);

// Whether this CPU runs code written for that set.
bool cpu_runs(const std::string& name);

// The highest rank LOCALMEM_KERNEL allows: every set when it is unset or cannot be honoured.
int kernel_cap();

// Why LOCALMEM_KERNEL could not be honoured, or "" when it was (or was not set).
const std::string& kernel_request_error();

// The best of a family's sets this CPU runs (``available``: lowest first, scalar first)
// within the cap.
template <class K>
const K& choose_kernel(const std::vector<const K*>& available) {
    const K* best = available.front();
    const int cap = kernel_cap();
    for (const K* k : available)
        if (isa_rank(k->name) <= cap) best = k;
    return *best;
}

}  // namespace lm
