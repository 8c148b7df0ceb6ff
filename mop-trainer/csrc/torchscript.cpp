// TorchScript modules for hopper's trainer: what tch's CModule does not
// expose.
//
// tch's TrainableCModule registers a scripted module's parameters but not
// its buffers (BatchNorm's running mean and variance, its batch counter),
// and those must hop with the model like the weights. This shim loads the
// module itself and hands Rust an `at::Tensor*` per parameter and buffer:
// handles on the module's own tensors (same storage, no copy), which Rust
// owns and frees as tch tensors, so training steps, state copies and the
// module's forward all see one set of tensors.
//
// Errors are returned as a malloc'ed message (free with hopper_free_error,
// in optim.cpp), never thrown across the FFI boundary.

#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>

namespace {

char *message(const char *what, const std::exception &e) {
  std::string m = std::string(what) + ": " + e.what();
  // TorchScript errors carry a C++ backtrace after the first line; the
  // first lines say what was wrong, the backtrace only where.
  auto cut = m.find("\nException raised from");
  if (cut != std::string::npos) m.resize(cut);
  return strdup(m.c_str());
}

}  // namespace

extern "C" {

typedef void (*hopper_named_tensor)(void *data, const char *name, at::Tensor *tensor);

// Loads a module saved by `torch.jit.save` from `len` bytes at `data`, onto
// CPU (`device` < 0) or CUDA device `device`.
char *hopper_script_load(const char *data, size_t len, int device, torch::jit::Module **out) {
  try {
    std::istringstream in(std::string(data, len));
    c10::Device dev = device < 0 ? c10::Device(c10::kCPU)
                                 : c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device));
    *out = new torch::jit::Module(torch::jit::load(in, dev));
    return nullptr;
  } catch (const std::exception &e) {
    return message("not a TorchScript module (torch.jit.save of a scripted module)", e);
  } catch (...) {
    return strdup("unknown C++ exception loading a TorchScript module");
  }
}

void hopper_script_free(torch::jit::Module *module) { delete module; }

// Calls `each` with every parameter (`buffers` = 0) or every buffer (1) of
// the module and its submodules, by dotted name as PyTorch's state_dict
// names them, each as a new handle on the module's tensor.
char *hopper_script_named(torch::jit::Module *module, int buffers, void *data,
                          hopper_named_tensor each) {
  try {
    if (buffers) {
      for (const auto &b : module->named_buffers()) each(data, b.name.c_str(), new at::Tensor(b.value));
    } else {
      for (const auto &p : module->named_parameters()) each(data, p.name.c_str(), new at::Tensor(p.value));
    }
    return nullptr;
  } catch (const std::exception &e) {
    return message("listing the module's tensors", e);
  } catch (...) {
    return strdup("unknown C++ exception listing a module's tensors");
  }
}

// Training (`on` = 1: Dropout drops, BatchNorm uses and updates batch
// statistics) or evaluation mode, for the module and its submodules.
char *hopper_script_train(torch::jit::Module *module, int on) {
  try {
    module->train(on != 0);
    return nullptr;
  } catch (const std::exception &e) {
    return message("switching the module's mode", e);
  } catch (...) {
    return strdup("unknown C++ exception switching a module's mode");
  }
}

// `forward(x)`, which must return one tensor. The graph executor's
// optimizations (fusion, specialization after profiling runs) stay off: a
// model rebuilt on another trainer for every unit must compute exactly what
// one warmed up over many units would, so that a hop changes no bit.
char *hopper_script_forward(torch::jit::Module *module, at::Tensor *x, at::Tensor **out) {
  try {
    torch::jit::GraphOptimizerEnabledGuard plain(false);
    std::vector<torch::jit::IValue> inputs{*x};
    auto result = module->forward(inputs);
    if (!result.isTensor()) {
      throw std::runtime_error("forward returned " + std::string(result.tagKind()) +
                               ", hopper needs one tensor of outputs");
    }
    *out = new at::Tensor(result.toTensor());
    return nullptr;
  } catch (const std::exception &e) {
    return message("forward", e);
  } catch (...) {
    return strdup("unknown C++ exception in the module's forward");
  }
}

// Writes the module, code and current tensors, as `torch.jit.save` would.
char *hopper_script_save(torch::jit::Module *module, const char *path) {
  try {
    module->save(path);
    return nullptr;
  } catch (const std::exception &e) {
    return message("saving the module", e);
  } catch (...) {
    return strdup("unknown C++ exception saving a module");
  }
}

}  // extern "C"
