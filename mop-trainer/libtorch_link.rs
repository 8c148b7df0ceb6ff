// Shared by the build scripts of every package whose executables link
// libtorch (mop-trainer's tests, the `mop` binary, the end-to-end tests,
// the benchmarks) through `include!`: torch-sys adds no rpath, and a
// linker's --as-needed drops a CUDA libtorch nothing calls directly, so
// each of them links libtorch the same way here.

/// The libtorch version `tch` 0.26 is built against (see `scripts/libtorch.sh`).
const TORCH_VERSION: &str = "2.13.0";

/// libtorch as `scripts/libtorch.sh` provisions it: `LIBTORCH`, else the cache.
fn libtorch_dir() -> Option<std::path::PathBuf> {
    use std::env;
    use std::path::PathBuf;
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=HOPPER_CACHE");
    if let Some(dir) = env::var_os("LIBTORCH") {
        return Some(PathBuf::from(dir));
    }
    let cache = env::var_os("HOPPER_CACHE")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hopper")))?;
    ["cuda", "cpu"]
        .iter()
        .map(|flavor| cache.join(format!("libtorch-{TORCH_VERSION}-{flavor}")))
        .find(|dir| dir.join("lib").is_dir())
}

/// Bakes libtorch's `lib/` into the package's executables' rpath, so they
/// run without `LD_LIBRARY_PATH`; with a CUDA libtorch, keeps
/// `libtorch_cuda` linked (it registers CUDA with libtorch when loaded, so
/// without it a binary would compute on the CPU even with a GPU).
fn link_libtorch(dir: &std::path::Path) {
    let lib = dir.join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!(
            "cargo:rustc-link-arg=-Wl,-L,{},--push-state,--no-as-needed,-ltorch_cuda,-ltorch,--pop-state",
            lib.display()
        );
    }
}
