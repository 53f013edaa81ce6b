// Depthwise 'SAME' correlation on CPU, registered with XLA through the FFI.
//
// NHWC float32 inputs x [N, H, W, C], taps [kh, kw, C] (odd kh, kw), integer
// dilation d; zero padding p = d * (k // 2) on each side, stride 1:
//
//   y[n, h, w, c] = sum_{i, j} x[n, h + d*i - ph, w + d*j - pw, c] * taps[i, j, c]
//
// Two handlers:
//   xception_jax_depthwise_fwd    y = correlate(x, taps). The input gradient is
//                                 the same call with the taps flipped in both
//                                 spatial axes (the Python side flips them).
//   xception_jax_depthwise_dtaps  per-sample kernel gradient
//                                 dtaps[n, i, j, c] = sum_{h, w} x[n, h + d*i - ph,
//                                 w + d*j - pw, c] * g[n, h, w, c]
//                                 (the Python side sums over n: a tiny reduction,
//                                 and one that keeps a leading batch axis).
//
// Speed: channels are innermost and contiguous, so every inner loop is a
// fixed-width block of channels held in vector registers (blocks of 64 floats =
// 8 vectors of 8, then 16, then 8, then single channels for the rest).
// Forward: for each output pixel, the list of valid taps is built once and the
// channel blocks accumulate over it in registers, then store once. Kernel
// gradient: for each (group of rows of ~256 pixels, tap, channel block) the
// products are summed in float32 registers, and each group's sum is added to a
// float64 partial; rows are split into chunks whose partials are added in a fixed order,
// so the result does not depend on the number of threads.
//
// Threads: work is split over rows (n, h) into chunks, run by ParallelFor on
// XLA's own intra-op thread pool (common.h).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"

namespace {

using xception_jax_native::ParallelFor;

// Splits `rows` rows of `work_per_row` multiply-adds into chunks of at least
// kMinChunkWork (smaller work runs on the calling thread alone), at most
// kMaxChunks of them.
constexpr int64_t kMinChunkWork = 1 << 17;
constexpr int64_t kMaxChunks = 64;
constexpr int64_t kMaxGradChunks = 16;

int64_t NumChunks(int64_t rows, int64_t work_per_row) {
  const int64_t by_work = std::max<int64_t>(1, rows * work_per_row / kMinChunkWork);
  return std::max<int64_t>(1, std::min({rows, by_work, kMaxChunks}));
}

// ---------------------------------------------------------------------------
// Shapes.

struct Geometry {
  int64_t n, h, w, c, kh, kw, d, ph, pw;
};

ffi::Error CheckGeometry(const ffi::Buffer<ffi::F32>& x, int64_t kh, int64_t kw,
                         int64_t kc, int64_t dilation, Geometry* geo) {
  auto dims = x.dimensions();
  if (dims.size() != 4) {
    return ffi::Error::InvalidArgument("depthwise: x must be NHWC (rank 4)");
  }
  if (kh % 2 == 0 || kw % 2 == 0 || kh < 1 || kw < 1) {
    return ffi::Error::InvalidArgument("depthwise: kernel sizes must be odd");
  }
  if (kc != dims[3]) {
    return ffi::Error::InvalidArgument(
        "depthwise: taps' channel count " + std::to_string(kc) +
        " != input channels " + std::to_string(dims[3]));
  }
  if (dilation < 1) {
    return ffi::Error::InvalidArgument("depthwise: dilation must be >= 1");
  }
  *geo = Geometry{dims[0], dims[1], dims[2], dims[3], kh, kw, dilation,
                  dilation * (kh / 2), dilation * (kw / 2)};
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------
// Forward: y = correlate(x, taps).

// Vectors of 8 floats (GCC/Clang vector extensions): one AVX2 register, two SSE
// registers on older targets; unaligned, and allowed to alias float arrays.
typedef float Vec __attribute__((vector_size(32), aligned(4), may_alias));
constexpr int kLanes = 8;

inline Vec Load(const float* p) { return *reinterpret_cast<const Vec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<Vec*>(p) = v; }

// out[c .. c+8V) = sum_t in[t][c ..] * k[t][c ..]: V vector accumulators kept in
// registers over the taps, one store.
template <int V>
inline void TapBlock(const float* const* in, const float* const* k, int ntaps,
                     int64_t c, float* out) {
  Vec acc[V] = {};
  for (int t = 0; t < ntaps; ++t) {
    const float* a = in[t] + c;
    const float* b = k[t] + c;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[v] += Load(a + v * kLanes) * Load(b + v * kLanes);
  }
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) Store(out + c + v * kLanes, acc[v]);
}

inline void TapScalar(const float* const* in, const float* const* k, int ntaps,
                      int64_t c, float* out) {
  float acc = 0.0f;
  for (int t = 0; t < ntaps; ++t) acc += in[t][c] * k[t][c];
  out[c] = acc;
}

// `in` and `k` are scratch arrays of kh * kw pointers.
void ForwardRow(const Geometry& g, const float* x, const float* taps, float* y,
                int64_t row, const float** in, const float** k) {
  const int64_t n = row / g.h, h = row % g.h;
  const int64_t row_stride = g.w * g.c;
  float* out_row = y + row * row_stride;
  for (int64_t w = 0; w < g.w; ++w) {
    int ntaps = 0;
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t hi = h + g.d * i - g.ph;
      if (hi < 0 || hi >= g.h) continue;
      const float* in_row = x + (n * g.h + hi) * row_stride;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t wi = w + g.d * j - g.pw;
        if (wi < 0 || wi >= g.w) continue;
        in[ntaps] = in_row + wi * g.c;
        k[ntaps] = taps + (i * g.kw + j) * g.c;
        ++ntaps;
      }
    }
    float* out = out_row + w * g.c;
    int64_t c = 0;
    for (; c + 8 * kLanes <= g.c; c += 8 * kLanes) TapBlock<8>(in, k, ntaps, c, out);
    for (; c + 2 * kLanes <= g.c; c += 2 * kLanes) TapBlock<2>(in, k, ntaps, c, out);
    for (; c + kLanes <= g.c; c += kLanes) TapBlock<1>(in, k, ntaps, c, out);
    for (; c < g.c; ++c) TapScalar(in, k, ntaps, c, out);
  }
}

ffi::Error DepthwiseForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                            ffi::Buffer<ffi::F32> taps,
                            ffi::ResultBuffer<ffi::F32> y, int64_t dilation) {
  auto tdims = taps.dimensions();
  if (tdims.size() != 3) {
    return ffi::Error::InvalidArgument("depthwise: taps must be [kh, kw, C]");
  }
  Geometry g;
  if (auto err = CheckGeometry(x, tdims[0], tdims[1], tdims[2], dilation, &g);
      err.failure()) {
    return err;
  }
  const float* xp = x.typed_data();
  const float* tp = taps.typed_data();
  float* yp = y->typed_data();
  const int64_t rows = g.n * g.h;
  const int64_t chunks = NumChunks(rows, g.w * g.c * g.kh * g.kw);
  ParallelFor(pool, chunks, [&](int64_t chunk) {
    const int64_t r0 = rows * chunk / chunks, r1 = rows * (chunk + 1) / chunks;
    std::vector<const float*> in(g.kh * g.kw), k(g.kh * g.kw);
    for (int64_t r = r0; r < r1; ++r) ForwardRow(g, xp, tp, yp, r, in.data(), k.data());
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------
// Kernel gradient, per sample.

// part[c .. c+8V) += sum_r sum_{w < count} a[r][w*stride + c ..] * b[r][w*stride + c ..]
// over `rows` row segments: V vector accumulators in float32 over a few rows (at
// least kGroupPixels products per lane), then added to float64 partials.
template <int V>
inline void DotBlock(const float* const* a, const float* const* b, int rows,
                     int64_t count, int64_t stride, int64_t c, double* part) {
  Vec acc[V] = {};
  for (int r = 0; r < rows; ++r) {
    const float* ar = a[r] + c;
    const float* br = b[r] + c;
    for (int64_t w = 0; w < count; ++w) {
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        acc[v] += Load(ar + w * stride + v * kLanes) * Load(br + w * stride + v * kLanes);
      }
    }
  }
  for (int v = 0; v < V; ++v) {
    for (int i = 0; i < kLanes; ++i) part[c + v * kLanes + i] += acc[v][i];
  }
}

inline void DotScalar(const float* const* a, const float* const* b, int rows,
                      int64_t count, int64_t stride, int64_t c, double* part) {
  float acc = 0.0f;
  for (int r = 0; r < rows; ++r) {
    for (int64_t w = 0; w < count; ++w) acc += a[r][w * stride + c] * b[r][w * stride + c];
  }
  part[c] += acc;
}

constexpr int64_t kGroupPixels = 256;

// part[t, c] += sum_{h in [h0, h1), w} x[n, h + d*i - ph, w + d*j - pw, c] * g[n, h, w, c]
// for the rows h0 .. h1 of sample n, in groups of about kGroupPixels pixels.
void KernelGradRows(const Geometry& g, const float* x, const float* gy, double* part,
                    int64_t n, int64_t h0, int64_t h1) {
  const int64_t row_stride = g.w * g.c;
  const int64_t group = std::max<int64_t>(1, (kGroupPixels + g.w - 1) / g.w);
  std::vector<const float*> a(group), b(group);
  for (int64_t ha = h0; ha < h1; ha += group) {
    const int64_t hb = std::min(h1, ha + group);
    for (int64_t i = 0; i < g.kh; ++i) {
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t shift = g.d * j - g.pw;  // wi = w + shift
        const int64_t w0 = std::max<int64_t>(0, -shift);
        const int64_t w1 = std::min<int64_t>(g.w, g.w - shift);
        if (w1 <= w0) continue;
        int rows = 0;
        for (int64_t h = ha; h < hb; ++h) {
          const int64_t hi = h + g.d * i - g.ph;
          if (hi < 0 || hi >= g.h) continue;
          a[rows] = x + (n * g.h + hi) * row_stride + (w0 + shift) * g.c;
          b[rows] = gy + (n * g.h + h) * row_stride + w0 * g.c;
          ++rows;
        }
        if (rows == 0) continue;
        double* p = part + (i * g.kw + j) * g.c;
        const int64_t count = w1 - w0;
        const float* const* ap = a.data();
        const float* const* bp = b.data();
        int64_t c = 0;
        for (; c + 8 * kLanes <= g.c; c += 8 * kLanes) DotBlock<8>(ap, bp, rows, count, g.c, c, p);
        for (; c + 2 * kLanes <= g.c; c += 2 * kLanes) DotBlock<2>(ap, bp, rows, count, g.c, c, p);
        for (; c + kLanes <= g.c; c += kLanes) DotBlock<1>(ap, bp, rows, count, g.c, c, p);
        for (; c < g.c; ++c) DotScalar(ap, bp, rows, count, g.c, c, p);
      }
    }
  }
}

ffi::Error DepthwiseKernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                               ffi::Buffer<ffi::F32> gy,
                               ffi::ResultBuffer<ffi::F32> dtaps,
                               int64_t dilation) {
  auto ddims = dtaps->dimensions();
  if (ddims.size() != 4) {
    return ffi::Error::InvalidArgument("depthwise: dtaps must be [N, kh, kw, C]");
  }
  Geometry g;
  if (auto err = CheckGeometry(x, ddims[1], ddims[2], ddims[3], dilation, &g);
      err.failure()) {
    return err;
  }
  if (ddims[0] != g.n || gy.dimensions().size() != 4 ||
      gy.element_count() != x.element_count()) {
    return ffi::Error::InvalidArgument("depthwise: x, g and dtaps disagree in shape");
  }
  const float* xp = x.typed_data();
  const float* gp = gy.typed_data();
  float* dp = dtaps->typed_data();
  const int64_t taps_size = g.kh * g.kw * g.c;
  // Chunks never straddle two samples: (sample, block of rows) pairs. Their
  // number depends on the shape only, so the sums are the same on any machine.
  // At most kMaxGradChunks float64 partials of the taps' size.
  const int64_t blocks = std::max<int64_t>(
      1, std::min(NumChunks(g.n * g.h, g.w * g.c * g.kh * g.kw), kMaxGradChunks) /
             std::max<int64_t>(g.n, 1));
  const int64_t chunks = g.n * blocks;
  std::vector<double> partials(chunks * taps_size, 0.0);
  ParallelFor(pool, chunks, [&](int64_t chunk) {
    const int64_t n = chunk / blocks, b = chunk % blocks;
    const int64_t h0 = g.h * b / blocks, h1 = g.h * (b + 1) / blocks;
    double* part = partials.data() + chunk * taps_size;
    KernelGradRows(g, xp, gp, part, n, h0, h1);
  });
  for (int64_t n = 0; n < g.n; ++n) {
    float* out = dp + n * taps_size;
    const double* first = partials.data() + n * blocks * taps_size;
    for (int64_t t = 0; t < taps_size; ++t) {
      double sum = first[t];
      for (int64_t b = 1; b < blocks; ++b) sum += first[b * taps_size + t];
      out[t] = static_cast<float>(sum);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

extern "C" XCEPTION_JAX_EXPORT XLA_FFI_Error* XceptionJaxDepthwiseForward(XLA_FFI_CallFrame*);
extern "C" XCEPTION_JAX_EXPORT XLA_FFI_Error* XceptionJaxDepthwiseKernelGrad(
    XLA_FFI_CallFrame*);

XLA_FFI_DEFINE_HANDLER_SYMBOL(XceptionJaxDepthwiseForward, DepthwiseForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // taps
                                  .Ret<ffi::Buffer<ffi::F32>>()  // y
                                  .Attr<int64_t>("dilation"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(XceptionJaxDepthwiseKernelGrad, DepthwiseKernelGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // g
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dtaps per sample
                                  .Attr<int64_t>("dilation"));
