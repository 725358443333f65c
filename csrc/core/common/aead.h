// Authenticated encryption for what a store writes encrypted: XChaCha20-Poly1305 from
// Monocypher (csrc/third_party/monocypher; no hand-written cryptography). A sealed message is
// nonce (24 bytes) | ciphertext | tag (16 bytes); the nonce is random (192 bits: collisions
// are out of reach however many messages one key seals), and the associated data (a record's
// header, a file's name) is authenticated with the message, not stored in it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lm {

constexpr size_t kAeadKeyBytes = 32;
constexpr size_t kAeadNonceBytes = 24;
constexpr size_t kAeadTagBytes = 16;
constexpr size_t kAeadOverhead = kAeadNonceBytes + kAeadTagBytes;

// Bytes from the operating system's CSPRNG (getentropy); throws IoError if it fails.
void random_bytes(void* out, size_t n);

class AeadKey {
public:
    explicit AeadKey(const uint8_t key[kAeadKeyBytes]);
    ~AeadKey();  // wipes the key
    AeadKey(const AeadKey&) = delete;
    AeadKey& operator=(const AeadKey&) = delete;

    // Seals n bytes into out (n + kAeadOverhead bytes). A null nonce draws a random one
    // (a given nonce is for tests: never seal two messages with one nonce).
    void seal(const uint8_t* plain, size_t n, const uint8_t* ad, size_t ad_n, uint8_t* out,
              const uint8_t* nonce = nullptr) const;
    std::vector<uint8_t> seal(const uint8_t* plain, size_t n, const uint8_t* ad, size_t ad_n) const;

    // Opens a sealed message of n bytes into out (n - kAeadOverhead bytes); false when it
    // fails authentication (damaged, cut, another key, other associated data) or is shorter
    // than the overhead, with out left zeroed.
    bool open(const uint8_t* sealed, size_t n, const uint8_t* ad, size_t ad_n, uint8_t* out) const;

private:
    uint8_t key_[kAeadKeyBytes];
};

}  // namespace lm
