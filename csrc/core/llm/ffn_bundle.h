// The row-column bundled FFN file, derived once from a GGUF: for neuron i of layer l, the
// up-projection row i (as stored in the GGUF) and the down-projection column i (requantized
// to Q8_0: a column of ggml's row-blocked down matrix is not a run of bytes) lie side by
// side, so that one read brings both (LLM in a flash, section 3.2). Bundles are padded to
// 512 bytes so a run of neurons is one aligned O_DIRECT read.
//
//   [0, 4096)   header: magic, shape, types, the source GGUF's size and header CRC, one
//               CRC32C per layer section, the header's own CRC in its last 4 bytes
//   4096 + (l * n_ff + i) * bundle_bytes:  up row | down column | zero padding
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "llm/gguf_file.h"

namespace lm {

constexpr size_t kBundleHeader = 4096;
constexpr size_t kBundleAlign = 512;

struct BundleLayout {
    uint32_t n_layer = 0, n_ff = 0, n_embd = 0;
    uint32_t up_type = 0, up_bytes = 0, down_bytes = 0, bundle_bytes = 0;
    uint64_t source_size = 0;
    uint32_t source_crc = 0;  // CRC32C of the GGUF's header (its bytes before the data)
    uint64_t layer_offset(size_t l) const {
        return kBundleHeader + uint64_t(l) * n_ff * bundle_bytes;
    }
    uint64_t file_bytes() const { return layer_offset(n_layer); }
};

// The layout a GGUF's bundle has (shapes and types checked; throws CorruptFile otherwise).
BundleLayout bundle_layout_for(const GgufFile& f);

// Writes the bundle of `f` to `path` atomically (a crash leaves no half file).
void build_ffn_bundle(const GgufFile& f, const std::string& path);

// An open bundle: header checked against the GGUF, every layer's CRC verified once at open
// (reading the file through, then dropping it from the page cache again).
class FfnBundle {
public:
    FfnBundle(const std::string& path, const GgufFile& source, bool direct_io);
    const BundleLayout& layout() const { return lay_; }
    const std::string& path() const { return path_; }
    bool direct_io() const { return direct_; }
    // Reads neurons [first, first + count) of `layer` into dst (aligned to kBundleAlign
    // when direct_io). Returns the bytes read.
    size_t read(size_t layer, size_t first, size_t count, uint8_t* dst) const;
    // Drops the file's pages from the page cache.
    void drop_cache() const;

private:
    std::string path_;
    BundleLayout lay_;
    UniqueFd fd_;
    bool direct_ = false;
};

}  // namespace lm
