// Tile math of the tiled kernels: C (BM x BN) += A (BM x BK) * B (BK x BN) from one shared
// memory stage laid out by a GemmLayout, on tensor cores (wmma) or on CUDA cores (FMA).
// Both cores zero their accumulators on construction and store them to shared memory.
#pragma once

#include <mma.h>

#include "tiled_common.cuh"

namespace rskcnn::cuda::tiled {

namespace wmma = nvcuda::wmma;

// Fragment element type and K depth of one wmma: m16n16k16 for the 16-bit types,
// m16n16k8 TF32 for float.
template <typename T>
struct WmmaKind;
template <>
struct WmmaKind<__half> {
  using Frag = __half;
  static constexpr int kK = 16;
};
template <>
struct WmmaKind<__nv_bfloat16> {
  using Frag = __nv_bfloat16;
  static constexpr int kK = 16;
};
template <>
struct WmmaKind<float> {
  using Frag = wmma::precision::tf32;
  static constexpr int kK = 8;
};

// The 4 warps split C 2 x 2; each warp owns (BM/2) x (BN/2) as 16 x 16 fragments.
template <class L>
struct WmmaCore {
  using T = typename L::T;
  using Kind = WmmaKind<T>;
  static constexpr int kK = Kind::kK;
  static constexpr int WM = L::BM / 2, WN = L::BN / 2, FM = WM / 16, FN = WN / 16;
  using ALayout = std::conditional_t<L::A_ROW, wmma::row_major, wmma::col_major>;
  using BLayout = std::conditional_t<L::B_ROW, wmma::row_major, wmma::col_major>;
  using AFrag = wmma::fragment<wmma::matrix_a, 16, 16, kK, typename Kind::Frag, ALayout>;
  using BFrag = wmma::fragment<wmma::matrix_b, 16, 16, kK, typename Kind::Frag, BLayout>;
  static_assert(L::BK % kK == 0, "a stage is a whole number of wmma steps");

  wmma::fragment<wmma::accumulator, 16, 16, kK, float> acc[FM][FN];
  int m0, n0;

  __device__ __forceinline__ WmmaCore() {
    const int warp = threadIdx.x / 32;
    m0 = (warp / 2) * WM;
    n0 = (warp % 2) * WN;
#pragma unroll
    for (int i = 0; i < FM; ++i) {
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    }
  }

  template <class Frag>
  static __device__ __forceinline__ void round_operand(Frag& f) {
    if constexpr (std::is_same_v<T, float>) {
#pragma unroll
      for (int t = 0; t < f.num_elements; ++t) f.x[t] = wmma::__float_to_tf32(f.x[t]);
    }
  }

  __device__ __forceinline__ void compute(const T* as, const T* bs) {
#pragma unroll
    for (int kk = 0; kk < L::BK; kk += kK) {
      AFrag a[FM];
      BFrag b[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        const int m = m0 + 16 * i;
        wmma::load_matrix_sync(a[i], L::A_ROW ? as + m * L::lda + kk : as + kk * L::lda + m, L::lda);
        round_operand(a[i]);
      }
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        const int n = n0 + 16 * j;
        wmma::load_matrix_sync(b[j], L::B_ROW ? bs + kk * L::ldb + n : bs + n * L::ldb + kk, L::ldb);
        round_operand(b[j]);
      }
#pragma unroll
      for (int i = 0; i < FM; ++i) {
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
    }
  }

  __device__ __forceinline__ void store(float* cs) const {
#pragma unroll
    for (int i = 0; i < FM; ++i) {
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        const int m = m0 + 16 * i, n = n0 + 16 * j;
        if constexpr (L::C_COL) {
          wmma::store_matrix_sync(cs + n * L::ldc + m, acc[i][j], L::ldc, wmma::mem_col_major);
        } else {
          wmma::store_matrix_sync(cs + m * L::ldc + n, acc[i][j], L::ldc, wmma::mem_row_major);
        }
      }
    }
  }
};

__device__ __forceinline__ float fused_madd(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double fused_madd(double a, double b, double c) { return __fma_rn(a, b, c); }

// Exact arithmetic in the accumulator type: thread (ty, tx) of a 16 x 8 grid owns rows
// ty + 16 i and columns tx + 8 j. The interleaving makes a warp read 4 distinct A rows and
// 8 distinct B columns per k, which the padded layouts place in distinct banks.
template <class L>
struct FmaCore {
  using T = typename L::T;
  using A = Acc<T>;
  static constexpr int TM = L::BM / 16, TN = L::BN / 8;
  static_assert(kThreads == 16 * 8, "one thread per cell of the 16 x 8 grid");

  A acc[TM][TN];
  int ty, tx;

  __device__ __forceinline__ FmaCore() : ty(threadIdx.x / 8), tx(threadIdx.x % 8) {
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = A(0);
    }
  }

  __device__ __forceinline__ void compute(const T* as, const T* bs) {
#pragma unroll 4
    for (int k = 0; k < L::BK; ++k) {
      A a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const int m = ty + 16 * i;
        a[i] = Elem<T>::to_acc(L::A_ROW ? as[m * L::lda + k] : as[k * L::lda + m]);
      }
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int n = tx + 8 * j;
        b[j] = Elem<T>::to_acc(L::B_ROW ? bs[k * L::ldb + n] : bs[n * L::ldb + k]);
      }
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fused_madd(a[i], b[j], acc[i][j]);
      }
    }
  }

  __device__ __forceinline__ void store(A* cs) const {
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int m = ty + 16 * i, n = tx + 8 * j;
        cs[L::C_COL ? n * L::ldc + m : m * L::ldc + n] = acc[i][j];
      }
    }
  }
};

// Tensor cores for __half / __nv_bfloat16 (always) and float with TF32; FMA otherwise.
template <class L, bool kTensor>
using GemmCore = std::conditional_t<kTensor, WmmaCore<L>, FmaCore<L>>;

}  // namespace rskcnn::cuda::tiled
