// Chooses the scoring kernel once, at first use, from what the CPU reports. The
// environment variable LOCALMEM_KERNEL may force a kernel this CPU runs (to test a lower
// path on a machine that has a higher one); it can never select one the CPU lacks.
#include <cstdlib>
#include <cstring>

#include "cpu.h"
#include "kernels.h"

namespace lm {
namespace {

bool cpu_runs(const Kernel* k) {
    const CpuFeatures& f = cpu_features();
    const std::string name = k->name;
    if (name == "scalar") return true;
    if (name == "avx2") return f.avx2;
    if (name == "avx_vnni") return f.avx_vnni;
    if (name == "avx512_vnni") return f.avx512_vnni;
    if (name == "neon_dotprod") return f.neon_dotprod;
    return false;
}

struct Choice {
    const Kernel* kernel = nullptr;
    std::string override_error;
};

Choice choose() {
    Choice c;
    const auto avail = available_kernels();
    c.kernel = avail.back();
    const char* forced = std::getenv("LOCALMEM_KERNEL");
    if (forced == nullptr || *forced == '\0') return c;
    if (const Kernel* k = find_kernel(forced)) {
        c.kernel = k;
        return c;
    }
    std::string names;
    for (const Kernel* k : avail) names += std::string(names.empty() ? "" : ", ") + k->name;
    c.override_error = std::string("LOCALMEM_KERNEL=") + forced +
                       " is not a kernel this CPU and build can run (available: " + names +
                       "); using " + c.kernel->name;
    return c;
}

const Choice& choice() {
    static const Choice c = choose();
    return c;
}

}  // namespace

void prepare_copy(const int8_t* codes, size_t stride, uint8_t* out) {
    std::memcpy(out, codes, stride);
}

void prepare_offset(const int8_t* codes, size_t stride, uint8_t* out) {
    for (size_t i = 0; i < stride; ++i) out[i] = static_cast<uint8_t>(codes[i]) ^ 0x80u;
}

std::vector<const Kernel*> compiled_kernels() {
    std::vector<const Kernel*> out;
    for (const Kernel* k :
         {kernel_scalar(), kernel_neon(), kernel_avx2(), kernel_avx_vnni(), kernel_avx512_vnni()})
        if (k != nullptr) out.push_back(k);
    return out;
}

std::vector<const Kernel*> available_kernels() {
    std::vector<const Kernel*> out;
    for (const Kernel* k : compiled_kernels())
        if (cpu_runs(k)) out.push_back(k);
    return out;
}

const Kernel* find_kernel(const std::string& name) {
    for (const Kernel* k : available_kernels())
        if (name == k->name) return k;
    return nullptr;
}

const Kernel& active_kernel() { return *choice().kernel; }

const std::string& kernel_override_error() { return choice().override_error; }

}  // namespace lm
