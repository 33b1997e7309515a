// Moving one chunk of Chunk pixels between NCHW tensors and row-major chunk
// buffers (one row of Chunk values per channel or per (channel, tap)).
// Pixel q of the output chunk is (n, oh, ow) with q = (n * OH + oh) * OW + ow; of the
// input chunk, (n, ih, iw) with q = (n * H + ih) * W + iw. Past the end rows are 0.
#pragma once

#include <cstdint>
#include <vector>

#include "../conv_args.h"

namespace rskcnn::cpu {

// Both gathers first find, per tap and chunk pixel, the offset of the value in the
// group's first channel (-1: padding or no source) in `offsets`, so the loop over
// channels is a plain gather.

// Pixels [j, j + len) of a chunk row: a copy of src[off, off + len), or zeros if off < 0.
struct Run {
  int32_t j, len;
  int64_t off;
};

// Splits one tap's row of offsets into runs of consecutive sources or of padding.
template <int Chunk>
void append_runs(const int64_t* off, std::vector<Run>& runs) {
  for (int j = 0; j < Chunk;) {
    int len = 1;
    while (j + len < Chunk && (off[j] < 0 ? off[j + len] < 0 : off[j + len] == off[j] + len)) ++len;
    runs.push_back(Run{j, len, off[j]});
    j += len;
  }
}

// cols[c * taps + t][j] = planes[c * plane + offsets[t * Chunk + j]], or 0 where the offset is -1.
// With stride 1 a tap's chunk row is a few image-row runs, copied as such (vectorised); with
// short runs (strided or dilated reads) it is gathered value by value.
template <int Chunk, typename T>
void gather_planes(const T* planes, int64_t channels, int64_t plane, int64_t taps,
                   const int64_t* offsets, T* cols) {
  std::vector<Run> runs;
  std::vector<size_t> first(taps + 1);
  for (int64_t t = 0; t < taps; ++t) {
    first[t] = runs.size();
    append_runs<Chunk>(offsets + t * Chunk, runs);
  }
  first[taps] = runs.size();
  const bool long_runs = static_cast<int64_t>(runs.size()) * 8 <= taps * Chunk;
  for (int64_t c = 0; c < channels; ++c) {
    const T* src = planes + c * plane;
    for (int64_t t = 0; t < taps; ++t) {
      T* row = cols + (c * taps + t) * Chunk;
      if (long_runs) {
        for (size_t r = first[t]; r < first[t + 1]; ++r) {
          const Run& run = runs[r];
          T* dst = row + run.j;
          if (run.off < 0) {
            for (int32_t k = 0; k < run.len; ++k) dst[k] = T(0);
          } else {
            const T* from = src + run.off;
            for (int32_t k = 0; k < run.len; ++k) dst[k] = from[k];
          }
        }
      } else {
        const int64_t* off = offsets + t * Chunk;
        for (int j = 0; j < Chunk; ++j) row[j] = off[j] >= 0 ? src[off[j]] : T(0);
      }
    }
  }
}

// cols[(c * KH + kh) * KW + kw][j] = input value that tap (kh, kw) of output pixel q0 + j
// reads from channel c of conv group `group` (0 in the padding).
template <int Chunk, typename T>
void gather_input_columns(const T* x, const ConvArgs& a, int64_t group, int64_t q0, T* cols,
                          std::vector<int64_t>& offsets) {
  const int64_t total = a.n * a.oh * a.ow;
  const int64_t taps = a.kh * a.kw;
  const int64_t plane = a.h * a.w;
  offsets.resize(taps * Chunk);
  for (int j = 0; j < Chunk; ++j) {
    const int64_t q = q0 + j;
    const int64_t n = q / (a.oh * a.ow), pix = q % (a.oh * a.ow);
    const int64_t base = (n * a.cin + group * a.cin_g) * plane;
    const int64_t row0 = (pix / a.ow) * a.sh - a.ph, col0 = (pix % a.ow) * a.sw - a.pw;
    for (int64_t kh = 0; kh < a.kh; ++kh) {
      for (int64_t kw = 0; kw < a.kw; ++kw) {
        const int64_t ih = row0 + kh * a.dh, iw = col0 + kw * a.dw;
        const bool inside = q < total && ih >= 0 && ih < a.h && iw >= 0 && iw < a.w;
        offsets[(kh * a.kw + kw) * Chunk + j] = inside ? base + ih * a.w + iw : -1;
      }
    }
  }
  gather_planes<Chunk>(x, a.cin_g, plane, taps, offsets.data(), cols);
}

// cols[(o * KH + kh) * KW + kw][j] = grad_output value that reached input pixel q0 + j
// through tap (kh, kw) of output channel o of conv group `group` (0 if none did).
template <int Chunk, typename T>
void gather_grad_output_columns(const T* go, const ConvArgs& a, int64_t group, int64_t q0, T* cols,
                                std::vector<int64_t>& offsets) {
  const int64_t total = a.n * a.h * a.w;
  const int64_t cout_g = a.cout / a.groups;
  const int64_t taps = a.kh * a.kw;
  const int64_t plane = a.oh * a.ow;
  offsets.resize(taps * Chunk);
  for (int j = 0; j < Chunk; ++j) {
    const int64_t q = q0 + j;
    const int64_t n = q / (a.h * a.w), pix = q % (a.h * a.w);
    const int64_t base = (n * a.cout + group * cout_g) * plane;
    const int64_t row0 = pix / a.w + a.ph, col0 = pix % a.w + a.pw;
    for (int64_t kh = 0; kh < a.kh; ++kh) {
      for (int64_t kw = 0; kw < a.kw; ++kw) {
        const int64_t h_off = row0 - kh * a.dh, w_off = col0 - kw * a.dw;
        const int64_t oh = h_off / a.sh, ow = w_off / a.sw;
        const bool hit = q < total && h_off >= 0 && w_off >= 0 && h_off % a.sh == 0 &&
                         w_off % a.sw == 0 && oh < a.oh && ow < a.ow;
        offsets[(kh * a.kw + kw) * Chunk + j] = hit ? base + oh * a.ow + ow : -1;
      }
    }
  }
  gather_planes<Chunk>(go, cout_g, plane, taps, offsets.data(), cols);
}

// rows[c][j] = t[n, first_channel + c, pixel] for the chunk's pixels of an
// (N, channels, plane) tensor; 0 past the end.
template <int Chunk, typename T>
void gather_rows(const T* t, int64_t channels, int64_t plane, int64_t total, int64_t first_channel,
                 int64_t count, int64_t q0, T* rows) {
  for (int64_t j = 0; j < Chunk;) {
    const int64_t q = q0 + j;
    if (q >= total) {
      for (int64_t c = 0; c < count; ++c)
        for (int64_t jj = j; jj < Chunk; ++jj) rows[c * Chunk + jj] = T(0);
      break;
    }
    const int64_t n = q / plane, pix = q % plane;
    const int64_t run = std::min<int64_t>(Chunk - j, plane - pix);
    for (int64_t c = 0; c < count; ++c) {
      const T* src = t + (n * channels + first_channel + c) * plane + pix;
      std::copy(src, src + run, rows + c * Chunk + j);
    }
    j += run;
  }
}

// The inverse of gather_rows, adding bias[c] when given.
template <int Chunk, typename T>
void scatter_rows(const T* rows, int64_t channels, int64_t plane, int64_t total, int64_t first_channel,
                  int64_t count, int64_t q0, const T* bias, T* t) {
  for (int64_t j = 0; j < Chunk && q0 + j < total;) {
    const int64_t q = q0 + j;
    const int64_t n = q / plane, pix = q % plane;
    const int64_t run = std::min<int64_t>({Chunk - j, plane - pix, total - q});
    for (int64_t c = 0; c < count; ++c) {
      const T* src = rows + c * Chunk + j;
      T* dst = t + (n * channels + first_channel + c) * plane + pix;
      const T b = bias ? bias[first_channel + c] : T(0);
      for (int64_t r = 0; r < run; ++r) dst[r] = src[r] + b;
    }
    j += run;
  }
}

}  // namespace rskcnn::cpu
