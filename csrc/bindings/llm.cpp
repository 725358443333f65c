// Binding of the native LLM engine (csrc/core/llm): the GGUF reader, the block kernels (for
// tests against the scalar set and the gguf package) and LlamaModel. Arguments are checked
// here, under the GIL; the forward pass runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <string>

#include "common.h"
#include "llm/ffn_bundle.h"
#include "llm/gguf_file.h"
#include "llm/llama_model.h"
#include "llm/qkernels.h"

namespace lm_py {

namespace {

const lm::QKernels& qkernels_named(const std::string& name) {
    std::string names;
    for (const lm::QKernels* k : lm::qkernels_available()) {
        if (name == k->name) return *k;
        names += std::string(names.empty() ? "" : ", ") + k->name;
    }
    invalid("LLM kernel set '" + name + "' is not available here; choose one of: " + names);
}

size_t row_bytes(uint32_t type, size_t n) {
    size_t be = 0, bb = 0;
    if (!lm::ggml_type_layout(type, &be, &bb))
        invalid("ggml type " + std::to_string(type) +
                " is not supported (F32=0, F16=1, Q4_0=2, Q4_1=3, Q8_0=8)");
    if (n == 0 || n % be != 0)
        invalid("n must be a positive multiple of " + std::to_string(be) + " for " +
                lm::ggml_type_name(type) + ", got " + std::to_string(n));
    return n / be * bb;
}

// A metadata value as Python has it: an array as its length (the reader skips arrays).
py::object gguf_value(const lm::GgufValue& v) {
    switch (v.kind) {
        case lm::GgufValue::Int:
            return v.unsigned64 ? py::int_(static_cast<uint64_t>(v.i)) : py::int_(v.i);
        case lm::GgufValue::Float:
            return py::float_(v.f);
        case lm::GgufValue::Bool:
            return py::bool_(v.i != 0);
        case lm::GgufValue::String:
            return py::str(v.s);  // checked UTF-8 by the reader
        case lm::GgufValue::Array:
            return py::int_(v.array_len);
    }
    return py::none();
}

py::dict gguf_info(const std::string& path) {
    lm::GgufFile f(path);
    py::dict meta;
    py::list tensors;
    // Scalars only: the tokenizer's arrays are read by llama.cpp's vocabulary, not here.
    for (const char* k : {"general.architecture", "general.name", "general.alignment"}) {
        const lm::GgufValue* v = f.find(k);
        if (v != nullptr && (v->kind == lm::GgufValue::String || v->kind == lm::GgufValue::Int))
            meta[k] = gguf_value(*v);
    }
    for (const auto& t : f.tensors()) {
        py::dict d;
        d["name"] = t.name;
        d["type"] = t.type;
        d["type_name"] = lm::ggml_type_name(t.type);
        d["shape"] = t.ne;
        d["offset"] = f.data_offset() + t.offset;
        d["bytes"] = t.bytes;
        tensors.append(d);
    }
    py::dict out;
    out["metadata"] = meta;
    out["tensors"] = tensors;
    out["data_offset"] = f.data_offset();
    out["file_size"] = f.file_size();
    return out;
}

py::dict gguf_metadata(const std::string& path) {
    std::unique_ptr<lm::GgufFile> f;
    {
        ReleaseGil release;
        f = std::make_unique<lm::GgufFile>(path, /*header_only=*/true);
    }
    py::dict out;
    out["GGUF.version"] = f->version();
    for (const auto& [key, v] : f->metadata()) out[key.c_str()] = gguf_value(v);
    return out;
}

}  // namespace

py::dict plan_dict(const lm::LlamaModel& m) {
    py::dict d;
    const lm::WeightPlan* p = m.plan();
    if (p == nullptr) return d;
    d["budget"] = p->budget;
    d["pinned_bytes"] = p->pinned_bytes;
    d["streamed_bytes"] = p->streamed_bytes;
    d["resident_min"] = p->resident_min;
    d["slots"] = p->slots;
    d["slot_bytes"] = p->slot_bytes;
    d["ffn_pinned"] = p->ffn_pinned;
    d["ffn_streamed"] = p->ffn_streamed;
    d["direct_io"] = p->direct_io;
    d["streamed"] = p->streamed;
    return d;
}

void bind_llm(py::module_& m) {
    m.def("gguf_metadata", &gguf_metadata, py::arg("path"),
          "A GGUF file's key/value header: scalars and strings as values, arrays as their "
          "length, and GGUF.version. The tensor table is not read.");
    m.def("gguf_info", &gguf_info, py::arg("path"),
          "Header of a GGUF file as the native reader sees it (tensor table, a few keys).");
    m.def("llm_kernels_available", [] {
        py::list out;
        for (const lm::QKernels* k : lm::qkernels_available()) out.append(k->name);
        return out;
    });
    m.def("llm_kernel_active", [] { return std::string(lm::qkernels_active().name); });
    m.def(
        "dequantize",
        [](uint32_t type, const py::handle& data, size_t n) {
            auto a = require<uint8_t>(data, "data", "uint8", 1);
            const size_t need = row_bytes(type, n);
            if (size_t(a.shape(0)) < need)
                invalid("data holds " + std::to_string(a.shape(0)) + " bytes; " +
                        std::to_string(n) + " elements of " + lm::ggml_type_name(type) + " need " +
                        std::to_string(need));
            py::array_t<float> out(n);
            lm::dequantize_row(type, a.data(), out.mutable_data(), n);
            return out;
        },
        py::arg("type"), py::arg("data"), py::arg("n"));
    m.def(
        "quantize_q8_0",
        [](const py::handle& x) {
            auto a = require<float>(x, "x", "float32", 1);
            const size_t n = size_t(a.shape(0));
            const size_t nb = row_bytes(8, n);
            py::array_t<uint8_t> out(nb);
            lm::quantize_row_q8_0(a.data(), n, out.mutable_data());
            return out;
        },
        py::arg("x"));
    m.def(
        "llm_dot",
        [](const std::string& kernel, uint32_t type, const py::handle& w, const py::handle& x) {
            const lm::QKernels& k = qkernels_named(kernel);
            auto wa = require<uint8_t>(w, "w", "uint8", 1);
            auto xa = require<float>(x, "x", "float32", 1);
            const size_t n = size_t(xa.shape(0));
            if (size_t(wa.shape(0)) != row_bytes(type, n))
                invalid("w must be one row of " + std::to_string(n) + " " +
                        lm::ggml_type_name(type) + " elements (" +
                        std::to_string(row_bytes(type, n)) + " bytes)");
            std::vector<lm::Q8Block> q((n + lm::kQBlock - 1) / lm::kQBlock);
            if (n % lm::kQBlock == 0) lm::quantize_q8(xa.data(), n, q.data());
            return lm::dot_row(k, type, wa.data(), q.data(), xa.data(), n);
        },
        py::arg("kernel"), py::arg("type"), py::arg("w"), py::arg("x"),
        "One weight row . x with a named kernel set (x quantized to Q8 blocks as the engine "
        "does).");
    m.def(
        "llm_axpy_q8_0",
        [](const std::string& kernel, float a, const py::handle& w, const py::handle& y) {
            const lm::QKernels& k = qkernels_named(kernel);
            auto wa = require<uint8_t>(w, "w", "uint8", 1);
            auto ya = require<float>(y, "y", "float32", 1);
            const size_t n = size_t(ya.shape(0));
            if (size_t(wa.shape(0)) != row_bytes(8, n))
                invalid("w must be one Q8_0 row of y's length");
            k.axpy_q8_0(a, wa.data(), ya.mutable_data(), n);
        },
        py::arg("kernel"), py::arg("a"), py::arg("w"), py::arg("y"));

    m.def(
        "llm_attend",
        [](const std::string& kernel, const py::handle& k, const py::handle& v,
           const py::handle& q) {
            const lm::QKernels& kk = qkernels_named(kernel);
            auto ka = require<float>(k, "k", "float32", 2);
            auto va = require<float>(v, "v", "float32", 2);
            auto qa = require<float>(q, "q", "float32", 1);
            const size_t npos = size_t(ka.shape(0)), hd = size_t(ka.shape(1));
            if (va.shape(0) != ka.shape(0) || va.shape(1) != ka.shape(1) ||
                size_t(qa.shape(0)) != hd)
                invalid("k and v must both be (positions, head_dim) and q (head_dim,)");
            if (npos == 0 || hd == 0 || hd % 16 != 0)
                invalid("need at least one position and a head_dim that is a multiple of 16");
            std::vector<uint16_t> k16(npos * hd), v16(npos * hd);
            kk.to_f16(ka.data(), k16.data(), npos * hd);
            kk.to_f16(va.data(), v16.data(), npos * hd);
            std::vector<float> qr(qa.data(), qa.data() + hd), s(npos + 16), acc(16 * hd);
            kk.round_f16(qr.data(), hd);
            py::array_t<float> out(hd);
            kk.attend_f16(k16.data(), v16.data(), hd, qr.data(), hd, npos,
                          1.0f / std::sqrt(float(hd)), s.data(), acc.data(), out.mutable_data());
            return out;
        },
        py::arg("kernel"), py::arg("k"), py::arg("v"), py::arg("q"),
        "One query row of attention with a named kernel set: k, v (positions, head_dim) and q "
        "rounded to f16 as in the engine's KV cache.");
    m.def(
        "llm_silu",
        [](const std::string& kernel, const py::handle& x) {
            const lm::QKernels& k = qkernels_named(kernel);
            auto a = require<float>(x, "x", "float32", 1);
            py::array_t<float> out(a.shape(0));
            k.silu(a.data(), out.mutable_data(), size_t(a.shape(0)));
            return out;
        },
        py::arg("kernel"), py::arg("x"));

    m.def(
        "build_ffn_bundle",
        [](const std::string& gguf_path, const std::string& out_path) {
            ReleaseGil nogil;
            lm::GgufFile f(gguf_path);
            lm::build_ffn_bundle(f, out_path);
        },
        py::arg("gguf_path"), py::arg("out_path"),
        "Writes the row-column bundled FFN file of a GGUF (atomically).");

    py::class_<lm::LlamaModel>(m, "LlamaModel")
        .def(py::init([](const std::string& path, size_t n_ctx, size_t threads) {
                 std::shared_ptr<const lm::GgufFile> f;
                 {
                     ReleaseGil nogil;
                     f = std::make_shared<lm::GgufFile>(path);
                 }
                 lm::LlamaOptions o;
                 o.n_ctx = n_ctx;
                 o.threads = threads;
                 return std::make_unique<lm::LlamaModel>(f, o);
             }),
             py::arg("path"), py::arg("n_ctx"), py::arg("threads"))
        .def_property_readonly("config",
                               [](const lm::LlamaModel& m) {
                                   const auto& c = m.config();
                                   py::dict d;
                                   d["n_vocab"] = c.n_vocab;
                                   d["n_embd"] = c.n_embd;
                                   d["n_layer"] = c.n_layer;
                                   d["n_head"] = c.n_head;
                                   d["n_head_kv"] = c.n_head_kv;
                                   d["head_dim"] = c.head_dim;
                                   d["n_ff"] = c.n_ff;
                                   d["n_ctx_train"] = c.n_ctx_train;
                                   d["rope_base"] = c.rope_base;
                                   d["rms_eps"] = c.rms_eps;
                                   return d;
                               })
        .def_property_readonly("n_ctx", &lm::LlamaModel::n_ctx)
        .def_property_readonly("n_past", &lm::LlamaModel::n_past)
        .def_property_readonly("threads", &lm::LlamaModel::threads)
        .def_property_readonly("weight_bytes", &lm::LlamaModel::weight_bytes)
        .def_property_readonly("kernel", [](const lm::LlamaModel& m) { return m.kernels().name; })
        .def("truncate", &lm::LlamaModel::truncate, py::arg("n"))
        .def_property_readonly("resident_weight_bytes", &lm::LlamaModel::resident_weight_bytes)
        .def(
            "enable_streaming",
            [](lm::LlamaModel& m, const std::string& bundle, bool direct_io, float keep, int rule,
               size_t cache_neurons, float cache_bias, bool trace) {
                lm::StreamOptions o;
                o.trace = trace;
                o.keep = keep;
                o.rule = lm::NeuronRule(rule);
                o.cache_neurons = cache_neurons;
                o.cache_bias = cache_bias;
                ReleaseGil nogil;
                m.enable_streaming(bundle, direct_io, o);
            },
            py::arg("bundle"), py::arg("direct_io"), py::arg("keep"), py::arg("rule") = 0,
            py::arg("cache_neurons") = 0, py::arg("cache_bias") = 0.0f, py::arg("trace") = false,
            "Neuron mode: per token and layer the top `keep` share of neurons by "
            "|SiLU(g)*u| (rule 0; gate and up resident) or |SiLU(g)| (rule 1) are used, their "
            "down columns read from the bundle unless an LRU cache of `cache_neurons` per "
            "layer holds them; a cached neuron's score counts (1 + cache_bias) times.")
        .def("stream_stats",
             [](const lm::LlamaModel& m) {
                 py::dict d;
                 const lm::FfnStream* s = m.stream();
                 if (s == nullptr) return d;
                 const auto& st = s->stats();
                 d["token_layers"] = st.token_layers;
                 d["bytes_read"] = st.bytes_read;
                 d["reads"] = st.reads;
                 d["neurons_active"] = st.neurons_active;
                 d["neurons_missing"] = st.neurons_missing;
                 d["neurons_read"] = st.neurons_read;
                 d["slots_per_layer"] = s->slots_per_layer();
                 d["bundle_bytes"] = s->bundle().layout().bundle_bytes;
                 d["streamed_bytes_per_token"] =
                     uint64_t(s->bundle().layout().file_bytes() - lm::kBundleHeader);
                 return d;
             })
        .def(
            "plan_memory",
            [](lm::LlamaModel& m, size_t budget, bool direct_io, size_t max_slots) {
                {
                    ReleaseGil nogil;
                    m.plan_memory(budget, direct_io, max_slots);
                }
                return plan_dict(m);
            },
            py::arg("budget"), py::arg("direct_io") = true, py::arg("max_slots") = 8,
            "Fits the weights into `budget` bytes: pins embeddings/head, norms, attention and "
            "whole FFN tensors while the budget lasts, streams the other FFN tensors from the "
            "file on every pass. Returns the plan.")
        .def_property_readonly("min_budget", &lm::LlamaModel::min_budget)
        .def("plan", &plan_dict)
        .def("weight_stream_stats",
             [](const lm::LlamaModel& m) {
                 py::dict d;
                 const lm::WeightStream* w = m.weight_stream();
                 if (w == nullptr) return d;
                 const lm::WeightStreamStats st = w->stats();
                 d["bytes_read"] = st.bytes_read;
                 d["reads"] = st.reads;
                 d["tensors"] = st.tensors;
                 d["wait_seconds"] = double(st.wait_ns) * 1e-9;
                 d["io_seconds"] = double(st.io_ns) * 1e-9;
                 d["sequence_length"] = w->sequence_length();
                 d["sequence_bytes"] = w->sequence_bytes();
                 return d;
             })
        .def("reset_weight_stream_stats",
             [](lm::LlamaModel& m) {
                 if (m.weight_stream() != nullptr) m.weight_stream()->reset_stats();
             })
        .def(
            "stream_trace",
            [](const lm::LlamaModel& m) {
                py::list out;
                const lm::FfnStream* s = m.stream();
                if (s == nullptr) return out;
                auto arr = [](const std::vector<uint16_t>& v) {
                    py::array_t<uint16_t> a(py::ssize_t(v.size()));
                    std::copy(v.begin(), v.end(), a.mutable_data());
                    return a;
                };
                for (const auto& e : s->trace())
                    out.append(py::make_tuple(e.layer, e.pos, arr(e.active), arr(e.missing)));
                return out;
            },
            "With trace=True: (layer, position, active ids, missing ids) per FFN call, since "
            "the last reset_stream_stats().")
        .def("reset_stream_stats",
             [](lm::LlamaModel& m) {
                 if (m.stream() != nullptr) m.stream()->reset_stats();
             })
        .def("drop_stream_cache",
             [](lm::LlamaModel& m) {
                 if (m.stream() != nullptr) m.stream()->bundle().drop_cache();
             })
        .def("remove", &lm::LlamaModel::remove, py::arg("begin"), py::arg("end"),
             "Cuts cached positions [begin, end) out; later ones move back.")
        .def(
            "eval",
            [](lm::LlamaModel& m, const py::handle& tokens, bool all_logits) {
                auto t = require<int32_t>(tokens, "tokens", "int32", 1);
                const size_t n = size_t(t.shape(0));
                if (n == 0) invalid("tokens is empty: pass at least one token id");
                const size_t rows = all_logits ? n : 1;
                py::array_t<float> out({rows, m.config().n_vocab});
                float* o = out.mutable_data();
                {
                    ReleaseGil nogil;
                    m.eval(t.data(), n, all_logits, o);
                }
                return out;
            },
            py::arg("tokens"), py::arg("all_logits") = false,
            "Evaluates tokens after the cached ones; logits of the last token (1, n_vocab) "
            "or of every token (n, n_vocab).");
}

}  // namespace lm_py
