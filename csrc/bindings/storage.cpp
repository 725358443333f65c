// Bindings of the durable storage pieces: Wal and BlobArena. Arguments are converted under
// the GIL; every disk operation runs with it released.
#include <pybind11/stl.h>

#include "common.h"
#include "storage/blob_arena.h"
#include "storage/store_writer.h"
#include "storage/wal.h"

namespace lm_py {
namespace {

lm::SyncMode sync_mode_from(const std::string& s) {
    if (s == "always") return lm::SyncMode::Always;
    if (s == "batch") return lm::SyncMode::Batch;
    if (s == "off") return lm::SyncMode::Off;
    invalid("sync must be 'always', 'batch' (group commit, the default) or 'off', got '" + s + "'");
}

uint32_t record_type_from(int64_t t) {
    if (t < 0 || t >= 0xFFFFFFFFll)
        invalid(
            "record type must be in [0, 2**32 - 2] (0xFFFFFFFF is reserved for segment seals), "
            "got " +
            std::to_string(t));
    return static_cast<uint32_t>(t);
}

py::dict damage_dict(const lm::WalDamage& d) {
    py::dict r;
    r["any"] = d.any;
    r["reason"] = d.reason;
    r["segment"] = d.segment;
    r["offset"] = d.offset;
    r["dropped_bytes"] = d.dropped_bytes;
    r["later_segments"] = d.later_segments;
    r["quarantined"] = d.quarantined;
    return r;
}

template <class T>
py::array_t<T> to_array(const std::vector<T>& v) {
    py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
    copy_out(a, v);
    return a;
}

py::dict scan_dict(const lm::BlobScan& s) {
    static const char* stops[] = {"clean", "beyond", "torn", "corrupt"};
    py::dict r;
    r["keys"] = to_array(s.keys);
    r["lsns"] = to_array(s.lsns);
    r["flags"] = to_array(s.flags);
    r["offsets"] = to_array(s.offsets);
    r["lengths"] = to_array(s.lengths);
    r["stop"] = stops[s.stop];
    r["reason"] = s.reason;
    r["end"] = s.end;
    r["file_size"] = s.file_size;
    return r;
}

}  // namespace

void bind_storage(py::module_& m) {
    py::class_<lm::Wal, std::shared_ptr<lm::Wal>>(m, "Wal")
        .def(py::init([](const std::string& dir, const std::string& sync, uint64_t segment_bytes,
                         uint32_t group_commit_us, uint64_t start_lsn, uint64_t prealloc_bytes,
                         const KeyArg& key) {
                 lm::WalOptions o;
                 o.key = key;
                 o.sync = sync_mode_from(sync);
                 o.segment_bytes = segment_bytes;
                 o.group_commit_us = group_commit_us;
                 o.start_lsn = start_lsn;
                 o.prealloc_bytes = prealloc_bytes;
                 ReleaseGil release;
                 return std::make_unique<lm::Wal>(dir, o);
             }),
             py::arg("dir"), py::arg("sync") = "batch", py::arg("segment_bytes") = 64u << 20,
             py::arg("group_commit_us") = 0, py::arg("start_lsn") = 1,
             py::arg("prealloc_bytes") = 1u << 20, py::arg("key") = py::none())
        .def("recover",
             [](lm::Wal& w) {
                 lm::WalDamage d;
                 {
                     ReleaseGil release;
                     d = w.recover();
                 }
                 return damage_dict(d);
             })
        .def_property_readonly("pending_damage",
                               [](const lm::Wal& w) { return damage_dict(w.pending_damage()); })
        .def("refresh", &lm::Wal::refresh, py::call_guard<ReleaseGil>())
        .def(
            "read",
            [](lm::Wal& w, uint64_t after_lsn, size_t max_records, size_t max_bytes) {
                std::vector<lm::WalRecord> recs;
                {
                    ReleaseGil release;
                    recs = w.read(after_lsn, max_records, max_bytes);
                }
                py::list out;
                for (const auto& r : recs)
                    out.append(py::make_tuple(r.lsn, r.type, py::bytes(r.payload)));
                return out;
            },
            py::arg("after_lsn") = 0, py::arg("max_records") = 4096,
            py::arg("max_bytes") = 16u << 20)
        .def(
            "append",
            [](lm::Wal& w, int64_t type, const py::handle& payload) {
                const uint32_t t = record_type_from(type);
                const py::buffer_info b = bytes_of(payload, "payload");
                ReleaseGil release;
                return w.append(t, b.ptr, nbytes(b));
            },
            py::arg("type"), py::arg("payload"))
        .def(
            "append_batch",
            [](lm::Wal& w, const std::vector<int64_t>& types, const py::sequence& payloads) {
                if (types.size() != static_cast<size_t>(py::len(payloads)))
                    invalid("append_batch needs one type per payload, got " +
                            std::to_string(types.size()) + " types for " +
                            std::to_string(py::len(payloads)) + " payloads");
                if (types.empty()) invalid("append_batch needs at least one record");
                std::vector<uint32_t> t;
                std::vector<const void*> data;
                std::vector<size_t> sizes;
                std::vector<py::buffer_info> held;  // buffers stay valid without the GIL
                held.reserve(types.size());
                for (size_t i = 0; i < types.size(); ++i) {
                    t.push_back(record_type_from(types[i]));
                    held.push_back(bytes_of(payloads[i], "payloads[i]"));
                    data.push_back(held.back().ptr);
                    sizes.push_back(nbytes(held.back()));
                }
                ReleaseGil release;
                return w.append_batch(t.data(), data.data(), sizes.data(), t.size());
            },
            py::arg("types"), py::arg("payloads"))
        .def("commit", &lm::Wal::commit, py::arg("lsn"), py::call_guard<ReleaseGil>())
        .def("sync", &lm::Wal::sync, py::call_guard<ReleaseGil>())
        .def("rotate", &lm::Wal::rotate, py::call_guard<ReleaseGil>())
        .def("truncate_before", &lm::Wal::truncate_before, py::arg("lsn"),
             py::call_guard<ReleaseGil>())
        .def_property_readonly("first_lsn", &lm::Wal::first_lsn)
        .def_property_readonly("last_lsn", &lm::Wal::last_lsn)
        .def_property_readonly("durable_lsn", &lm::Wal::durable_lsn)
        .def_property_readonly("dir", &lm::Wal::dir)
        .def_property_readonly("sync_mode",
                               [](const lm::Wal& w) { return lm::sync_mode_name(w.sync_mode()); })
        .def("stats", [](const lm::Wal& w) {
            const lm::WalStats s = w.stats();
            py::dict d;
            d["first_lsn"] = s.first_lsn;
            d["last_lsn"] = s.last_lsn;
            d["durable_lsn"] = s.durable_lsn;
            d["segments"] = s.segments;
            d["bytes"] = s.bytes;
            d["appends"] = s.appends;
            d["fsyncs"] = s.fsyncs;
            d["commit_groups"] = s.commit_groups;
            d["max_group"] = s.max_group;
            d["tail_segment"] = s.tail_segment;
            d["tail_size"] = s.tail_size;
            d["tail_synced"] = s.tail_synced;
            return d;
        });

    py::class_<lm::BlobArena, std::shared_ptr<lm::BlobArena>>(m, "BlobArena")
        .def_static(
            "create",
            [](const std::string& path, uint64_t generation, const KeyArg& key) {
                ReleaseGil release;
                lm::BlobArena::create(path, generation, key);
            },
            py::arg("path"), py::arg("generation"), py::arg("key") = py::none())
        .def(py::init([](const std::string& path, uint64_t generation, const KeyArg& key) {
                 ReleaseGil release;
                 return std::make_unique<lm::BlobArena>(path, generation, key);
             }),
             py::arg("path"), py::arg("generation"), py::arg("key") = py::none())
        .def(
            "refresh",
            [](lm::BlobArena& a, uint64_t max_lsn) {
                lm::BlobScan s;
                {
                    ReleaseGil release;
                    s = a.refresh(max_lsn);
                }
                return scan_dict(s);
            },
            py::arg("max_lsn"))
        .def(
            "recover",
            [](lm::BlobArena& a, uint64_t max_lsn) {
                lm::BlobScan s;
                lm::ArenaRepair r;
                {
                    ReleaseGil release;
                    s = a.recover(max_lsn, &r);
                }
                py::dict rep;
                rep["any"] = r.any;
                rep["reason"] = r.reason;
                rep["offset"] = r.offset;
                rep["dropped_bytes"] = r.dropped_bytes;
                return py::make_tuple(scan_dict(s), rep);
            },
            py::arg("max_lsn"))
        .def(
            "append",
            [](lm::BlobArena& a, int64_t key, uint64_t lsn, uint32_t flags,
               const py::handle& payload) {
                const py::buffer_info b = bytes_of(payload, "payload");
                ReleaseGil release;
                return a.append(key, lsn, flags, b.ptr, nbytes(b));
            },
            py::arg("key"), py::arg("lsn"), py::arg("flags"), py::arg("payload"))
        .def(
            "append_batch",
            [](lm::BlobArena& a, const std::vector<int64_t>& keys,
               const std::vector<uint64_t>& lsns, const std::vector<uint32_t>& flags,
               const py::sequence& payloads) {
                const size_t n = keys.size();
                if (lsns.size() != n || flags.size() != n ||
                    static_cast<size_t>(py::len(payloads)) != n)
                    invalid("append_batch needs as many keys, lsns, flags and payloads");
                std::vector<py::buffer_info> held;
                std::vector<const void*> data;
                std::vector<size_t> sizes;
                held.reserve(n);
                for (size_t i = 0; i < n; ++i) {
                    held.push_back(bytes_of(payloads[i], "payloads[i]"));
                    data.push_back(held.back().ptr);
                    sizes.push_back(nbytes(held.back()));
                }
                std::vector<uint64_t> offsets(n);
                {
                    ReleaseGil release;
                    a.append_batch(keys.data(), lsns.data(), flags.data(), data.data(),
                                   sizes.data(), n, offsets.data());
                }
                return offsets;
            },
            py::arg("keys"), py::arg("lsns"), py::arg("flags"), py::arg("payloads"))
        .def(
            "view",
            [](lm::BlobArena& a, uint64_t offset, uint32_t length, bool verify) -> py::array {
                if (a.encrypted()) {
                    // Decrypted into memory the array owns: plaintext never goes to disk,
                    // and lives as long as the caller keeps the array.
                    std::vector<uint8_t> plain;
                    {
                        ReleaseGil release;
                        plain = a.open(offset, length);
                    }
                    py::array_t<uint8_t> arr(static_cast<py::ssize_t>(plain.size()));
                    if (!plain.empty()) std::memcpy(arr.mutable_data(), plain.data(), plain.size());
                    std::fill(plain.begin(), plain.end(), 0);
                    arr.attr("setflags")(py::arg("write") = false);
                    return arr;
                }
                auto [mapping, ptr] = a.view(offset, length, verify);
                // The array's base owns a reference to the mapping: the bytes stay mapped for
                // as long as any view (or a numpy/memoryview slice of it) is alive.
                auto* keep = new std::shared_ptr<lm::Mapping>(std::move(mapping));
                py::capsule owner(
                    keep, [](void* p) { delete static_cast<std::shared_ptr<lm::Mapping>*>(p); });
                py::array_t<uint8_t> arr({static_cast<py::ssize_t>(length)}, {1}, ptr, owner);
                arr.attr("setflags")(py::arg("write") = false);
                return arr;
            },
            py::arg("offset"), py::arg("length"), py::arg("verify") = false,
            "A read-only zero-copy uint8 array over a blob's payload (verify: its checksum "
            "checked first); of an encrypted arena, the payload authenticated and decrypted "
            "(a copy), whatever verify says.")
        .def("sync", &lm::BlobArena::sync, py::call_guard<ReleaseGil>())
        .def(
            "copy_to",
            [](lm::BlobArena& a, const std::string& path, uint64_t generation,
               const py::handle& offsets) {
                auto o = require<uint64_t>(offsets, "offsets", "uint64", 1);
                std::vector<uint64_t> placed;
                {
                    ReleaseGil release;
                    placed = a.copy_to(path, generation, o.data(), o.shape(0));
                }
                return to_array(placed);
            },
            py::arg("path"), py::arg("generation"), py::arg("offsets"))
        .def_property_readonly("generation", &lm::BlobArena::generation)
        .def_property_readonly(
            "overhead", [](const lm::BlobArena& a) { return a.overhead(); },
            "Bytes a blob takes beyond its plaintext (the AEAD's, if any).")
        .def_property_readonly("end", &lm::BlobArena::end)
        .def_property_readonly("last_lsn", &lm::BlobArena::last_lsn)
        .def_property_readonly("path", &lm::BlobArena::path);

    py::class_<lm::FileLock, std::shared_ptr<lm::FileLock>>(m, "FileLock")
        .def(py::init<std::string>(), py::arg("path"))
        .def("acquire", &lm::FileLock::acquire, py::arg("timeout"), py::call_guard<ReleaseGil>())
        .def("release", &lm::FileLock::release)
        .def_property_readonly("path", &lm::FileLock::path);

    py::class_<lm::StoreWriter>(m, "StoreWriter")
        .def(py::init<std::shared_ptr<lm::FileLock>>(), py::arg("lock"))
        .def(
            "put",
            [](lm::StoreWriter& w, const std::vector<int64_t>& types,
               const std::vector<int64_t>& keys, const std::vector<uint32_t>& flags,
               const std::vector<uint8_t>& blob_mask, const py::sequence& payloads,
               double lock_timeout) {
                const size_t n = types.size();
                if (n == 0 || keys.size() != n || flags.size() != n || blob_mask.size() != n ||
                    static_cast<size_t>(py::len(payloads)) != n)
                    invalid("put needs one type, key, flag, blob flag and payload per record");
                std::vector<uint32_t> t;
                std::vector<py::buffer_info> held;
                std::vector<const void*> data;
                std::vector<size_t> sizes;
                held.reserve(n);
                for (size_t i = 0; i < n; ++i) {
                    t.push_back(record_type_from(types[i]));
                    held.push_back(bytes_of(payloads[i], "payloads[i]"));
                    data.push_back(held.back().ptr);
                    sizes.push_back(nbytes(held.back()));
                }
                ReleaseGil release;
                return w.put(t.data(), keys.data(), flags.data(), blob_mask.data(), data.data(),
                             sizes.data(), n, lock_timeout);
            },
            py::arg("types"), py::arg("keys"), py::arg("flags"), py::arg("blob_mask"),
            py::arg("payloads"), py::arg("lock_timeout"))
        .def(
            "put_one",
            // put() for one record with a blob: scalar arguments, no lists to convert (the
            // hot path of Store.put, where a microsecond under the GIL is 16 threads' wait).
            [](lm::StoreWriter& w, int64_t type, int64_t key, uint32_t flag,
               const py::handle& payload, double lock_timeout) {
                const uint32_t t = record_type_from(type);
                const py::buffer_info b = bytes_of(payload, "payload");
                const void* data = b.ptr;
                const size_t size = nbytes(b);
                const uint8_t mask = 1;
                ReleaseGil release;
                return w.put(&t, &key, &flag, &mask, &data, &size, 1, lock_timeout);
            },
            py::arg("type"), py::arg("key"), py::arg("flag"), py::arg("payload"),
            py::arg("lock_timeout"))
        .def("attach", &lm::StoreWriter::attach, py::arg("wal"), py::arg("arena"), py::arg("lsn"))
        .def("detach", &lm::StoreWriter::detach)
        .def("drain", [](lm::StoreWriter& w) {
            py::list out;
            for (const lm::WrittenBlob& b : w.drain())
                out.append(py::make_tuple(b.lsn, b.offset, b.length));
            return out;
        });
}

}  // namespace lm_py
