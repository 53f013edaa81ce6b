"""Prototype: OpenBLAS sgemm through an XLA FFI custom call against XLA's dot, on
Xception's 1x1 products (issue 27: is a BLAS product faster than XLA:CPU's?).

  pip install scipy-openblas32==0.3.34.481.3
  python benchmarks/bench_blas_pointwise.py --modes=xla,b2,b1,p2

Compiles the small handler below (g++, the vendored XLA FFI headers, the wheel's
cblas.h and libscipy_openblas.so with an rpath) into a temporary directory, registers
it, and for each [M, K] @ [K, N] shape of full-width Xception at batch 8 times the
three products of a layer (forward x @ w, input gradient g @ w^T, kernel gradient
x^T @ g; transposes are sgemm's flags, no copies), each jitted alone, all modes
alternately --repeats times after a check that they agree; prints the median GFLOP/s.
Modes: 'xla' (XLA's dot), 'bT' (one sgemm call, OpenBLAS with T threads of its own),
'pS' (OpenBLAS with 1 thread, the output rows split into S sgemm calls run on XLA's
intra-op pool, the FFI ThreadPool context).

Result on the 2-core AVX-512 Xeon (docs/performance/cpu.md, "OpenBLAS products"):
b2 beats XLA's dot on the 728- and 1536/2048-wide products, loses on the
256/128/64-wide forward and input gradients; but the model with every 1x1 product on b2 ran its training step at 299
~27% slower than XLA's dots, the eval step ~14% slower, so the option was not kept.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import statistics
import subprocess
import tempfile
import time

from absl import app, flags

flags.DEFINE_list("modes", ["xla", "b2", "b1", "p2"], "xla | bT | pS (see the docstring).")
flags.DEFINE_integer("repeats", 7, "Alternating timed calls per product and mode.")
FLAGS = flags.FLAGS

SHAPES = [(8 * 19 * 19, 728, 728), (8 * 37 * 37, 728, 728), (8 * 74 * 74, 256, 256),
          (8 * 147 * 147, 128, 128), (8 * 10 * 10, 1536, 2048), (8 * 147 * 147, 64, 128)]

SOURCE = r'''
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include "xla/ffi/api/ffi.h"
#include "cblas.h"
namespace ffi = xla::ffi;
namespace {
struct LoopState {
  std::function<void(int64_t)> body; int64_t num_chunks = 0;
  std::atomic<int64_t> next{0}; std::atomic<int64_t> done{0};
  std::mutex mu; std::condition_variable cv;
};
void RunChunks(LoopState& s) {
  for (;;) {
    int64_t c = s.next.fetch_add(1);
    if (c >= s.num_chunks) return;
    s.body(c);
    if (s.done.fetch_add(1) + 1 == s.num_chunks) {
      std::lock_guard<std::mutex> l(s.mu); s.cv.notify_all();
    }
  }
}
// As xception_jax/native/depthwise_cpu.cc: the caller and pool tasks claim chunks.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, std::function<void(int64_t)> body) {
  int64_t threads = n > 1 ? pool.num_threads() : 1;
  if (threads <= 1) { for (int64_t c = 0; c < n; ++c) body(c); return; }
  auto s = std::make_shared<LoopState>(); s->body = std::move(body); s->num_chunks = n;
  for (int64_t t = 0; t < std::min(threads - 1, n - 1); ++t) pool.Schedule([s] { RunChunks(*s); });
  RunChunks(*s);
  std::unique_lock<std::mutex> l(s->mu);
  s->cv.wait(l, [&] { return s->done.load() == s->num_chunks; });
}
// out[M, N] = op(a) @ op(b); a is [M, K] ([K, M] if ta), b is [K, N] ([N, K] if tb).
ffi::Error Sgemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                 ffi::ResultBuffer<ffi::F32> out, bool ta, bool tb, int64_t split) {
  auto ad = a.dimensions(), bd = b.dimensions();
  int64_t M = ta ? ad[1] : ad[0], K = ta ? ad[0] : ad[1], N = tb ? bd[0] : bd[1];
  int64_t lda = ad[1], ldb = bd[1];
  const float* ap = a.typed_data(); const float* bp = b.typed_data();
  float* op = out->typed_data();
  auto ta_ = ta ? CblasTrans : CblasNoTrans; auto tb_ = tb ? CblasTrans : CblasNoTrans;
  if (split <= 1) {
    scipy_cblas_sgemm(CblasRowMajor, ta_, tb_, M, N, K, 1.0f, ap, lda, bp, ldb, 0.0f, op, N);
    return ffi::Error::Success();
  }
  ParallelFor(pool, split, [&](int64_t c) {
    int64_t m0 = M * c / split, m1 = M * (c + 1) / split;
    const float* ac = ta ? ap + m0 : ap + m0 * lda;
    scipy_cblas_sgemm(CblasRowMajor, ta_, tb_, m1 - m0, N, K, 1.0f, ac, lda, bp, ldb, 0.0f,
                      op + m0 * N, N);
  });
  return ffi::Error::Success();
}
}  // namespace
extern "C" __attribute__((visibility("default"))) XLA_FFI_Error* ProtoSgemm(XLA_FFI_CallFrame*);
XLA_FFI_DEFINE_HANDLER_SYMBOL(ProtoSgemm, Sgemm, ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()
    .Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
    .Attr<bool>("trans_a").Attr<bool>("trans_b").Attr<int64_t>("split"));
'''


def _build(directory: str) -> tuple[str, str]:
  """Compiles SOURCE; returns (handler library, OpenBLAS library) paths."""
  try:
    import scipy_openblas32  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SystemExit("bench_blas_pointwise: needs OpenBLAS from PyPI: "
                     "pip install scipy-openblas32==0.3.34.481.3") from None
  here = os.path.dirname(os.path.abspath(__file__))
  headers = os.path.join(os.path.dirname(here), "xception_jax", "native", "third_party")
  lib_dir = scipy_openblas32.get_lib_dir()
  source, output = os.path.join(directory, "proto.cc"), os.path.join(directory, "proto.so")
  with open(source, "w", encoding="utf-8") as f:
    f.write(SOURCE)
  command = (shlex.split(os.environ.get("CXX", "g++")) +
             ["-std=c++17", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-pthread",
              "-I", headers, "-I", scipy_openblas32.get_include_dir(), source, "-o", output,
              "-L", lib_dir, "-l" + scipy_openblas32.get_library(), "-Wl,-rpath," + lib_dir])
  subprocess.run(command, check=True, capture_output=True)
  return output, os.path.join(lib_dir, f"lib{scipy_openblas32.get_library()}.so")


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import xception_jax  # pylint: disable=import-outside-toplevel,unused-import  # XLA:CPU flags

  with tempfile.TemporaryDirectory() as directory:
    handler_path, openblas_path = _build(directory)
    handler = ctypes.CDLL(handler_path)
  openblas = ctypes.CDLL(openblas_path)
  jax.ffi.register_ffi_target("proto_sgemm", jax.ffi.pycapsule(handler.ProtoSgemm),
                              platform="cpu")

  def sgemm(a, b, trans_a, trans_b, split):
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    return jax.ffi.ffi_call("proto_sgemm", jax.ShapeDtypeStruct((m, n), jnp.float32))(
        a, b, trans_a=trans_a, trans_b=trans_b, split=np.int64(split))

  def function(mode, kind):
    if mode == "xla":
      return jax.jit({"fwd": lambda x, w: x @ w, "dx": lambda g, w: g @ w.T,
                      "dw": lambda x, g: x.T @ g}[kind])
    split = int(mode[1:]) if mode[0] == "p" else 1
    flags_ = {"fwd": (False, False), "dx": (False, True), "dw": (True, False)}[kind]
    return jax.jit(lambda a, b: sgemm(a, b, *flags_, split))

  def set_threads(mode):
    openblas.scipy_openblas_set_num_threads(int(mode[1:]) if mode[0] == "b" else 1)

  rng = np.random.default_rng(0)
  for m, k, n in SHAPES:
    x, w, g = (jnp.asarray(rng.standard_normal(s, np.float32))
               for s in ((m, k), (k, n), (m, n)))
    operands = {"fwd": (x, w), "dx": (g, w), "dw": (x, g)}
    gflop = 2 * m * k * n / 1e9
    line = f"{m}x{k}x{n}:"
    for kind in ("fwd", "dx", "dw"):
      functions = {mode: function(mode, kind) for mode in FLAGS.modes}
      reference = None
      for mode, f in functions.items():
        set_threads(mode)
        out = np.asarray(f(*operands[kind]))
        if reference is None:
          reference = out
        np.testing.assert_allclose(out, reference, rtol=1e-3,
                                   atol=1e-4 * np.abs(reference).max(), err_msg=mode)
      times = {mode: [] for mode in functions}
      for _ in range(FLAGS.repeats):
        for mode, f in functions.items():
          set_threads(mode)
          start = time.perf_counter()
          f(*operands[kind]).block_until_ready()
          times[mode].append(time.perf_counter() - start)
      line += f"  {kind}: " + " ".join(
          f"{mode} {gflop / statistics.median(t):.0f}" for mode, t in times.items())
    print(line + " GFLOP/s", flush=True)


if __name__ == "__main__":
  app.run(main)
