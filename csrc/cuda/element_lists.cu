// Element-mask row lists on the GPU: one warp per row walks its flags 32 at a time
// (coalesced), and a ballot gives each kept flag its slot, so the lists come out
// increasing, exactly as plan_row / plan_column of csrc/block_mask.h write them on an
// element geometry. A rank kernel then orders the rows longest first. Two launches,
// no host sync.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <limits>

#include "element_common.cuh"
#include "element_lists.cuh"

namespace rskcnn::cuda::element {
namespace {

constexpr int kThreads = 128;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;  // rows per CTA of the row kernels
constexpr unsigned kFullMask = 0xffffffffu;

__device__ void check_row(const int32_t* list, int32_t count, int64_t capacity) {
#ifdef RSKCNN_CUDA_DEBUG
  RSKCNN_DEVICE_ASSERT(count >= 0 && count <= capacity);
  for (int32_t k = 0; k < count; ++k) {
    RSKCNN_DEVICE_ASSERT(list[k] >= 0 && list[k] < capacity);
    RSKCNN_DEVICE_ASSERT(k == 0 || list[k] > list[k - 1]);
  }
#endif
}

// Called by a whole warp with a warp-uniform row: appends each j in [0, n) with
// kept(j) to list, in increasing order, and writes the count. Lane l looks at j =
// base + l, so a step covers 32 consecutive j; the kept lanes below l give l's slot
// and the running count stays the same in every lane.
template <typename Kept>
__device__ void compact_row(int64_t n, int64_t capacity, Kept kept, int32_t* list,
                            int32_t* count_out) {
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const unsigned below = (1u << lane) - 1;  // lanes 0 .. lane-1; 0 for lane 0
  int32_t count = 0;
  for (int64_t base = 0; base < n; base += kWarpSize) {
    const int64_t j = base + lane;
    const bool mine = j < n && kept(j);
    const unsigned ballot = __ballot_sync(kFullMask, mine);
    if (mine) list[count + __popc(ballot & below)] = static_cast<int32_t>(j);
    count += __popc(ballot);
  }
  // check_row reads the other lanes' stores.
  __syncwarp();
  if (lane == 0) {
    check_row(list, count, capacity);
    *count_out = count;
  }
}

// Row o is filter o: its flags are the capacity = Cin_g*KH*KW contiguous bools at
// keep + o*capacity, and entry j is the flag's offset.
__global__ void filter_rows_kernel(const bool* keep, int64_t rows, int64_t capacity,
                                   int32_t* entries, int32_t* counts) {
  const int64_t o = blockIdx.x * int64_t{kWarps} + threadIdx.x / kWarpSize;
  if (o >= rows) return;  // whole warps leave, so the ballots see every lane
  const bool* row = keep + o * capacity;
  compact_row(capacity, capacity, [row](int64_t j) { return row[j]; }, entries + o * capacity,
              counts + o);
}

// Row c is input channel i = c % Cin_g of group g = c / Cin_g: entry j = l*taps + t is
// keep[g*Cout_g + l][i][t], so the flags come in runs of taps with stride Cin_g*taps.
// capacity = Cout_g*taps.
__global__ void input_rows_kernel(const bool* keep, int64_t rows, int64_t cout_g, int64_t cin_g,
                                  int64_t taps, int64_t capacity, int32_t* entries,
                                  int32_t* counts) {
  const int64_t c = blockIdx.x * int64_t{kWarps} + threadIdx.x / kWarpSize;
  if (c >= rows) return;  // whole warps leave, so the ballots see every lane
  const int64_t group = c / cin_g;
  const bool* column = keep + (group * cout_g * cin_g + (c - group * cin_g)) * taps;
  const int64_t stride = cin_g * taps;
  // j < capacity < 2^31 where it is called, so (l, t) can be split in 32 bits.
  const int32_t taps32 = static_cast<int32_t>(taps);
  compact_row(capacity, capacity,
              [column, taps32, stride](int64_t j) {
                const int32_t k = static_cast<int32_t>(j);
                return column[k / taps32 * stride + k % taps32];
              },
              entries + c * capacity, counts + c);
}

// order[rank of r] = r, where the rank counts the rows that are longer than r or as
// long and earlier. Quadratic, which is fine for channel counts; counts are read
// through shared memory a CTA-width at a time.
__global__ void longest_first_kernel(const int32_t* counts, int64_t rows, int32_t* order) {
  __shared__ int32_t tile[kThreads];
  const int64_t r = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  const int32_t mine = r < rows ? counts[r] : 0;
  int64_t rank = 0;
  for (int64_t begin = 0; begin < rows; begin += kThreads) {
    __syncthreads();
    if (begin + threadIdx.x < rows) tile[threadIdx.x] = counts[begin + threadIdx.x];
    __syncthreads();
    const int64_t n = min_i64(kThreads, rows - begin);
    for (int64_t j = 0; j < n; ++j) {
      const int32_t other = tile[j];
      rank += other > mine || (other == mine && begin + j < r);
    }
  }
  if (r < rows) {
    RSKCNN_DEVICE_ASSERT(rank >= 0 && rank < rows);
    order[rank] = static_cast<int32_t>(r);
  }
}

ElementRows allocate_rows(const at::Tensor& keep, int64_t rows, int64_t capacity) {
  TORCH_CHECK(rows < std::numeric_limits<int32_t>::max() &&
                  capacity < std::numeric_limits<int32_t>::max(),
              "rskcnn: ", rows, " rows of ", capacity, " weights overflow the int32 lists");
  const auto options = keep.options().dtype(at::kInt);
  return ElementRows{at::empty({rows, capacity}, options), at::empty({rows}, options),
                     at::empty({rows}, options), rows, capacity};
}

void check_keep(const at::Tensor& keep, const ConvArgs& a) {
  TORCH_CHECK(keep.scalar_type() == at::kBool && keep.is_contiguous() &&
                  keep.sizes() == at::IntArrayRef({a.cout, a.cin_g, a.kh, a.kw}),
              "rskcnn: keep must be a contiguous bool tensor of the weight's shape, got ",
              keep.scalar_type(), " ", keep.sizes());
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>(ceil_div(n, kThreads)); }

// CTAs for the row kernels: a warp per row.
unsigned row_blocks_for(int64_t rows) { return static_cast<unsigned>(ceil_div(rows, kWarps)); }

void order_rows(ElementRows& p, cudaStream_t stream) {
  longest_first_kernel<<<blocks_for(p.rows), kThreads, 0, stream>>>(
      p.counts.const_data_ptr<int32_t>(), p.rows, p.order.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

ElementRows plan_filter_rows(const at::Tensor& keep, const ConvArgs& a) {
  check_keep(keep, a);
  ElementRows p = allocate_rows(keep, a.cout, a.cin_g * a.kh * a.kw);
  if (p.rows == 0) return p;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  filter_rows_kernel<<<row_blocks_for(p.rows), kThreads, 0, stream>>>(
      keep.const_data_ptr<bool>(), p.rows, p.capacity, p.entries.mutable_data_ptr<int32_t>(),
      p.counts.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  order_rows(p, stream);
  return p;
}

ElementRows plan_input_rows(const at::Tensor& keep, const ConvArgs& a) {
  check_keep(keep, a);
  const int64_t cout_g = a.cout / a.groups;
  ElementRows p = allocate_rows(keep, a.cin, cout_g * a.kh * a.kw);
  if (p.rows == 0) return p;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  input_rows_kernel<<<row_blocks_for(p.rows), kThreads, 0, stream>>>(
      keep.const_data_ptr<bool>(), p.rows, cout_g, a.cin_g, a.kh * a.kw, p.capacity,
      p.entries.mutable_data_ptr<int32_t>(), p.counts.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  order_rows(p, stream);
  return p;
}

}  // namespace rskcnn::cuda::element
