#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/errors.h"
#include "common/file_util.h"
#include "monocypher/monocypher.h"

namespace lm {

FileBytes::FileBytes(const std::string& path, bool use_mmap) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno("cannot open", path);
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
        ::close(fd);
        throw_errno("cannot stat", path);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw IoError("not a regular file: " + path);
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) {
        ::close(fd);
        return;
    }
    if (use_mmap) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) throw_errno("cannot mmap", path);
        data_ = static_cast<const uint8_t*>(p);
        mapped_ = true;
        return;
    }
    void* buf = std::aligned_alloc(64, (size_ + 63) / 64 * 64);
    if (buf == nullptr) {
        ::close(fd);
        throw IoError("out of memory reading " + path);
    }
    size_t done = 0;
    while (done < size_) {
        const ssize_t r =
            ::pread(fd, static_cast<uint8_t*>(buf) + done, size_ - done, static_cast<off_t>(done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            std::free(buf);
            ::close(fd);
            if (r == 0) throw IoError("file shrank while being read: " + path);
            throw_errno("cannot read", path);
        }
        done += static_cast<size_t>(r);
    }
    ::close(fd);
    data_ = static_cast<const uint8_t*>(buf);
}

FileBytes::FileBytes(size_t size) : size_(size) {
    if (size_ == 0) return;
    constexpr size_t kPage = 4096;
    const size_t bytes = (size_ + kPage - 1) / kPage * kPage;
    void* buf = std::aligned_alloc(kPage, bytes);
    if (buf == nullptr) throw IoError("out of memory (" + std::to_string(size_) + " bytes)");
#ifdef MADV_DONTDUMP
    // It holds what a file decrypted to: keep it out of core dumps (best effort).
    ::madvise(buf, bytes, MADV_DONTDUMP);
#endif
    std::memset(buf, 0, size_);
    data_ = static_cast<const uint8_t*>(buf);
    owned_ = true;
}

FileBytes::~FileBytes() {
    if (data_ == nullptr) return;
    if (mapped_) {
        ::munmap(const_cast<uint8_t*>(data_), size_);
    } else {
        if (owned_) crypto_wipe(const_cast<uint8_t*>(data_), size_);  // plaintext: wiped
        std::free(const_cast<uint8_t*>(data_));
    }
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp-" + std::to_string(::getpid())) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd_ < 0) throw_errno("cannot create", tmp_);
}

AtomicFileWriter::~AtomicFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
        const ssize_t w = ::write(fd_, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) throw_errno("cannot write", tmp_);
        p += w;
        n -= static_cast<size_t>(w);
        offset_ += static_cast<size_t>(w);
    }
}

void AtomicFileWriter::pad_to(size_t offset) {
    static const uint8_t zeros[64] = {};
    while (offset_ < offset) write(zeros, std::min<size_t>(sizeof zeros, offset - offset_));
}

void AtomicFileWriter::commit() {
    if (::fsync(fd_) != 0) throw_errno("cannot fsync", tmp_);
    if (::close(fd_) != 0) {
        fd_ = -1;
        throw_errno("cannot close", tmp_);
    }
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw_errno("cannot rename into", path_);
    committed_ = true;
    fsync_dir(parent_dir(path_));
}

}  // namespace lm
