//! Where tensors live and how many threads libtorch may use: the two
//! process-wide choices a trainer makes once, before any model is built.

use tch::Device;

/// The device models are built on: the first CUDA GPU if there is one, else
/// the CPU.
pub fn default_device() -> Device {
    Device::cuda_if_available()
}

/// Sets libtorch's intra-op thread count for this process. Pin it per
/// trainer: two trainers on two cores each asking for two threads run far
/// slower than each taking one.
pub fn set_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}
