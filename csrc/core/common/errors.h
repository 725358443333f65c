// Error types thrown by the core. The binding maps each one to a class in localmem.errors,
// so the message must tell the caller what to change, not just what went wrong.
#pragma once

#include <stdexcept>
#include <string>

namespace lm {

// Bad arguments: wrong shape, NaN, k <= 0, ... (-> localmem.errors.InvalidArgumentError).
struct InvalidArgument : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// An id given to add() that the index already holds (-> DuplicateIdError).
struct DuplicateId : InvalidArgument {
    using InvalidArgument::InvalidArgument;
};

// An id that the index does not hold (-> UnknownIdError).
struct UnknownId : std::out_of_range {
    using std::out_of_range::out_of_range;
};

// A file whose bytes do not form a valid object: bad magic, checksum, truncation
// (-> CorruptFileError).
struct CorruptFile : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A file encrypted with another key than the one given, or encrypted when no key was given,
// or plain when one was (-> localmem.errors.EncryptionKeyError): never damage, never repaired.
struct KeyMismatch : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// An operating-system call failed: open, write, fsync, mmap, rename (-> StorageError;
// StorageFullError when errno says the disk or the quota is full).
struct IoError : std::runtime_error {
    explicit IoError(const std::string& what, int code = 0)
        : std::runtime_error(what), code(code) {}
    int code;  // errno of the failed call, 0 if none
};

// The files changed underneath this object (another process appended or compacted):
// refresh first, under the store lock (-> localmem.errors.ConcurrencyError).
struct StaleState : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The store's write lock was not obtained in time (-> localmem.errors.StoreLockedError).
struct LockTimeout : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace lm
