// Definitions shared by the tiled implicit-GEMM kernels (tiled_*.cu): CTA shape, element
// conversions and the shared-memory layout of one GEMM tile. The kernels see the
// convolution as ConvArgs32 (conv_geometry.h).
#pragma once

#include <c10/macros/Macros.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "../conv_geometry.h"

// Device-side invariant checks, compiled in with -DRSKCNN_CUDA_DEBUG only. The release form
// never evaluates `cond` but still names its variables, so none of them looks unused.
#ifdef RSKCNN_CUDA_DEBUG
#define TILED_CHECK(cond) CUDA_KERNEL_ASSERT(cond)
#else
#define TILED_CHECK(cond) \
  do {                    \
    if (false) {          \
      (void)(cond);       \
    }                     \
  } while (0)
#endif

namespace rskcnn::cuda::tiled {

constexpr int kThreads = 128;   // 4 warps per CTA
constexpr int kChunk = 32;      // in_chunk == out_chunk == 32 (checked on the host)
constexpr int kPixelTile = 64;  // output / input pixels per CTA of forward and grad-input

// Accumulator type: float for the 16-bit types and float, double for double.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using Acc = typename AccOf<T>::type;

// Explicit conversions: the build disables the implicit ones of __half and __nv_bfloat16.
template <typename T>
struct Elem;
template <>
struct Elem<__half> {
  static __device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ __half zero() { return __ushort_as_half(0); }
};
template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }
  static __device__ __forceinline__ __nv_bfloat16 zero() { return __ushort_as_bfloat16(0); }
};
template <>
struct Elem<float> {
  static __device__ __forceinline__ float to_acc(float v) { return v; }
  static __device__ __forceinline__ float from_acc(float v) { return v; }
  static __device__ __forceinline__ float zero() { return 0.0f; }
};
template <>
struct Elem<double> {
  static __device__ __forceinline__ double to_acc(double v) { return v; }
  static __device__ __forceinline__ double from_acc(double v) { return v; }
  static __device__ __forceinline__ double zero() { return 0.0; }
};

// Pixel q of an (n, rows, cols) image stack, q = (n * rows + y) * cols + x.
struct Pixel {
  int n, y, x;
};
__device__ __forceinline__ Pixel decode_pixel(int64_t q, int rows, int cols) {
  const int64_t nr = q / cols;
  return Pixel{static_cast<int>(nr / rows), static_cast<int>(nr % rows),
               static_cast<int>(q % cols)};
}

constexpr int round_up(int v, int to) { return (v + to - 1) / to * to; }

// K depth of one pipeline stage. 32 makes a stage one plan chunk; double uses 16 so that two
// stages stay within 48 KiB of static shared memory (a chunk is then two stages).
template <typename T>
constexpr int kStageK = sizeof(T) == 8 ? 16 : 32;

// Shared memory of a BM x BN tile C += A (BM x BK) * B (BK x BN), double-buffered.
// A is stored [m][k] (A_ROW) or [k][m]; B [k][n] (B_ROW) or [n][k]: whichever keeps the global
// memory's contiguous channel run contiguous in shared memory, so a row loads with 16-byte
// copies. C (accumulator type) is stored [n][m] (C_COL) or [m][n] to suit the epilogue's
// writes, reusing the operand buffers once the K loop is done.
template <typename T_, int BM_, int BN_, bool A_ROW_, bool B_ROW_, bool C_COL_>
struct GemmLayout {
  using T = T_;
  static constexpr int BM = BM_, BN = BN_, BK = kStageK<T>;
  static constexpr bool A_ROW = A_ROW_, B_ROW = B_ROW_, C_COL = C_COL_;

  // 16 bytes of padding per row: rows stay 16-byte aligned and consecutive rows start in
  // different banks.
  static constexpr int kPad = 16 / static_cast<int>(sizeof(T));
  static constexpr int lda = A_ROW ? BK + kPad : BM + kPad;
  static constexpr int ldb = B_ROW ? BN + kPad : BK + kPad;
  static constexpr int kAElems = (A_ROW ? BM : BK) * lda;
  static constexpr int kBElems = (B_ROW ? BK : BN) * ldb;
  static constexpr int kStageBytes =
      round_up((kAElems + kBElems) * static_cast<int>(sizeof(T)), 128);

  static constexpr int kCPad = 16 / static_cast<int>(sizeof(Acc<T>));
  static constexpr int ldc = C_COL ? BM + kCPad : BN + kCPad;
  static constexpr int kCBytes = (C_COL ? BN : BM) * ldc * static_cast<int>(sizeof(Acc<T>));

  static constexpr int kBytes = 2 * kStageBytes > kCBytes ? 2 * kStageBytes : kCBytes;

  static_assert(BM % 32 == 0 && BN % 32 == 0, "4 warps split the tile 2 x 2 into 16-wide fragments");
  static_assert(kChunk % BK == 0, "a plan chunk is a whole number of stages");
  // wmma fragment pointers must be 32-byte aligned: B starts right after A.
  static_assert(kAElems * sizeof(T) % 32 == 0, "B must start 32-byte aligned");
  static_assert(kBytes <= 48 * 1024, "static shared memory is limited to 48 KiB");

  static __device__ __forceinline__ T* a(unsigned char* smem, int stage) {
    return reinterpret_cast<T*>(smem + stage * kStageBytes);
  }
  static __device__ __forceinline__ T* b(unsigned char* smem, int stage) {
    return a(smem, stage) + kAElems;
  }
  static __device__ __forceinline__ Acc<T>* c(unsigned char* smem) {
    return reinterpret_cast<Acc<T>*>(smem);
  }
};

}  // namespace rskcnn::cuda::tiled
