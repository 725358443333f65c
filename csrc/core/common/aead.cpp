#include "common/aead.h"

#include <unistd.h>

#include <algorithm>
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

AeadKey::AeadKey(const uint8_t key[kAeadKeyBytes]) { std::memcpy(key_, key, kAeadKeyBytes); }

AeadKey::~AeadKey() { crypto_wipe(key_, sizeof key_); }

void AeadKey::seal(const uint8_t* plain, size_t n, const uint8_t* ad, size_t ad_n, uint8_t* out,
                   const uint8_t* nonce) const {
    if (nonce != nullptr)
        std::memcpy(out, nonce, kAeadNonceBytes);
    else
        random_bytes(out, kAeadNonceBytes);
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
