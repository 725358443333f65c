// The module: turns core exceptions into localmem.errors classes, reports how the core was
// built, and registers each part's bindings (index.cpp, storage.cpp, llm.cpp), which convert
// and validate arguments under the GIL and release it for the native work. No logic here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <optional>
#include <string>

#include "common.h"
#include "common/aead.h"
#include "common/cpu.h"
#include "common/crc32c.h"
#include "common/errors.h"
#include "common/kernel_choice.h"
#include "common/sealed_file.h"
#include "common/thread_pool.h"
#include "index/kernels.h"

namespace py = pybind11;
using lm_py::bytes_of;
using lm_py::invalid;
using lm_py::nbytes;
using lm_py::ReleaseGil;
using lm_py::require;

#ifndef LOCALMEM_VERSION
#define LOCALMEM_VERSION "0.0.0"
#endif

namespace {

void raise_as(const char* cls, const char* msg) {
    py::object type = py::module_::import("localmem.errors").attr(cls);
    PyErr_SetString(type.ptr(), msg);
}

py::dict build_info() {
    py::dict d;
    d["version"] = LOCALMEM_VERSION;
    d["kernel"] = lm::active_kernel().name;
    py::list avail, compiled;
    for (const lm::Kernel* k : lm::available_kernels()) avail.append(k->name);
    for (const lm::Kernel* k : lm::compiled_kernels()) compiled.append(k->name);
    d["kernels_available"] = avail;
    d["kernels_compiled"] = compiled;
    d["kernel_override_error"] = lm::kernel_request_error();
    d["cpu_features"] = lm::cpu_feature_string();
    d["hardware_threads"] = lm::hardware_threads();
#if defined(__clang__)
    d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = std::string("gcc ") + __VERSION__;
#endif
#ifdef LOCALMEM_CXX_FLAGS
    d["cxx_flags"] = LOCALMEM_CXX_FLAGS;
#else
    d["cxx_flags"] = "";
#endif
#ifdef LOCALMEM_NATIVE_BUILD
    d["march_native"] = true;
#else
    d["march_native"] = false;
#endif
#ifdef NDEBUG
    d["debug"] = false;
#else
    d["debug"] = true;
#endif
    return d;
}

// The key's bytes where Python holds them: no copy that would outlive the call unwiped.
const uint8_t* key_bytes(const py::bytes& key) {
    char* p = nullptr;
    Py_ssize_t n = 0;
    if (PyBytes_AsStringAndSize(key.ptr(), &p, &n) != 0) throw py::error_already_set();
    if (static_cast<size_t>(n) != lm::kAeadKeyBytes) invalid("key must be 32 bytes");
    return reinterpret_cast<const uint8_t*>(p);
}

lm::AeadKey key_of(const py::bytes& key) { return lm::AeadKey(key_bytes(key)); }

py::bytes seal(const lm::AeadKey& key, const py::buffer& data, const py::bytes& ad,
               const std::optional<py::bytes>& nonce) {
    const std::string a = ad;
    std::string n;
    if (nonce) {
        n = *nonce;
        if (n.size() != lm::kAeadNonceBytes) invalid("nonce must be 24 bytes");
    }
    const py::buffer_info info = bytes_of(data, "data");
    const size_t len = nbytes(info);
    std::string out(len + lm::kAeadOverhead, '\0');
    {
        ReleaseGil release;
        key.seal(static_cast<const uint8_t*>(info.ptr), len,
                 reinterpret_cast<const uint8_t*>(a.data()), a.size(),
                 reinterpret_cast<uint8_t*>(out.data()),
                 nonce ? reinterpret_cast<const uint8_t*>(n.data()) : nullptr);
    }
    return py::bytes(out);
}

py::bytes open_sealed(const lm::AeadKey& key, const py::buffer& sealed, const py::bytes& ad) {
    const std::string a = ad;
    const py::buffer_info info = bytes_of(sealed, "sealed");
    const size_t len = nbytes(info);
    std::string out(len >= lm::kAeadOverhead ? len - lm::kAeadOverhead : 0, '\0');
    bool ok;
    {
        ReleaseGil release;
        ok = key.open(static_cast<const uint8_t*>(info.ptr), len,
                      reinterpret_cast<const uint8_t*>(a.data()), a.size(),
                      reinterpret_cast<uint8_t*>(out.data()));
    }
    if (!ok)
        throw lm::CorruptFile(
            "sealed data failed authentication: it was damaged or cut short, or it was sealed "
            "with another key or other associated data");
    return py::bytes(out);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "localmem native core (private: use the localmem package)";

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const lm::DuplicateId& e) {
            raise_as("DuplicateIdError", e.what());
        } catch (const lm::InvalidArgument& e) {
            raise_as("InvalidArgumentError", e.what());
        } catch (const lm::UnknownId& e) {
            raise_as("UnknownIdError", e.what());
        } catch (const lm::CorruptFile& e) {
            raise_as("CorruptFileError", e.what());
        } catch (const lm::KeyMismatch& e) {
            raise_as("EncryptionKeyError", e.what());
        } catch (const lm::IoError& e) {
            const bool full = e.code == ENOSPC || e.code == EDQUOT;
            raise_as(full ? "StorageFullError" : "StorageError", e.what());
        } catch (const lm::LockTimeout& e) {
            raise_as("StoreLockedError", e.what());
        } catch (const lm::StaleState& e) {
            raise_as("ConcurrencyError", e.what());
        }
    });

    m.def("build_info", &build_info, "Version, compiler, CPU features and the kernel in use.");
    m.def("hardware_threads", &lm::hardware_threads);

    m.def(
        "crc32c",
        [](const py::buffer& data, uint32_t crc, bool portable) {
            const py::buffer_info info = bytes_of(data, "data");
            const size_t n = nbytes(info);
            ReleaseGil release;
            return portable ? lm::crc32c_portable(info.ptr, n, crc) : lm::crc32c(info.ptr, n, crc);
        },
        py::arg("data"), py::arg("crc") = 0, py::arg("portable") = false);

    // A store's data key, held natively: the log, the arena and the index seal with it
    // without the GIL. The Python bytes it was made from are the caller's to drop.
    py::class_<lm::AeadKey, lm_py::KeyArg>(m, "AeadKey")
        .def(py::init([](const py::bytes& key) {
                 return std::make_shared<lm::AeadKey>(key_bytes(key));
             }),
             py::arg("key"))
        .def_property_readonly("key_id", &lm::AeadKey::key_id)
        .def(
            "seal",
            [](const lm::AeadKey& key, const py::buffer& data, const py::bytes& ad,
               const std::optional<py::bytes>& nonce) { return seal(key, data, ad, nonce); },
            py::arg("data"), py::arg("ad") = py::bytes(), py::arg("nonce") = py::none(),
            "XChaCha20-Poly1305: nonce (24 bytes, unique unless given) | ciphertext | tag (16).")
        .def(
            "open",
            [](const lm::AeadKey& key, const py::buffer& sealed, const py::bytes& ad) {
                return open_sealed(key, sealed, ad);
            },
            py::arg("sealed"), py::arg("ad") = py::bytes(),
            "Opens what seal sealed; CorruptFileError if it fails authentication.");
    m.def(
        "aead_seal",
        [](const py::bytes& key, const py::buffer& data, const py::bytes& ad,
           const std::optional<py::bytes>& nonce) { return seal(key_of(key), data, ad, nonce); },
        py::arg("key"), py::arg("data"), py::arg("ad") = py::bytes(), py::arg("nonce") = py::none(),
        "AeadKey(key).seal(data, ad, nonce), for a key used once.");
    m.def(
        "aead_open",
        [](const py::bytes& key, const py::buffer& sealed, const py::bytes& ad) {
            return open_sealed(key_of(key), sealed, ad);
        },
        py::arg("key"), py::arg("sealed"), py::arg("ad") = py::bytes(),
        "AeadKey(key).open(sealed, ad), for a key used once.");

    // Whole files sealed in STREAM chunks (common/sealed_file.h): sync segments.
    m.def(
        "write_sealed",
        [](const std::string& path, const lm::AeadKey& key, uint32_t kind, const py::buffer& data) {
            const py::buffer_info info = bytes_of(data, "data");
            const size_t n = nbytes(info);
            ReleaseGil release;
            lm::SealedFileWriter out(path, key, kind);
            out.write(info.ptr, n);
            out.commit();
        },
        py::arg("path"), py::arg("key"), py::arg("kind"), py::arg("data"),
        "Writes data to path sealed (atomically: a temporary file, fsync, rename).");
    m.def(
        "read_sealed",
        [](const std::string& path, const lm::AeadKey& key, uint32_t kind) {
            std::shared_ptr<lm::FileBytes> plain;
            {
                ReleaseGil release;
                auto file = std::make_shared<lm::FileBytes>(path, false);
                plain = lm::read_sealed_file(path, file->data(), file->size(), key, kind);
            }
            return py::bytes(reinterpret_cast<const char*>(plain->data()), plain->size());
        },
        py::arg("path"), py::arg("key"), py::arg("kind"),
        "What write_sealed wrote; CorruptFileError if any chunk fails authentication (a "
        "file cut or still being copied), EncryptionKeyError if another key sealed it.");

    lm_py::bind_index(m);
    lm_py::bind_storage(m);
    lm_py::bind_llm(m);
}
