// The index's scoring kernels: which are compiled in, which this CPU runs, and the one in
// use, chosen once by the common dispatcher (common/kernel_choice.h, LOCALMEM_KERNEL).
#include "index/kernels.h"

#include <cstring>

#include "common/kernel_choice.h"

namespace lm {

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
        if (cpu_runs(k->name)) out.push_back(k);
    return out;
}

const Kernel* find_kernel(const std::string& name) {
    for (const Kernel* k : available_kernels())
        if (name == k->name) return k;
    return nullptr;
}

const Kernel& active_kernel() {
    static const Kernel& k = choose_kernel(available_kernels());
    return k;
}

}  // namespace lm
