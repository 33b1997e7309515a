// SIMD vectors through the GCC/Clang vector extension. setup.py sets
// RSKCNN_VECTOR_BYTES=64 with -mavx512f where the build machine has AVX-512, 32 with
// -mavx2 -mfma where it has AVX2; other machines get 32-byte vectors in SSE pairs.
#pragma once

#include <cstring>

#ifndef RSKCNN_VECTOR_BYTES
#define RSKCNN_VECTOR_BYTES 32
#endif

namespace rskcnn::cpu {

constexpr int kVectorBytes = RSKCNN_VECTOR_BYTES;
constexpr int kVectorRegisters = kVectorBytes == 64 ? 32 : 16;

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(RSKCNN_VECTOR_BYTES)));
  static constexpr int lanes = kVectorBytes / sizeof(float);
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(RSKCNN_VECTOR_BYTES)));
  static constexpr int lanes = kVectorBytes / sizeof(double);
};
template <typename T>
using vec_t = typename Vec<T>::type;

template <typename T>
inline vec_t<T> vload(const T* p) {
  vec_t<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void vstore(T* p, vec_t<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

// s - 0 rather than 0 + s: subtracting +0 is an identity even for -0.0, so the compiler
// drops it and broadcasts straight from memory; an add of 0 (not an identity for -0.0)
// stays, and forces a broadcast from a register, a shuffle-port uop that competes with FMAs.
template <typename T>
inline vec_t<T> vbroadcast(T s) {
  return s - vec_t<T>{};
}

// Pairwise (tree) sum: log2(lanes) dependent adds instead of lanes.
template <typename T>
inline T vsum(vec_t<T> v) {
  T lane[Vec<T>::lanes];
  std::memcpy(lane, &v, sizeof(v));
  for (int width = Vec<T>::lanes / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
  return lane[0];
}

// Pixels per column chunk: every row of a chunk buffer holds this many values.
// Forward and grad-input: 64 keeps the columns of a 512-channel 3x3 layer (1.2 MB) in L2.
// Grad-weight: the widest of 256, 128, 64 whose columns fit kDotChunkBytes, so that its
// horizontal sums (one per kept weight per chunk) stay rare while the columns, read once
// per row, stay in L2.
constexpr int kProductChunk = 64;
constexpr int64_t kDotChunkBytes = int64_t{5} << 18;  // 1.25 MB

}  // namespace rskcnn::cpu
