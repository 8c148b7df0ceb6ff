//! Where tensors live and how many threads libtorch may use: the two
//! process-wide choices a trainer makes once, before any model is built —
//! and how a trainer names its device to the runner, `mop status` and the
//! report.

use tch::{Cuda, Device};

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

/// The `--threads` a trainer was started with, if this process is one.
static TRAINER_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Sets the threads of a trainer process (`mop trainer --threads`) and
/// remembers them: a run's `[train] threads` wins for its units, and the
/// trainer warns when the two differ ([`trainer_threads`]).
pub fn set_trainer_threads(n: usize) {
    let _ = TRAINER_THREADS.set(n.max(1));
    set_threads(n);
}

/// The `--threads` this trainer process was started with.
pub fn trainer_threads() -> Option<usize> {
    TRAINER_THREADS.get().copied()
}

/// The device this process trains on, in words: `cuda:0 (1 of 2 GPUs)`,
/// `cpu (CUDA build, no GPU present)` — libtorch with CUDA on a machine
/// whose driver sees no GPU — or `cpu` for the CPU build.
pub fn describe() -> String {
    static DESCRIPTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DESCRIPTION.get_or_init(describe_now).clone()
}

fn describe_now() -> String {
    match default_device() {
        Device::Cuda(i) => format!("cuda:{i} ({} of {} GPUs)", i + 1, Cuda::device_count()),
        _ if cuda_build() => "cpu (CUDA build, no GPU present)".to_string(),
        _ => "cpu".to_string(),
    }
}

/// Whether the libtorch this process loaded has its CUDA half (libtorch_cuda
/// is mapped). Asking libtorch cannot tell: without a GPU it reports no CUDA
/// either way.
fn cuda_build() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps.contains("libtorch_cuda"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_build_without_a_gpu_says_cpu() {
        // The test binary links the libtorch scripts/libtorch.sh provisioned:
        // CPU-only unless a GPU was present.
        if Cuda::is_available() {
            assert!(describe().starts_with("cuda:0"), "{}", describe());
        } else {
            assert!(describe().starts_with("cpu"), "{}", describe());
        }
    }
}
