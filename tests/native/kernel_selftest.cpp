// Compares every kernel this CPU runs with the scalar kernel, exactly, without Python.
// It is how the NEON kernel is checked from an x86 machine (see tests/native/README.md):
//   aarch64-linux-gnu-g++ -O2 -std=c++17 -static -I../../csrc/core kernel_selftest.cpp (cont.)
//       ../../csrc/core/{cpu,dispatch,score_matrix,kernels_*}.cpp -o selftest
//   qemu-aarch64 -cpu max ./selftest
#include <cstdio>
#include <random>
#include <vector>

#include "index/kernels.h"
#include "index/score_matrix.h"

int main() {
    std::mt19937 gen(42);
    std::uniform_int_distribution<int> code(-127, 127);
    std::uniform_real_distribution<float> scale(0.01f, 2.0f);
    const size_t dims[] = {1, 3, 15, 16, 17, 97, 384, 768, 1023};
    const lm::Kernel& scalar = *lm::kernel_scalar();
    int failures = 0, checks = 0;
    for (const lm::Kernel* k : lm::available_kernels()) {
        for (size_t dim : dims) {
            for (size_t nq : {1, 5, 9}) {
                const size_t n = 37;
                std::vector<int8_t> q(nq * dim), d(n * dim);
                std::vector<float> qs(nq), ds(n);
                for (auto& v : q) v = static_cast<int8_t>(code(gen));
                for (auto& v : d) v = static_cast<int8_t>(code(gen));
                for (auto& v : qs) v = scale(gen);
                for (auto& v : ds) v = scale(gen);
                const auto ref =
                    lm::score_matrix(scalar, q.data(), qs.data(), nq, d.data(), ds.data(), n, dim);
                const auto out =
                    lm::score_matrix(*k, q.data(), qs.data(), nq, d.data(), ds.data(), n, dim);
                ++checks;
                if (out != ref) {
                    ++failures;
                    std::printf("FAIL %s dim=%zu nq=%zu\n", k->name, dim, nq);
                }
            }
        }
        std::printf("kernel %-12s checked\n", k->name);
    }
    std::printf("active kernel: %s\n", lm::active_kernel().name);
    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}
