// Walks a (queries x blocks) score request in register tiles of at most
// Tile::kMaxQ queries by Tile::kMaxB blocks. Each ISA defines its Tile in an anonymous
// namespace under its own target attributes, so every instantiation is local to its file.
#pragma once

#include "index/kernels.h"

namespace lm {

template <class Tile, int QT = Tile::kMaxQ, int BT = Tile::kMaxB>
inline void run_tile(int qn, int bn, const ScoreArgs& a, size_t q0, size_t b0) {
    if constexpr (QT > 1) {
        if (qn < QT) return run_tile<Tile, QT - 1, BT>(qn, bn, a, q0, b0);
    }
    if constexpr (BT > 1) {
        if (bn < BT) return run_tile<Tile, QT, BT - 1>(qn, bn, a, q0, b0);
    }
    const size_t row0 = b0 * kBlockRows;
    Tile::template run<QT, BT>(a.queries + q0 * a.prepared_stride, a.prepared_stride,
                               a.qscales + q0, a.blocks + row0 * a.stride, a.rowsums + row0,
                               a.rowscales + row0, a.stride, a.out + q0 * a.out_stride + row0,
                               a.out_stride);
}

template <class Tile>
void drive_tiles(const ScoreArgs& a) {
    for (size_t q0 = 0; q0 < a.nq; q0 += Tile::kMaxQ) {
        const int qn = static_cast<int>(std::min<size_t>(Tile::kMaxQ, a.nq - q0));
        for (size_t b0 = 0; b0 < a.nblocks; b0 += Tile::kMaxB) {
            const int bn = static_cast<int>(std::min<size_t>(Tile::kMaxB, a.nblocks - b0));
            run_tile<Tile>(qn, bn, a, q0, b0);
        }
    }
}

}  // namespace lm
