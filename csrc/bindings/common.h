// Argument checks shared by the binding files: each failure names the argument and the call
// that fixes it, and becomes localmem.errors.InvalidArgumentError.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/aead.h"
#include "common/errors.h"

namespace lm_py {

namespace py = pybind11;

// An optional store key as Python passes it (an _core.AeadKey or None).
using KeyArg = std::shared_ptr<lm::AeadKey>;

[[noreturn]] inline void invalid(const std::string& msg) { throw lm::InvalidArgument(msg); }

// py::gil_scoped_release, but safe for a daemon thread that comes back from native work
// while the interpreter shuts down: CPython < 3.14 then pthread_exit()s it inside
// PyEval_RestoreThread, a forced unwind. Through an (implicitly noexcept) destructor such
// as py::gil_scoped_release's, that unwind aborts the whole process ("terminate called
// without an active exception"); this destructor lets it pass, and pybind11 rethrows it.
class ReleaseGil {
public:
    ReleaseGil() : state_(PyEval_SaveThread()) {}
    ~ReleaseGil() noexcept(false) { PyEval_RestoreThread(state_); }
    ReleaseGil(const ReleaseGil&) = delete;
    ReleaseGil& operator=(const ReleaseGil&) = delete;

private:
    PyThreadState* state_;
};

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks that `obj` is a C-contiguous ndarray of T with `ndim` dimensions; the message
// names the argument and the call that fixes it.
template <class T>
py::array_t<T> require(const py::handle& obj, const char* name, const char* dtype_name, int ndim) {
    if (!py::isinstance<py::array>(obj))
        invalid(std::string(name) + " must be a numpy.ndarray, got " +
                std::string(Py_TYPE(obj.ptr())->tp_name) + "; wrap it with numpy.asarray(" + name +
                ", dtype=numpy." + dtype_name + ")");
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!a.dtype().is(py::dtype::of<T>()))
        invalid(std::string(name) + " must have dtype " + dtype_name + ", got " +
                std::string(py::str(a.dtype())) + "; convert it with " + name + ".astype(numpy." +
                dtype_name + ")");
    if (a.ndim() != ndim)
        invalid(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " +
                shape_str(a));
    if (!(a.flags() & py::array::c_style))
        invalid(std::string(name) + " must be C-contiguous; pass numpy.ascontiguousarray(" + name +
                ")");
    return py::reinterpret_borrow<py::array_t<T>>(obj);
}

// Copies a result vector into a fresh array (memcpy from an empty vector's null data()
// would be undefined even for zero bytes).
template <class T>
void copy_out(py::array_t<T>& dst, const std::vector<T>& src) {
    if (!src.empty()) std::memcpy(dst.mutable_data(), src.data(), src.size() * sizeof(T));
}

// The buffer of a bytes-like object (bytes, bytearray, memoryview, numpy array), held
// (and so locked against resizing) for as long as the returned buffer_info lives.
inline py::buffer_info bytes_of(const py::handle& obj, const char* name) {
    if (!PyObject_CheckBuffer(obj.ptr()))
        invalid(std::string(name) + " must be bytes-like (bytes, bytearray, memoryview), got " +
                Py_TYPE(obj.ptr())->tp_name + "; encode text with .encode('utf-8')");
    py::buffer_info info = py::reinterpret_borrow<py::buffer>(obj).request();
    if (!PyBuffer_IsContiguous(info.view(), 'C'))
        invalid(std::string(name) + " must be a contiguous buffer; pass bytes(" + name + ")");
    return info;
}

inline size_t nbytes(const py::buffer_info& b) { return static_cast<size_t>(b.size * b.itemsize); }

// Registers quantize, score_matrix and Int8Index (index.cpp).
void bind_index(py::module_& m);

// Registers Wal, BlobArena, FileLock and StoreWriter (storage.cpp).
void bind_storage(py::module_& m);

// Registers the native LLM engine: GGUF reader, block kernels, LlamaModel (llm.cpp).
void bind_llm(py::module_& m);

}  // namespace lm_py
