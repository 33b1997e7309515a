// Element-mask row lists on the GPU: one thread per row runs plan_row / plan_column of
// csrc/block_mask.h on an element geometry (block 1x1x1x1), then a rank kernel orders
// the rows longest first. Two launches, no host sync.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <limits>

#include "element_common.cuh"
#include "element_plan.cuh"

namespace rskcnn::cuda::element {
namespace {

constexpr int kThreads = 128;

__device__ void check_row(const int32_t* list, int32_t count, int64_t capacity) {
#ifdef RSKCNN_CUDA_DEBUG
  RSKCNN_DEVICE_ASSERT(count >= 0 && count <= capacity);
  for (int32_t k = 0; k < count; ++k) {
    RSKCNN_DEVICE_ASSERT(list[k] >= 0 && list[k] < capacity);
    RSKCNN_DEVICE_ASSERT(k == 0 || list[k] > list[k - 1]);
  }
#endif
}

// geo: element geometry of the whole weight (Cout, Cin_g, KH, KW).
__global__ void filter_rows_kernel(const bool* keep, BlockMaskGeometry geo, int64_t capacity,
                                   int32_t* entries, int32_t* counts) {
  const int64_t o = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (o >= geo.cout) return;
  int32_t* list = entries + o * capacity;
  const int32_t count = plan_row(keep, geo, o, list);
  check_row(list, count, capacity);
  counts[o] = count;
}

// geo: element geometry of one group's filters (Cout_g, Cin_g, KH, KW). They are a
// contiguous slice of keep, so the column plan of that slice is exactly the group's list.
__global__ void input_rows_kernel(const bool* keep, BlockMaskGeometry geo, int64_t rows,
                                  int64_t capacity, int32_t* entries, int32_t* counts) {
  const int64_t c = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (c >= rows) return;
  const int64_t group = c / geo.cin_g;
  const bool* group_keep = keep + group * geo.cout * geo.cin_g * geo.kh * geo.kw;
  int32_t* list = entries + c * capacity;
  const int32_t count = plan_column(group_keep, geo, c - group * geo.cin_g, list);
  check_row(list, count, capacity);
  counts[c] = count;
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
  const BlockMaskGeometry geo = make_geometry(a.cout, a.cin_g, a.kh, a.kw, 1, 1, 1, 1);
  filter_rows_kernel<<<blocks_for(p.rows), kThreads, 0, stream>>>(
      keep.const_data_ptr<bool>(), geo, p.capacity, p.entries.mutable_data_ptr<int32_t>(),
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
  const BlockMaskGeometry geo = make_geometry(cout_g, a.cin_g, a.kh, a.kw, 1, 1, 1, 1);
  input_rows_kernel<<<blocks_for(p.rows), kThreads, 0, stream>>>(
      keep.const_data_ptr<bool>(), geo, p.rows, p.capacity, p.entries.mutable_data_ptr<int32_t>(),
      p.counts.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  order_rows(p, stream);
  return p;
}

}  // namespace rskcnn::cuda::element
