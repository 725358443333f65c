// The index's bindings: quantization, the scoring kernels and Int8Index.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <string>

#include "common.h"
#include "index/int8_index.h"
#include "index/kernels.h"
#include "index/quantize.h"
#include "index/score_matrix.h"

namespace py = pybind11;
using lm_py::copy_out;
using lm_py::invalid;
using lm_py::ReleaseGil;
using lm_py::require;

namespace {

py::array_t<float> require_rows(const py::handle& obj, const char* name, size_t dim) {
    auto a = require<float>(obj, name, "float32", 2);
    if (static_cast<size_t>(a.shape(1)) != dim)
        invalid(std::string(name) + " have " + std::to_string(a.shape(1)) +
                " columns but the index has dim " + std::to_string(dim));
    return a;
}

const lm::Kernel& kernel_by_name(const std::optional<std::string>& name) {
    if (!name) return lm::active_kernel();
    if (const lm::Kernel* k = lm::find_kernel(*name)) return *k;
    std::string names;
    for (const lm::Kernel* k : lm::available_kernels())
        names += std::string(names.empty() ? "" : ", ") + k->name;
    invalid("kernel '" + *name +
            "' is not available on this CPU and build; choose one of: " + names);
}

lm::Metric metric_from(const std::string& m) {
    if (m == "ip") return lm::Metric::InnerProduct;
    if (m == "cos") return lm::Metric::Cosine;
    invalid("metric must be 'ip' (inner product) or 'cos' (cosine), got '" + m + "'");
}

}  // namespace

namespace lm_py {

void bind_index(py::module_& m) {
    m.def(
        "quantize",
        [](const py::handle& vectors) {
            auto v = require<float>(vectors, "vectors", "float32", 2);
            const size_t n = v.shape(0), dim = v.shape(1);
            if (dim == 0) invalid("vectors must have at least one column");
            py::array_t<int8_t> codes({n, dim});
            py::array_t<float> scales(n);
            const float* in = v.data();
            int8_t* out = codes.mutable_data();
            float* out_scales = scales.mutable_data();
            {
                const size_t stride = lm::code_stride(dim);
                std::vector<int8_t> padded(n * stride);
                ReleaseGil release;
                lm::quantize_rows(in, n, dim, padded.data(), stride, out_scales);
                for (size_t i = 0; i < n; ++i)
                    std::memcpy(out + i * dim, padded.data() + i * stride, dim);
            }
            return py::make_tuple(codes, scales);
        },
        py::arg("vectors"));

    m.def(
        "score_matrix",
        [](const py::handle& qcodes, const py::handle& qscales, const py::handle& codes,
           const py::handle& scales, const std::optional<std::string>& kernel) {
            auto q = require<int8_t>(qcodes, "query_codes", "int8", 2);
            auto qs = require<float>(qscales, "query_scales", "float32", 1);
            auto c = require<int8_t>(codes, "codes", "int8", 2);
            auto cs = require<float>(scales, "scales", "float32", 1);
            const size_t nq = q.shape(0), n = c.shape(0), dim = c.shape(1);
            if (static_cast<size_t>(q.shape(1)) != dim || dim == 0)
                invalid("query_codes and codes must have the same, non-zero, number of columns");
            if (static_cast<size_t>(qs.shape(0)) != nq || static_cast<size_t>(cs.shape(0)) != n)
                invalid("one scale per row is needed");
            for (const auto* arr : {&q, &c}) {
                const int8_t* p = arr->data();
                for (py::ssize_t i = 0; i < arr->size(); ++i)
                    if (p[i] == -128) invalid("codes must lie in [-127, 127]");
            }
            const lm::Kernel& k = kernel_by_name(kernel);
            py::array_t<float> out({nq, n});
            float* dst = out.mutable_data();
            {
                ReleaseGil release;
                auto s = lm::score_matrix(k, q.data(), qs.data(), nq, c.data(), cs.data(), n, dim);
                if (!s.empty()) std::memcpy(dst, s.data(), s.size() * sizeof(float));
            }
            return out;
        },
        py::arg("query_codes"), py::arg("query_scales"), py::arg("codes"), py::arg("scales"),
        py::arg("kernel") = py::none());

    m.def("available_kernels", [] {
        std::vector<std::string> names;
        for (const lm::Kernel* k : lm::available_kernels()) names.emplace_back(k->name);
        return names;
    });

    m.def(
        "measure_read_bandwidth",
        [](const py::handle& buffer, size_t repeats) {
            auto b = require<uint8_t>(buffer, "buffer", "uint8", 1);
            if (repeats == 0) invalid("repeats must be at least 1");
            ReleaseGil release;
            return lm::measure_read_bandwidth(b.data(), b.size(), repeats);
        },
        py::arg("buffer"), py::arg("repeats") = 5,
        "Best-of-repeats single-thread read bandwidth over a uint8 buffer, in bytes/s.");

    py::class_<lm::Int8Index>(m, "Int8Index")
        .def(py::init([](size_t dim, const std::string& metric) {
                 return std::make_unique<lm::Int8Index>(dim, metric_from(metric));
             }),
             py::arg("dim"), py::arg("metric") = "ip")
        .def_property_readonly("dim", &lm::Int8Index::dim)
        .def_property_readonly("metric",
                               [](const lm::Int8Index& ix) {
                                   return ix.metric() == lm::Metric::Cosine ? "cos" : "ip";
                               })
        .def("__len__", &lm::Int8Index::size)
        .def("__contains__", &lm::Int8Index::contains)
        .def("stats",
             [](const lm::Int8Index& ix) {
                 const lm::IndexStats s = ix.stats();
                 py::dict d;
                 d["live"] = s.live;
                 d["rows"] = s.rows;
                 d["tombstones"] = s.tombstones;
                 d["fp32_vectors"] = s.fp32_vectors;
                 d["memory_bytes"] = s.memory_bytes;
                 d["mapped"] = s.mapped;
                 return d;
             })
        .def(
            "add",
            [](lm::Int8Index& ix, const py::handle& ids, const py::handle& vectors,
               bool keep_fp32) {
                auto i = require<int64_t>(ids, "ids", "int64", 1);
                auto v = require_rows(vectors, "vectors", ix.dim());
                if (i.shape(0) != v.shape(0))
                    invalid("got " + std::to_string(i.shape(0)) + " ids for " +
                            std::to_string(v.shape(0)) + " vectors; pass one id per row");
                ReleaseGil release;
                ix.add(i.data(), v.data(), i.shape(0), keep_fp32);
            },
            py::arg("ids"), py::arg("vectors"), py::arg("keep_fp32") = false)
        .def(
            "remove",
            [](lm::Int8Index& ix, const py::handle& ids, bool missing_ok) {
                auto i = require<int64_t>(ids, "ids", "int64", 1);
                ReleaseGil release;
                return ix.remove(i.data(), i.shape(0), missing_ok);
            },
            py::arg("ids"), py::arg("missing_ok") = false)
        .def("compact",
             [](lm::Int8Index& ix) {
                 ReleaseGil release;
                 return ix.compact();
             })
        .def(
            "search",
            [](const lm::Int8Index& ix, const py::handle& queries, py::ssize_t k,
               const py::handle& allow, const py::handle& deny, py::ssize_t rerank,
               py::ssize_t threads, const std::optional<std::string>& kernel) {
                auto q = require_rows(queries, "queries", ix.dim());
                if (k <= 0) invalid("k must be at least 1, got " + std::to_string(k));
                if (rerank < 0) invalid("rerank must be 0 (off) or a factor >= 1");
                if (threads < 0) invalid("threads must be >= 0 (0 means every core)");
                lm::SearchOptions opt;
                opt.k = static_cast<size_t>(k);
                opt.rerank = static_cast<size_t>(rerank);
                opt.threads = static_cast<size_t>(threads);
                opt.kernel = &kernel_by_name(kernel);
                py::array_t<int64_t> allow_arr, deny_arr;
                if (!allow.is_none()) {
                    allow_arr = require<int64_t>(allow, "allow", "int64", 1);
                    opt.has_allow = true;
                    opt.allow = allow_arr.data();
                    opt.n_allow = allow_arr.shape(0);
                }
                if (!deny.is_none()) {
                    deny_arr = require<int64_t>(deny, "deny", "int64", 1);
                    opt.deny = deny_arr.data();
                    opt.n_deny = deny_arr.shape(0);
                }
                const size_t nq = q.shape(0);
                lm::SearchResult r;
                {
                    ReleaseGil release;
                    r = ix.search(q.data(), nq, opt);
                }
                py::array_t<int64_t> out_ids({nq, r.k});
                py::array_t<float> out_scores({nq, r.k});
                copy_out(out_ids, r.ids);
                copy_out(out_scores, r.scores);
                return py::make_tuple(out_ids, out_scores);
            },
            py::arg("queries"), py::arg("k"), py::arg("allow") = py::none(),
            py::arg("deny") = py::none(), py::arg("rerank") = 0, py::arg("threads") = 1,
            py::arg("kernel") = py::none())
        .def(
            "get_codes",
            [](const lm::Int8Index& ix, const py::handle& ids) {
                auto i = require<int64_t>(ids, "ids", "int64", 1);
                const size_t n = i.shape(0);
                py::array_t<int8_t> codes({n, ix.dim()});
                py::array_t<float> scales(n);
                int8_t* codes_out = codes.mutable_data();
                float* scales_out = scales.mutable_data();
                {
                    ReleaseGil release;
                    ix.get_codes(i.data(), n, codes_out, scales_out);
                }
                return py::make_tuple(codes, scales);
            },
            py::arg("ids"))
        .def(
            "save",
            [](lm::Int8Index& ix, const std::string& path, const KeyArg& key) {
                ReleaseGil release;
                ix.save(path, key.get());
            },
            py::arg("path"), py::arg("key") = py::none())
        .def_static(
            "load",
            [](const std::string& path, bool mmap, bool verify, const KeyArg& key) {
                ReleaseGil release;
                return lm::Int8Index::load(path, mmap, verify, key.get());
            },
            py::arg("path"), py::arg("mmap") = true, py::arg("verify") = true,
            py::arg("key") = py::none());
}

}  // namespace lm_py
