#include "common/aead.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "common/errors.h"
#include "monocypher/monocypher.h"

namespace lm {

void random_bytes(void* out, size_t n) {
    auto* p = static_cast<uint8_t*>(out);
    while (n > 0) {
        const size_t k = std::min<size_t>(n, 256);  // getentropy's limit per call
        if (::getentropy(p, k) != 0)
            throw IoError("the operating system gave no random bytes (getentropy: " +
                              std::string(std::strerror(errno)) + ")",
                          errno);
        p += k;
        n -= k;
    }
}

namespace {

// Bumped in every forked child, so a key object copied into it by fork() draws a new nonce
// prefix instead of continuing its parent's count (two processes, one nonce).
std::atomic<uint64_t> g_fork_generation{0};
void on_fork_child() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }
const int g_fork_hook = ::pthread_atfork(nullptr, nullptr, on_fork_child);

}  // namespace

AeadKey::AeadKey(const uint8_t key[kAeadKeyBytes]) {
    (void)g_fork_hook;
    std::memcpy(key_, key, kAeadKeyBytes);
    static const char label[] = "localmem key id";
    uint8_t h[8];
    crypto_blake2b_keyed(h, sizeof h, key_, sizeof key_, reinterpret_cast<const uint8_t*>(label),
                         sizeof label - 1);
    uint32_t id;
    std::memcpy(&id, h, sizeof id);
    key_id_ = id == 0 ? 1 : id;
    crypto_wipe(h, sizeof h);
    static const char mac_label[] = "localmem mac key";
    crypto_blake2b_keyed(mac_key_, sizeof mac_key_, key_, sizeof key_,
                         reinterpret_cast<const uint8_t*>(mac_label), sizeof mac_label - 1);
}

void AeadKey::mac(const uint8_t* data, size_t n, uint8_t out[kMacBytes]) const {
    crypto_blake2b_keyed(out, kMacBytes, mac_key_, sizeof mac_key_, data, n);
}

void AeadKey::next_nonce(uint8_t out[kAeadNonceBytes]) const {
    std::lock_guard lk(nonce_mu_);
    const uint64_t gen = g_fork_generation.load(std::memory_order_relaxed);
    if (gen != prefix_fork_) {
        random_bytes(prefix_, sizeof prefix_);
        counter_ = 0;
        prefix_fork_ = gen;
    }
    std::memcpy(out, prefix_, sizeof prefix_);
    const uint64_t c = counter_++;
    for (int i = 0; i < 8; ++i) out[16 + i] = static_cast<uint8_t>(c >> (8 * i));
}

void check_key_id(const std::string& what, uint32_t found, uint32_t expected) {
    if (found == expected) return;
    throw KeyMismatch(what + (found == 0 ? " is not encrypted, but this store is"
                              : expected == 0
                                  ? " is encrypted: open the store with its key"
                                  : " is encrypted with another key than this store's"));
}

AeadKey::~AeadKey() {
    crypto_wipe(key_, sizeof key_);
    crypto_wipe(mac_key_, sizeof mac_key_);
}

void AeadKey::seal(const uint8_t* plain, size_t n, const uint8_t* ad, size_t ad_n, uint8_t* out,
                   const uint8_t* nonce) const {
    if (nonce != nullptr)
        std::memcpy(out, nonce, kAeadNonceBytes);
    else
        next_nonce(out);
    uint8_t* cipher = out + kAeadNonceBytes;
    crypto_aead_lock(cipher, cipher + n, key_, out, ad, ad_n, plain, n);
}

std::vector<uint8_t> AeadKey::seal(const uint8_t* plain, size_t n, const uint8_t* ad,
                                   size_t ad_n) const {
    std::vector<uint8_t> out(n + kAeadOverhead);
    seal(plain, n, ad, ad_n, out.data());
    return out;
}

bool AeadKey::open(const uint8_t* sealed, size_t n, const uint8_t* ad, size_t ad_n,
                   uint8_t* out) const {
    if (n < kAeadOverhead) return false;
    const size_t len = n - kAeadOverhead;
    const uint8_t* cipher = sealed + kAeadNonceBytes;
    if (crypto_aead_unlock(out, cipher + len, key_, sealed, ad, ad_n, cipher, len) != 0) {
        std::memset(out, 0, len);
        return false;
    }
    return true;
}

}  // namespace lm
