#include "llm/ffn_bundle.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/crc32c.h"
#include "common/errors.h"
#include "common/mapped_file.h"
#include "llm/qkernels.h"

namespace lm {

namespace {

constexpr char kMagic[8] = {'L', 'M', 'F', 'F', 'N', 'B', 'D', '1'};
constexpr size_t kFixed = 8 + 7 * 4 + 8 + 4;  // magic, 7 u32, source size, source crc

uint32_t source_crc(const GgufFile& f) { return crc32c(f.base(), size_t(f.data_offset())); }

void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint32_t get32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

}  // namespace

BundleLayout bundle_layout_for(const GgufFile& f) {
    BundleLayout L;
    const std::string arch = f.get_string("general.architecture");
    L.n_layer = uint32_t(f.get_int(arch + ".block_count"));
    L.n_ff = uint32_t(f.get_int(arch + ".feed_forward_length"));
    L.n_embd = uint32_t(f.get_int(arch + ".embedding_length"));
    const GgufTensor& up = f.require("blk.0.ffn_up.weight");
    if (L.n_layer == 0 || L.n_layer > (kBundleHeader - kFixed - 4) / 4 || L.n_embd % kQBlock ||
        up.ne.size() != 2 || up.ne[0] != L.n_embd || up.ne[1] != L.n_ff)
        throw CorruptFile(f.path() + ": its FFN shapes cannot be bundled");
    L.up_type = up.type;
    L.up_bytes = uint32_t(up.row_bytes());
    L.down_bytes = uint32_t(L.n_embd / kQBlock * 34);
    L.bundle_bytes =
        uint32_t((L.up_bytes + L.down_bytes + kBundleAlign - 1) / kBundleAlign * kBundleAlign);
    L.source_size = f.file_size();
    L.source_crc = source_crc(f);
    for (uint32_t l = 0; l < L.n_layer; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        const GgufTensor& u = f.require(p + "ffn_up.weight");
        const GgufTensor& d = f.require(p + "ffn_down.weight");
        if (u.type != L.up_type || u.ne != up.ne || d.ne.size() != 2 || d.ne[0] != L.n_ff ||
            d.ne[1] != L.n_embd)
            throw CorruptFile(f.path() + ": layer " + std::to_string(l) +
                              " has FFN shapes or types unlike layer 0");
    }
    return L;
}

void build_ffn_bundle(const GgufFile& f, const std::string& path) {
    const BundleLayout L = bundle_layout_for(f);
    std::vector<float> down(size_t(L.n_embd) * L.n_ff), col(L.n_embd);
    std::vector<uint8_t> layer(size_t(L.n_ff) * L.bundle_bytes);
    auto make_layer = [&](uint32_t l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        const GgufTensor& u = f.require(p + "ffn_up.weight");
        const GgufTensor& d = f.require(p + "ffn_down.weight");
        const size_t drow = d.row_bytes();
        for (size_t r = 0; r < L.n_embd; ++r)
            dequantize_row(d.type, d.data + r * drow, down.data() + r * L.n_ff, L.n_ff);
        std::fill(layer.begin(), layer.end(), 0);
        for (size_t i = 0; i < L.n_ff; ++i) {
            uint8_t* b = layer.data() + i * L.bundle_bytes;
            std::memcpy(b, u.data + i * L.up_bytes, L.up_bytes);
            for (size_t r = 0; r < L.n_embd; ++r) col[r] = down[r * L.n_ff + i];
            quantize_row_q8_0(col.data(), L.n_embd, b + L.up_bytes);
        }
    };
    // Two passes, so the header (with every layer's CRC) is written first, in order.
    std::vector<uint8_t> header(kBundleHeader, 0);
    std::memcpy(header.data(), kMagic, 8);
    const uint32_t fields[7] = {1,         L.n_layer,  L.n_ff,        L.n_embd,
                                L.up_type, L.up_bytes, L.bundle_bytes};
    std::memcpy(header.data() + 8, fields, sizeof(fields));
    std::memcpy(header.data() + 36, &L.source_size, 8);
    put32(header.data() + 44, L.source_crc);
    for (uint32_t l = 0; l < L.n_layer; ++l) {
        make_layer(l);
        put32(header.data() + kFixed + 4 * l, crc32c(layer.data(), layer.size()));
    }
    put32(header.data() + kBundleHeader - 4, crc32c(header.data(), kBundleHeader - 4));
    AtomicFileWriter out(path);
    out.write(header.data(), header.size());
    for (uint32_t l = 0; l < L.n_layer; ++l) {
        make_layer(l);
        out.write(layer.data(), layer.size());
    }
    out.commit();
}

FfnBundle::FfnBundle(const std::string& path, const GgufFile& source, bool direct_io)
    : path_(path), lay_(bundle_layout_for(source)), direct_(direct_io) {
    auto fail = [&](const std::string& why) -> CorruptFile {
        return CorruptFile(path_ + ": damaged FFN bundle (" + why +
                           "); delete it and it is rebuilt from the GGUF");
    };
    UniqueFd fd = open_file(path_, O_RDONLY);
    std::vector<uint8_t> h(kBundleHeader);
    if (pread_some(fd.get(), h.data(), h.size(), 0, path_) != h.size())
        throw fail("truncated header");
    if (std::memcmp(h.data(), kMagic, 8) != 0) throw fail("bad magic");
    if (get32(h.data() + kBundleHeader - 4) != crc32c(h.data(), kBundleHeader - 4))
        throw fail("header checksum mismatch");
    uint64_t src_size;
    std::memcpy(&src_size, h.data() + 36, 8);
    const uint32_t* fields = reinterpret_cast<const uint32_t*>(h.data() + 8);
    if (fields[0] != 1 || fields[1] != lay_.n_layer || fields[2] != lay_.n_ff ||
        fields[3] != lay_.n_embd || fields[4] != lay_.up_type || fields[5] != lay_.up_bytes ||
        fields[6] != lay_.bundle_bytes || src_size != lay_.source_size ||
        get32(h.data() + 44) != lay_.source_crc)
        throw fail("made from another model file");
    if (file_size(fd.get(), path_) != lay_.file_bytes()) throw fail("wrong size (truncated?)");
    std::vector<uint8_t> layer(size_t(lay_.n_ff) * lay_.bundle_bytes);
    for (uint32_t l = 0; l < lay_.n_layer; ++l) {
        if (pread_some(fd.get(), layer.data(), layer.size(), lay_.layer_offset(l), path_) !=
            layer.size())
            throw fail("truncated layer " + std::to_string(l));
        if (crc32c(layer.data(), layer.size()) != get32(h.data() + kFixed + 4 * l))
            throw fail("layer " + std::to_string(l) + " checksum mismatch");
    }
    ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
    if (direct_) {
        const int dfd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
        if (dfd < 0) throw_errno("cannot open with O_DIRECT", path_);
        fd_ = UniqueFd(dfd);
    } else {
        fd_ = std::move(fd);
        ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_RANDOM);
    }
}

size_t FfnBundle::read(size_t layer, size_t first, size_t count, uint8_t* dst) const {
    const size_t n = count * lay_.bundle_bytes;
    const uint64_t off = lay_.layer_offset(layer) + uint64_t(first) * lay_.bundle_bytes;
    if (pread_some(fd_.get(), dst, n, off, path_) != n)
        throw CorruptFile(path_ + ": FFN bundle shrank while in use; reopen the engine");
    return n;
}

void FfnBundle::drop_cache() const { ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_DONTNEED); }

}  // namespace lm
