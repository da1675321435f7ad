// Row gather for the device-resident training loop (fastmlp.Trainer on a CUDA model): the rows of a
// data set that the epoch's permutation picks, copied into a batch buffer without leaving the GPU.
#include <algorithm>

#include "cuda/check.h"
#include "cuda/kernels.h"

namespace fastmlp::cuda {

namespace {

constexpr int kThreads = 256;

// dst word w = row w / words of the batch, word w % words of that row: src row index[w / words].
__global__ void gather_rows_kernel(uint32_t* dst, const uint32_t* src, const int64_t* index,
                                   int64_t rows, int64_t words) {
  const int64_t total = rows * words;
  for (int64_t w = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; w < total;
       w += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = w / words;
    dst[w] = src[index[r] * words + (w - r * words)];
  }
}

}  // namespace

void gather_rows(void* dst, const void* src, const int64_t* index, int64_t rows, int64_t row_bytes,
                 cudaStream_t stream) {
  FASTMLP_CHECK(rows >= 0, "gather_rows: negative row count ", rows);
  FASTMLP_CHECK(row_bytes >= 0 && row_bytes % 4 == 0,
                "gather_rows: row_bytes must be a multiple of 4, got ", row_bytes);
  const int64_t words = row_bytes / 4;
  if (rows == 0 || words == 0) return;
  const int64_t blocks = std::min<int64_t>((rows * words + kThreads - 1) / kThreads, 65535);
  gather_rows_kernel<<<static_cast<int>(blocks), kThreads, 0, stream>>>(
      static_cast<uint32_t*>(dst), static_cast<const uint32_t*>(src), index, rows, words);
  check_launch("gather_rows");
}

}  // namespace fastmlp::cuda
