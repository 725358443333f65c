// Read-only bytes of a whole file: either memory-mapped (pages come from the page cache on
// first touch, nothing is copied) or read into an aligned heap buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lm {

class FileBytes {
public:
    // Opens `path` and maps it (use_mmap) or reads it. Throws IoError on failure.
    FileBytes(const std::string& path, bool use_mmap);
    // `size` zeroed bytes on the heap (page-aligned, left out of core dumps), for a caller to
    // fill (a decrypted file). Wiped when freed.
    explicit FileBytes(size_t size);
    ~FileBytes();
    FileBytes(const FileBytes&) = delete;
    FileBytes& operator=(const FileBytes&) = delete;

    const uint8_t* data() const { return data_; }
    uint8_t* mutable_data() { return mapped_ ? nullptr : const_cast<uint8_t*>(data_); }
    size_t size() const { return size_; }
    bool mapped() const { return mapped_; }

private:
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;
    bool owned_ = false;  // made by FileBytes(size): a decrypted file, wiped when freed
};

// Writes a file so that a crash leaves either the old file or the complete new one:
// write to `path.tmp-<pid>`, fsync, rename over `path`, fsync the directory.
class AtomicFileWriter {
public:
    explicit AtomicFileWriter(std::string path);
    ~AtomicFileWriter();  // removes the temporary file unless commit() succeeded
    AtomicFileWriter(const AtomicFileWriter&) = delete;
    AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

    void write(const void* data, size_t n);
    void pad_to(size_t offset);  // writes zeros up to `offset` bytes from the start
    size_t offset() const { return offset_; }
    void commit();

private:
    std::string path_, tmp_;
    int fd_ = -1;
    size_t offset_ = 0;
    bool committed_ = false;
};

}  // namespace lm
