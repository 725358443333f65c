// Authenticated encryption for what a store writes encrypted: XChaCha20-Poly1305 from
// Monocypher (csrc/third_party/monocypher; no hand-written cryptography). A sealed message is
// nonce (24 bytes) | ciphertext | tag (16 bytes), and the associated data (a record's header,
// a file's name) is authenticated with the message, not stored in it.
//
// Nonces never repeat under one key: each AeadKey object draws a random 128-bit prefix from
// the OS and counts the last 64 bits up, so a nonce costs no system call on the hot path (the
// log seals every record); a forked child draws its own prefix before its first seal. Two
// objects (or processes) holding one key share no state, and their prefixes collide with
// probability 2^-128 per pair.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
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

    // A 32-bit fingerprint of the key (keyed BLAKE2b of a fixed label; never 0), written in
    // the headers of encrypted files so that a file sealed with another key is told apart
    // from a damaged one. It reveals nothing usable about the key.
    uint32_t key_id() const { return key_id_; }

    // Seals n bytes into out (n + kAeadOverhead bytes). A null nonce takes the next unique
    // one (a given nonce is for tests: never seal two messages with one nonce).
    void seal(const uint8_t* plain, size_t n, const uint8_t* ad, size_t ad_n, uint8_t* out,
              const uint8_t* nonce = nullptr) const;
    std::vector<uint8_t> seal(const uint8_t* plain, size_t n, const uint8_t* ad, size_t ad_n) const;

    // Opens a sealed message of n bytes into out (n - kAeadOverhead bytes); false when it
    // fails authentication (damaged, cut, another key, other associated data) or is shorter
    // than the overhead, with out left zeroed.
    bool open(const uint8_t* sealed, size_t n, const uint8_t* ad, size_t ad_n, uint8_t* out) const;

    // A 16-byte MAC of n bytes (keyed BLAKE2b under a subkey of this key): for what must be
    // authenticated without being decrypted (an arena blob's header, checked at every scan).
    static constexpr size_t kMacBytes = 16;
    void mac(const uint8_t* data, size_t n, uint8_t out[kMacBytes]) const;

private:
    void next_nonce(uint8_t out[kAeadNonceBytes]) const;

    uint8_t key_[kAeadKeyBytes];
    uint8_t mac_key_[kAeadKeyBytes];  // one key, one construction: the MAC's is derived
    uint32_t key_id_;
    mutable std::mutex nonce_mu_;
    mutable uint8_t prefix_[16] = {};
    mutable uint64_t counter_ = 0;
    mutable uint64_t prefix_fork_ = ~uint64_t{0};  // fork generation the prefix was drawn in
};

using SharedKey = std::shared_ptr<const AeadKey>;

// Nonzero key ids as written in a header: 0 means "not encrypted".
inline uint32_t key_id_of(const SharedKey& key) { return key ? key->key_id() : 0; }

// Throws KeyMismatch, naming `what` (a file), unless the key id a file records (`found`, 0:
// plain) is the one the store opens it with (`expected`, 0: no key). Never damage: a file
// that fails this is left as it is.
void check_key_id(const std::string& what, uint32_t found, uint32_t expected);

}  // namespace lm
