// Optimizer kernels tch does not expose, callable on tensors owned by Rust.
//
// - libtorch's fused Adam/AdamW (at::_fused_adam_ / at::_fused_adamw_), which
//   update every parameter in one pass per tensor (about 2x faster than the
//   unfused sequence at small batch sizes, where the optimizer step
//   dominates);
// - dropping a gradient (PyTorch's zero_grad(set_to_none=True));
// - hopper's lazy Adam over the touched rows of a sparse first layer.
//
// The tensors stay owned by Rust: tch's tensor handles are `at::Tensor*`, so
// this shim only builds tensor lists from them and calls the kernels.
//
// Errors are returned as a malloc'ed message (free with hopper_free_error),
// never thrown across the FFI boundary.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" {

char *hopper_fused_adam(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs,
                        at::Tensor **exp_avg_sqs, at::Tensor *step, size_t n, double lr,
                        double beta1, double beta2, double weight_decay, double eps,
                        int decoupled) {
  try {
    std::vector<at::Tensor> p, g, m, v, s;
    p.reserve(n), g.reserve(n), m.reserve(n), v.reserve(n), s.reserve(n);
    for (size_t i = 0; i < n; i++) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      s.push_back(*step);  // the kernel only reads the step count
    }
    if (decoupled) {
      at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps, false, false);
    } else {
      at::_fused_adam_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps, false, false);
    }
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  } catch (...) {
    return strdup("unknown C++ exception in fused Adam");
  }
}

void hopper_free_error(char *message) { free(message); }

// Drops a parameter's gradient (PyTorch's zero_grad(set_to_none=True)): the
// next backward pass stores its gradient instead of adding it to zeros, which
// saves a memset and an add over every parameter per step. tch only offers
// zeroing.
void hopper_set_grad_none(at::Tensor *param) { param->mutable_grad().reset(); }

}  // extern "C"

namespace {

// Lazy Adam on the rows of `w` that `indices` touched, CPU, one pass per row.
//
// `indices` is [n, k] (the k active rows of each of n bags) and `bag_grad` is
// [n, H], the loss gradient of each bag's sum; a row's gradient is the sum of
// the gradients of the bags that hold it (twice if a bag holds it twice).
// Rows are grouped by a counting sort, then each touched row gets its
// gradient summed, Adam's moment updates and its parameter update in one
// sweep over H, in parallel across rows; untouched rows, their moments
// included, are not read. The arithmetic is PyTorch's fused CPU Adam's.
void lazy_adam_rows_cpu(const at::Tensor &w, const at::Tensor &m, const at::Tensor &v,
                        const at::Tensor &indices, const at::Tensor &bag_grad, int64_t step,
                        double lr, double beta1, double beta2, double weight_decay, double eps) {
  const int64_t rows = w.size(0), h = w.size(1);
  const int64_t n = indices.size(0), k = indices.size(1);
  const int64_t *idx = indices.data_ptr<int64_t>();
  std::vector<int64_t> start(rows + 1, 0);
  for (int64_t e = 0; e < n * k; e++) {
    const int64_t r = idx[e];
    if (r < 0 || r >= rows) {
      throw std::out_of_range("index " + std::to_string(r) + " is outside the " +
                              std::to_string(rows) + " rows");
    }
    start[r + 1]++;
  }
  std::vector<int64_t> touched;
  for (int64_t r = 0; r < rows; r++) {
    if (start[r + 1] > 0) touched.push_back(r);
    start[r + 1] += start[r];
  }
  std::vector<int64_t> bags(n * k), cursor(start.begin(), start.end() - 1);
  for (int64_t e = 0; e < n * k; e++) bags[cursor[idx[e]]++] = e / k;

  float *p = w.data_ptr<float>(), *ma = m.data_ptr<float>(), *va = v.data_ptr<float>();
  const float *g = bag_grad.data_ptr<float>();
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float b1 = static_cast<float>(1.0 - beta1), b2 = static_cast<float>(beta2);
  const float nb2 = static_cast<float>(1.0 - beta2), wd = static_cast<float>(weight_decay);
  const float epsf = static_cast<float>(eps);
  const int64_t count = static_cast<int64_t>(touched.size());
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> sum(h);
    for (int64_t t = begin; t < end; t++) {
      const int64_t r = touched[t];
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int64_t b = start[r]; b < start[r + 1]; b++) {
        const float *gb = g + bags[b] * h;
        for (int64_t j = 0; j < h; j++) sum[j] += gb[j];
      }
      float *pr = p + r * h, *mr = ma + r * h, *vr = va + r * h;
      for (int64_t j = 0; j < h; j++) {
        const float gj = sum[j] + wd * pr[j];
        const float mj = mr[j] + b1 * (gj - mr[j]);
        const float vj = vr[j] * b2 + nb2 * gj * gj;
        mr[j] = mj;
        vr[j] = vj;
        pr[j] -= step_size * mj / (std::sqrt(vj) / bc2_sqrt + epsf);
      }
    }
  });
}

// The same update with ATen operations, for tensors on any device.
void lazy_adam_rows_generic(at::Tensor &w, at::Tensor &m, at::Tensor &v,
                            const at::Tensor &indices, const at::Tensor &bag_grad,
                            int64_t step, double lr, double beta1, double beta2,
                            double weight_decay, double eps) {
  const int64_t n = indices.size(0), k = indices.size(1);
  at::Tensor flat = indices.reshape({-1});
  at::Tensor bag_of = at::arange(n, indices.options()).repeat_interleave(k);
  auto [rows, inverse, counts] = at::_unique2(flat, true, true, false);
  at::Tensor grad = at::zeros({rows.size(0), w.size(1)}, w.options());
  grad.index_add_(0, inverse, bag_grad.index_select(0, bag_of));
  at::Tensor pr = w.index_select(0, rows), mr = m.index_select(0, rows),
             vr = v.index_select(0, rows);
  grad.add_(pr, weight_decay);
  mr.lerp_(grad, 1.0 - beta1);
  vr.mul_(beta2).addcmul_(grad, grad, 1.0 - beta2);
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  at::Tensor denom = vr.sqrt().div_(std::sqrt(bc2)).add_(eps);
  pr.addcdiv_(mr, denom, -lr / bc1);
  w.index_copy_(0, rows, pr);
  m.index_copy_(0, rows, mr);
  v.index_copy_(0, rows, vr);
}

}  // namespace

extern "C" {

char *hopper_lazy_adam_rows(at::Tensor *w, at::Tensor *m, at::Tensor *v, at::Tensor *indices,
                            at::Tensor *bag_grad, int64_t step, double lr, double beta1,
                            double beta2, double weight_decay, double eps) {
  try {
    c10::NoGradGuard no_grad;
    const bool shapes = w->dim() == 2 && m->sizes() == w->sizes() && v->sizes() == w->sizes() &&
                        indices->dim() == 2 && bag_grad->dim() == 2 &&
                        bag_grad->size(0) == indices->size(0) &&
                        bag_grad->size(1) == w->size(1);
    if (!shapes) throw std::invalid_argument("lazy Adam: tensor shapes disagree");
    const bool cpu = w->is_cpu() && w->scalar_type() == at::kFloat && w->is_contiguous() &&
                     m->is_contiguous() && v->is_contiguous() &&
                     m->scalar_type() == at::kFloat && v->scalar_type() == at::kFloat &&
                     indices->scalar_type() == at::kLong;
    if (cpu) {
      at::Tensor idx = indices->contiguous();
      at::Tensor grad = bag_grad->to(at::kFloat).contiguous();
      lazy_adam_rows_cpu(*w, *m, *v, idx, grad, step, lr, beta1, beta2, weight_decay, eps);
    } else {
      lazy_adam_rows_generic(*w, *m, *v, *indices, *bag_grad, step, lr, beta1, beta2,
                             weight_decay, eps);
    }
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  } catch (...) {
    return strdup("unknown C++ exception in lazy Adam");
  }
}

}  // extern "C"
