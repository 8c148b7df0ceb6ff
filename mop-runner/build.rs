//! Build script: make binaries and tests find libtorch at run time.
//!
//! `torch-sys` links against libtorch but adds no rpath, so without this a
//! `mop` binary or a `cargo test` run fails with "libtorch_cpu.so: cannot open
//! shared object file" unless `LD_LIBRARY_PATH` is set. We locate libtorch the
//! same way `scripts/libtorch.sh` provisions it (the `LIBTORCH` variable, else
//! the per-user cache) and bake its `lib/` directory into the rpath.
//!
//! It also compiles `csrc/fused_adam.cpp`, a small C++ shim over libtorch's
//! fused Adam kernels, which tch does not expose.

use std::env;

include!("libtorch_dir.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=HOPPER_CACHE");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=libtorch_dir.rs");
    println!("cargo:rerun-if-changed=csrc/fused_adam.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Some(dir) = libtorch_dir() else {
        panic!(
            "libtorch not found: set LIBTORCH to its directory or run scripts/libtorch.sh \
             (it provisions ~/.cache/hopper/libtorch-{TORCH_VERSION}-cpu)"
        );
    };
    let lib = dir.join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    compile_fused_adam(&dir);
}

/// Compiles `csrc/fused_adam.cpp`, the shim that exposes libtorch's fused
/// Adam/AdamW kernels (see `src/optim.rs`), against libtorch's headers with
/// the same C++ ABI `torch-sys` uses.
fn compile_fused_adam(libtorch: &std::path::Path) {
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    cc::Build::new()
        .cpp(true)
        .file("csrc/fused_adam.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("hopper_fused_adam");
}
