// Float32 matrix products by a CBLAS sgemm, on XLA's intra-op thread pool.
//
// One handler, xception_jax_gemm: out[M, N] = op(a) @ op(b), row-major, where
// op(a) is a ([M, K]) or, with trans_a, a^T (a is [K, M]); likewise b ([K, N],
// or [N, K] with trans_b). The three products of a 1x1 convolution's layer
// (forward x @ w, input gradient g @ w^T, kernel gradient x^T @ g) are this one
// call with sgemm's transpose flags: no copies.
//
// The sgemm is not linked at build time. Python (xception_jax/native/blas.py)
// loads a CBLAS library (Intel MKL from its wheel, on MKL's single-threaded
// layer) and hands the address of its cblas_sgemm to XceptionJaxSetSgemm before
// the first product. The output rows are split into one chunk per thread of
// XLA's pool (at least kMinRows rows each) and each chunk is one single-threaded
// sgemm call: the library's own threads would compete with XLA's pool between
// the products (docs/performance/cpu.md, "OpenBLAS products"). A product with
// too few rows for every thread and a long contraction (the kernel gradient of a
// 64-channel layer: 64 rows, K = the batch's pixels) is split along K instead:
// each thread multiplies a slice of K, and the partial products are added in
// slice order.
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

namespace {

using xception_jax_native::ParallelFor;

// cblas.h's ABI: enum values and the LP64 (32-bit int) interface.
constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;
using SgemmFn = void (*)(int layout, int trans_a, int trans_b, int m, int n, int k,
                         float alpha, const float* a, int lda, const float* b, int ldb,
                         float beta, float* c, int ldc);

std::atomic<SgemmFn> g_sgemm{nullptr};

// A chunk of fewer rows than this is not worth a thread (and repacks b).
constexpr int64_t kMinRows = 64;
// A slice of the contraction shorter than this is not worth a thread.
constexpr int64_t kMinSliceK = 4096;

ffi::Error Gemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                ffi::ResultBuffer<ffi::F32> out, bool trans_a, bool trans_b) {
  const SgemmFn sgemm = g_sgemm.load();
  if (sgemm == nullptr) {
    return ffi::Error::Internal(
        "gemm: no CBLAS sgemm was set (xception_jax.native.blas loads one)");
  }
  const auto ad = a.dimensions();
  const auto bd = b.dimensions();
  const auto od = out->dimensions();
  if (ad.size() != 2 || bd.size() != 2 || od.size() != 2) {
    return ffi::Error::InvalidArgument("gemm: operands and result must be 2-D");
  }
  const int64_t m = trans_a ? ad[1] : ad[0];
  const int64_t k = trans_a ? ad[0] : ad[1];
  const int64_t kb = trans_b ? bd[1] : bd[0];
  const int64_t n = trans_b ? bd[0] : bd[1];
  if (k != kb || od[0] != m || od[1] != n) {
    return ffi::Error::InvalidArgument("gemm: shapes do not multiply");
  }
  const int64_t lda = ad[1];
  const int64_t ldb = bd[1];
  for (int64_t value : {m, n, k, lda, ldb}) {
    if (value > INT_MAX) {
      return ffi::Error::InvalidArgument("gemm: a dimension exceeds CBLAS's 32-bit int");
    }
  }
  float* c = out->typed_data();
  if (m == 0 || n == 0) return ffi::Error::Success();
  if (k == 0) {
    std::memset(c, 0, sizeof(float) * m * n);
    return ffi::Error::Success();
  }
  const float* ap = a.typed_data();
  const float* bp = b.typed_data();
  const int ta = trans_a ? kTrans : kNoTrans;
  const int tb = trans_b ? kTrans : kNoTrans;
  const int64_t threads = pool.num_threads();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads, m / kMinRows));
  const int64_t slices = std::min<int64_t>(threads, k / kMinSliceK);
  if (chunks < threads && slices > chunks) {
    // out = sum over slices s of op(a)[:, K_s] @ op(b)[K_s, :]; slice 0 writes out,
    // the others a buffer each, added in slice order afterwards.
    std::vector<float> partial(static_cast<size_t>((slices - 1) * m * n));
    ParallelFor(pool, slices, [&](int64_t slice) {
      const int64_t k0 = k * slice / slices;
      const int64_t k1 = k * (slice + 1) / slices;
      const float* a_slice = trans_a ? ap + k0 * lda : ap + k0;
      const float* b_slice = trans_b ? bp + k0 : bp + k0 * ldb;
      float* target = slice == 0 ? c : partial.data() + (slice - 1) * m * n;
      sgemm(kRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n),
            static_cast<int>(k1 - k0), 1.0f, a_slice, static_cast<int>(lda), b_slice,
            static_cast<int>(ldb), 0.0f, target, static_cast<int>(n));
    });
    for (int64_t slice = 1; slice < slices; ++slice) {
      const float* part = partial.data() + (slice - 1) * m * n;
      for (int64_t i = 0; i < m * n; ++i) c[i] += part[i];
    }
    return ffi::Error::Success();
  }
  ParallelFor(pool, chunks, [&](int64_t chunk) {
    const int64_t m0 = m * chunk / chunks;
    const int64_t m1 = m * (chunk + 1) / chunks;
    const float* a_rows = trans_a ? ap + m0 : ap + m0 * lda;
    sgemm(kRowMajor, ta, tb, static_cast<int>(m1 - m0), static_cast<int>(n),
          static_cast<int>(k), 1.0f, a_rows, static_cast<int>(lda), bp,
          static_cast<int>(ldb), 0.0f, c + m0 * n, static_cast<int>(n));
  });
  return ffi::Error::Success();
}

}  // namespace

// Called once by xception_jax/native/blas.py with the address of a CBLAS
// library's cblas_sgemm (nullptr unsets it).
extern "C" XCEPTION_JAX_EXPORT void XceptionJaxSetSgemm(void* sgemm) {
  g_sgemm.store(reinterpret_cast<SgemmFn>(sgemm));
}

extern "C" XCEPTION_JAX_EXPORT XLA_FFI_Error* XceptionJaxGemm(XLA_FFI_CallFrame*);

XLA_FFI_DEFINE_HANDLER_SYMBOL(XceptionJaxGemm, Gemm,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // a
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b"));
