// Sealed files: a whole file encrypted and authenticated in chunks, for the files of an
// encrypted store that are written at once and read at once (the index snapshot). Written
// atomically like AtomicFileWriter; read back whole into memory (never mapped: the bytes on
// disk are ciphertext).
//
// On disk (little-endian):
//   header, 64 bytes: "LMSEALED" | u32 version=1 | u32 kind | u32 key id | u32 chunk bytes |
//                     zeros | u32 crc32c(bytes 0..60) at 60
//   chunks:           each AeadKey-sealed (nonce | ciphertext | tag), every one but the last
//                     holding exactly `chunk bytes` of plaintext; the last holds 0..chunk bytes.
//   A chunk's associated data is the header, its index, whether it is the last (STREAM) and
//   the file's name: chunks cannot be reordered, dropped, repeated, moved into another file
//   kind or another file, and a file cut at a chunk boundary fails authentication like one
//   cut inside a chunk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/aead.h"
#include "common/mapped_file.h"

namespace lm {

constexpr size_t kSealedHeader = 64;

// Whether the first bytes of a file are a sealed file's magic.
bool is_sealed_file(const uint8_t* data, size_t n);
// The key id a sealed file's header records (not yet checked: 0 if the header is cut).
uint32_t sealed_key_id(const uint8_t* data, size_t n);

class SealedFileWriter {
public:
    SealedFileWriter(std::string path, const AeadKey& key, uint32_t kind);
    SealedFileWriter(const SealedFileWriter&) = delete;
    SealedFileWriter& operator=(const SealedFileWriter&) = delete;

    void write(const void* data, size_t n);
    void pad_to(size_t offset);  // zeros up to `offset` bytes of plaintext
    size_t offset() const { return offset_; }
    void commit();  // seals the last chunk, then fsync + rename (AtomicFileWriter)

private:
    void seal_chunk(bool last);

    const AeadKey& key_;
    std::string name_;  // the final name (authenticated), not the temporary one
    AtomicFileWriter out_;
    uint8_t header_[kSealedHeader];
    std::vector<uint8_t> chunk_, sealed_;
    uint64_t index_ = 0;
    size_t offset_ = 0;
};

// The plaintext of a sealed file of `kind`. KeyMismatch if it was sealed with another key;
// CorruptFile (naming the file and the chunk) if it fails authentication or is cut.
std::shared_ptr<FileBytes> read_sealed_file(const std::string& path, const uint8_t* data, size_t n,
                                            const AeadKey& key, uint32_t kind);

}  // namespace lm
