#include "common/kernel_choice.h"

#include <cstdlib>

#include "common/cpu.h"

namespace lm {
namespace {

struct Ladder {
    const char* name;
    int rank;
};
constexpr Ladder kLadder[] = {
    {"scalar", 0}, {"neon_dotprod", 1}, {"avx2", 1}, {"avx_vnni", 2}, {"avx512_vnni", 3}};

struct Request {
    int cap = 1 << 30;
    std::string error;
};

// LOCALMEM_KERNEL, read once.
const Request& request() {
    static const Request r = [] {
        Request out;
        const char* forced = std::getenv("LOCALMEM_KERNEL");
        if (forced == nullptr || *forced == '\0') return out;
        if (cpu_runs(forced)) {
            out.cap = isa_rank(forced);
            return out;
        }
        std::string names, best = "scalar";
        for (const Ladder& l : kLadder)
            if (cpu_runs(l.name)) {
                names += std::string(names.empty() ? "" : ", ") + l.name;
                best = l.name;
            }
        out.error = std::string("LOCALMEM_KERNEL=") + forced +
                    " is not a kernel this CPU and build can run (available: " + names +
                    "); using " + best;
        return out;
    }();
    return r;
}

}  // namespace

int isa_rank(const std::string& name) {
    for (const Ladder& l : kLadder)
        if (name == l.name) return l.rank;
    return -1;
}

bool cpu_runs(const std::string& name) {
    const CpuFeatures& f = cpu_features();
    if (name == "scalar") return true;
    if (name == "avx2") return f.avx2;
    if (name == "avx_vnni") return f.avx_vnni;
    if (name == "avx512_vnni") return f.avx512_vnni;
    if (name == "neon_dotprod") return f.neon_dotprod;
    return false;
}

int kernel_cap() { return request().cap; }

const std::string& kernel_request_error() { return request().error; }

}  // namespace lm
