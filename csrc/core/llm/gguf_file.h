// A GGUF file (llama.cpp's model format) opened read-only: header, scalar metadata and the
// tensor table, every length and offset checked against the file before it is used, so a
// damaged or hostile file is a CorruptFile error and never a read out of bounds. The
// tensor bytes stay in the mmap: a resident tensor is paged in on first touch. The one
// GGUF reader of localmem: the Python side reads a model's metadata through it too
// (``_core.gguf_metadata``: the header alone, for a file whose tensors need not be read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/mapped_file.h"

namespace lm {

// ggml tensor types this engine reads (ids are ggml's).
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8 };

// Elements per block and bytes per block of a type; false when the type is not supported.
bool ggml_type_layout(uint32_t type, size_t* block_elems, size_t* block_bytes);
const char* ggml_type_name(uint32_t type);

struct GgufTensor {
    std::string name;
    uint32_t type = 0;
    std::vector<uint64_t> ne;  // ne[0] is the contiguous dimension (a row's length)
    uint64_t offset = 0;       // from the start of the data section
    uint64_t bytes = 0;
    const uint8_t* data = nullptr;
    uint64_t rows() const;  // product of ne[1..]
    uint64_t row_bytes() const { return bytes / (rows() ? rows() : 1); }
};

struct GgufValue {
    enum Kind { Int, Float, Bool, String, Array } kind = Int;
    int64_t i = 0;
    bool unsigned64 = false;  // a uint64 value, held in i's bits
    double f = 0;
    std::string s;
    uint64_t array_len = 0;  // arrays are skipped, only their length kept
};

class GgufFile {
public:
    // ``header_only``: the key/value metadata alone; the tensor table is not read.
    explicit GgufFile(const std::string& path, bool header_only = false);

    const std::string& path() const { return path_; }
    size_t file_size() const { return bytes_->size(); }
    uint64_t data_offset() const { return data_offset_; }  // file offset of tensor data
    uint32_t version() const { return version_; }
    const std::map<std::string, GgufValue>& metadata() const { return meta_; }
    const uint8_t* base() const { return bytes_->data(); }

    const GgufValue* find(const std::string& key) const;
    int64_t get_int(const std::string& key) const;  // throws CorruptFile when absent
    int64_t get_int(const std::string& key, int64_t fallback) const;
    double get_float(const std::string& key, double fallback) const;
    std::string get_string(const std::string& key) const;

    const std::vector<GgufTensor>& tensors() const { return tensors_; }
    const GgufTensor* tensor(const std::string& name) const;   // nullptr when absent
    const GgufTensor& require(const std::string& name) const;  // throws CorruptFile

private:
    std::string path_;
    std::unique_ptr<FileBytes> bytes_;
    std::map<std::string, GgufValue> meta_;
    std::vector<GgufTensor> tensors_;
    std::map<std::string, size_t> by_name_;
    uint64_t data_offset_ = 0;
    uint32_t version_ = 0;
};

}  // namespace lm
