// Fused CPU kernels for the gates of snl_train.gates: one pass over the activation forward and
// one backward, instead of the 2-5 element-wise passes of the eager formulas.
//
// Every element is computed with the eager formula's operations in the eager formula's order,
// so outputs and input gradients equal the eager path's bit for bit on the same CPU capability:
// torch's AVX2 kernels of addcmul and lerp use fused multiply-adds, so these do too (USE_FMA),
// and nothing else is contracted (-ffp-contract=off). The slope gradient is a sum: it is
// accumulated in double, over the batch (and spatial positions, channel-wise) in a fixed
// order that depends on the shapes only, never on the thread count.
//
// Layout: z is contiguous (N, C, ...); c is either "pixel" shaped (one entry per element of a
// sample, J = numel / N entries) or "channel" shaped (C entries, each shared by the S = J / C
// positions of its channel).

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kGrain = 32768;  // elements per parallel task
constexpr int64_t kLanes = 16;     // partial sums per channel, combined in a fixed order
constexpr int64_t kBlock = 1024;   // slope entries per accumulation block (pixel-wise)

enum Kind : int64_t { kRelu = 0, kHardtanh = 1, kLeakyRelu = 2 };

template <typename T>
inline T mul_add(T a, T b, T c) {  // a * b + c as torch's kernel of this CPU computes it
#ifdef USE_FMA
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

template <typename T>
inline T lerp(T start, T end, T weight) {  // at::native lerp_vec: both branches, then a blend
  T diff = end - start;
  T from_start = mul_add(weight, diff, start);
  T from_end = mul_add(weight - T(1), diff, end);
  return std::abs(weight) < T(0.5) ? from_start : from_end;
}

// z - c * min(z, 0) as addcmul(z, c, clamp(z, max=0), value=-1) computes it.
template <typename T>
struct Relu {
  inline T forward(T z, T c) const {
    T negative = T(0) < z ? T(0) : z;  // clamp(max=0), NaN propagating
    return mul_add(-c, negative, z);
  }
  // grad_z = grad + c * r and d(out)/dc * grad = r * z, with r = threshold_backward(grad, z, 0) - grad
  inline T backward(T grad, T z, T c, T& slope_term) const {
    T r = (z <= T(0) ? T(0) : grad) - grad;
    slope_term = r * z;
    return mul_add(c, r, grad);
  }
};

// lerp(z, hardtanh(z, low, high), c); relu6 is hardtanh(0, 6).
template <typename T>
struct Hardtanh {
  T low, high;
  inline T act(T z) const {  // clamp(z, low, high), NaN propagating
    T v = z < low ? low : z;
    return high < v ? high : v;
  }
  inline T forward(T z, T c) const { return lerp(z, act(z), c); }
  inline T backward(T grad, T z, T c, T& slope_term) const {
    T own = (z <= low || z >= high) ? T(0) : grad;  // hardtanh_backward
    slope_term = (act(z) - z) * grad;
    return lerp(grad, own, c);
  }
};

// lerp(z, leaky_relu(z, slope), c).
template <typename T>
struct LeakyRelu {
  T slope;
  // products computed on both sides of the select, so that the loops vectorize
  inline T act(T z) const {
    T scaled = z * slope;
    return z > T(0) ? z : scaled;
  }
  inline T forward(T z, T c) const { return lerp(z, act(z), c); }
  inline T backward(T grad, T z, T c, T& slope_term) const {
    T scaled = grad * slope;
    T own = z > T(0) ? grad : scaled;  // leaky_relu_backward
    slope_term = (act(z) - z) * grad;
    return lerp(grad, own, c);
  }
};

struct Shape {
  int64_t n, per_sample, channels, positions;
  bool pixel;  // c has one entry per element of a sample (else one per channel)
};

Shape shape_of(const at::Tensor& z, const at::Tensor& c) {
  TORCH_CHECK(z.dim() >= 2 && z.is_contiguous() && c.is_contiguous(), "fused gate: bad layout");
  Shape s;
  s.n = z.size(0);
  s.per_sample = s.n ? z.numel() / s.n : 0;
  s.channels = z.size(1);
  s.positions = s.channels ? s.per_sample / s.channels : 0;
  s.pixel = c.numel() == s.per_sample;
  TORCH_CHECK(s.pixel || c.numel() == s.channels, "fused gate: c fits neither granularity");
  return s;
}

// Element-wise over [begin, end) of the flattened z, in runs that share the slope layout:
// within a sample (pixel-wise, c advances with the element) or within a channel plane
// (channel-wise, one c for the run).
template <typename Fn>
inline void for_runs(const Shape& s, int64_t begin, int64_t end, Fn fn) {
  int64_t row = s.pixel ? s.per_sample : s.positions;
  while (begin < end) {
    int64_t r = begin / row, offset = begin % row;
    int64_t len = std::min(end - begin, row - offset);
    int64_t c_index = s.pixel ? offset : r % s.channels;
    fn(begin, len, c_index);
    begin += len;
  }
}

template <typename T, typename Op>
void forward_impl(const Op op_arg, const Shape& s, const T* z, const T* c, T* out, T* saved) {
  int64_t total = s.n * s.per_sample;
  at::parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
    const Op op = op_arg;  // a local copy: the output pointers cannot alias its constants
    for_runs(s, begin, end, [&](int64_t start, int64_t len, int64_t ci) {
      const T* zp = z + start;
      T* op_ = out + start;
      if (s.pixel) {
        const T* cp = c + ci;
        if (saved) {
          T* sp = saved + start;
#pragma omp simd
          for (int64_t k = 0; k < len; ++k) { T v = zp[k]; sp[k] = v; op_[k] = op.forward(v, cp[k]); }
        } else {
#pragma omp simd
          for (int64_t k = 0; k < len; ++k) op_[k] = op.forward(zp[k], cp[k]);
        }
      } else {
        const T cv = c[ci];
        if (saved) {
          T* sp = saved + start;
#pragma omp simd
          for (int64_t k = 0; k < len; ++k) { T v = zp[k]; sp[k] = v; op_[k] = op.forward(v, cv); }
        } else {
#pragma omp simd
          for (int64_t k = 0; k < len; ++k) op_[k] = op.forward(zp[k], cv);
        }
      }
    });
  });
}

// Input gradient only: element-wise, any split.
template <typename T, typename Op>
void grad_input_impl(const Op op_arg, const Shape& s, const T* g, const T* z, const T* c, T* gz) {
  int64_t total = s.n * s.per_sample;
  at::parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
    const Op op = op_arg;  // a local copy: the output pointers cannot alias its constants
    for_runs(s, begin, end, [&](int64_t start, int64_t len, int64_t ci) {
      const T* gp = g + start;
      const T* zp = z + start;
      T* out = gz + start;
      T unused;
      if (s.pixel) {
        const T* cp = c + ci;
#pragma omp simd private(unused)
        for (int64_t k = 0; k < len; ++k) out[k] = op.backward(gp[k], zp[k], cp[k], unused);
      } else {
        const T cv = c[ci];
#pragma omp simd private(unused)
        for (int64_t k = 0; k < len; ++k) out[k] = op.backward(gp[k], zp[k], cv, unused);
      }
    });
  });
}

// Pixel-wise slope gradient (and the input gradient if gz): tasks own disjoint slope entries,
// each entry summed over the batch in order n = 0, 1, ...
template <typename T, typename Op>
void grad_pixel_impl(const Op op_arg, const Shape& s, const T* g, const T* z, const T* c, T* gz, T* gc) {
  const int64_t J = s.per_sample;
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, s.n));
  at::parallel_for(0, J, grain, [&](int64_t begin, int64_t end) {
    const Op op = op_arg;
    std::vector<double> acc(kBlock);
    for (int64_t j0 = begin; j0 < end; j0 += kBlock) {
      int64_t len = std::min(kBlock, end - j0);
      double* a = acc.data();
      std::fill(a, a + len, 0.0);
      const T* cp = c + j0;
      for (int64_t n = 0; n < s.n; ++n) {
        const T* gp = g + n * J + j0;
        const T* zp = z + n * J + j0;
        if (gz) {
          T* out = gz + n * J + j0;
#pragma omp simd
          for (int64_t k = 0; k < len; ++k) {
            T term;
            out[k] = op.backward(gp[k], zp[k], cp[k], term);
            a[k] += static_cast<double>(term);
          }
        } else {
#pragma omp simd
          for (int64_t k = 0; k < len; ++k) {
            T term;
            (void)op.backward(gp[k], zp[k], cp[k], term);
            a[k] += static_cast<double>(term);
          }
        }
      }
      for (int64_t k = 0; k < len; ++k) gc[j0 + k] = static_cast<T>(a[k]);
    }
  });
}

// Channel-wise slope gradient: tasks own whole channels; a channel's terms go, sample by
// sample and position by position, into kLanes partial sums (position p into lane p % kLanes),
// added up in lane order at the end.
template <typename T, typename Op>
void grad_channel_impl(const Op op_arg, const Shape& s, const T* g, const T* z, const T* c, T* gz, T* gc) {
  const int64_t C = s.channels, S = s.positions, J = s.per_sample;
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    const Op op = op_arg;
    for (int64_t ch = begin; ch < end; ++ch) {
      double lanes[kLanes] = {0};
      const T cv = c[ch];
      for (int64_t n = 0; n < s.n; ++n) {
        int64_t base = n * J + ch * S;
        const T* gp = g + base;
        const T* zp = z + base;
        T* out = gz ? gz + base : nullptr;
        int64_t p = 0;
        for (; p + kLanes <= S; p += kLanes) {
          if (out) {
#pragma omp simd
            for (int64_t k = 0; k < kLanes; ++k) {
              T term;
              out[p + k] = op.backward(gp[p + k], zp[p + k], cv, term);
              lanes[k] += static_cast<double>(term);
            }
          } else {
#pragma omp simd
            for (int64_t k = 0; k < kLanes; ++k) {
              T term;
              (void)op.backward(gp[p + k], zp[p + k], cv, term);
              lanes[k] += static_cast<double>(term);
            }
          }
        }
        for (int64_t k = 0; p + k < S; ++k) {
          T term;
          T value = op.backward(gp[p + k], zp[p + k], cv, term);
          if (out) out[p + k] = value;
          lanes[k] += static_cast<double>(term);
        }
      }
      double total = 0;
      for (int64_t k = 0; k < kLanes; ++k) total += lanes[k];
      gc[ch] = static_cast<T>(total);
    }
  });
}

template <typename T, typename Fn>
void with_op(int64_t kind, double low, double high, double slope, Fn fn) {
  if (kind == kRelu) {
    fn(Relu<T>{});
  } else if (kind == kHardtanh) {
    // torch converts the Scalar bounds to the tensor's dtype before comparing
    fn(Hardtanh<T>{static_cast<T>(low), static_cast<T>(high)});
  } else {
    TORCH_CHECK(kind == kLeakyRelu, "fused gate: unknown activation kind ", kind);
    fn(LeakyRelu<T>{static_cast<T>(slope)});
  }
}

void check_dtype(const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.is_contiguous() && t.device().is_cpu(),
              "fused gate: tensors must be contiguous CPU tensors of one dtype");
}

// out = gate(z); if saved is given, z is copied into it in the same pass (out may be z).
void gate_forward(const at::Tensor& z, const at::Tensor& c, const at::Tensor& out,
                  const std::optional<at::Tensor>& saved, int64_t kind, double low, double high,
                  double slope) {
  Shape s = shape_of(z, c);
  check_dtype(c, z);
  check_dtype(out, z);
  TORCH_CHECK(out.numel() == z.numel(), "fused gate: output size");
  if (saved) {
    check_dtype(*saved, z);
    TORCH_CHECK(saved->numel() == z.numel(), "fused gate: saved size");
  }
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "snl_gate_forward", [&] {
    with_op<scalar_t>(kind, low, high, slope, [&](auto op) {
      forward_impl<scalar_t>(op, s, z.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
                             out.mutable_data_ptr<scalar_t>(),
                             saved ? saved->mutable_data_ptr<scalar_t>() : nullptr);
    });
  });
}

// grad_z and/or grad_c (each optional) from the output gradient and the saved input.
void gate_backward(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& c,
                   const std::optional<at::Tensor>& grad_z, const std::optional<at::Tensor>& grad_c,
                   int64_t kind, double low, double high, double slope) {
  Shape s = shape_of(z, c);
  check_dtype(grad, z);
  check_dtype(c, z);
  TORCH_CHECK(grad.numel() == z.numel(), "fused gate: gradient size");
  if (grad_z) {
    check_dtype(*grad_z, z);
    TORCH_CHECK(grad_z->numel() == z.numel(), "fused gate: input gradient size");
  }
  if (grad_c) {
    check_dtype(*grad_c, z);
    TORCH_CHECK(grad_c->numel() == c.numel(), "fused gate: slope gradient size");
  }
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "snl_gate_backward", [&] {
    with_op<scalar_t>(kind, low, high, slope, [&](auto op) {
      const scalar_t* g = grad.const_data_ptr<scalar_t>();
      const scalar_t* zp = z.const_data_ptr<scalar_t>();
      const scalar_t* cp = c.const_data_ptr<scalar_t>();
      scalar_t* gz = grad_z ? grad_z->mutable_data_ptr<scalar_t>() : nullptr;
      if (!grad_c) {
        if (gz) grad_input_impl<scalar_t>(op, s, g, zp, cp, gz);
        return;
      }
      scalar_t* gc = grad_c->mutable_data_ptr<scalar_t>();
      if (s.pixel || s.positions == 1) {
        Shape flat = s;
        flat.pixel = true;  // one slope per element of a sample either way
        grad_pixel_impl<scalar_t>(op, flat, g, zp, cp, gz, gc);
      } else {
        grad_channel_impl<scalar_t>(op, s, g, zp, cp, gz, gc);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY(snl_fused, m) {
  m.def("gate_forward(Tensor z, Tensor c, Tensor(a!) out, Tensor(b!)? saved, int kind, "
        "float low, float high, float slope) -> ()");
  m.def("gate_backward(Tensor grad, Tensor z, Tensor c, Tensor(a!)? grad_z, Tensor(b!)? grad_c, "
        "int kind, float low, float high, float slope) -> ()");
}

TORCH_LIBRARY_IMPL(snl_fused, CPU, m) {
  m.impl("gate_forward", &gate_forward);
  m.impl("gate_backward", &gate_backward);
}
