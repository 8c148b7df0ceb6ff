//! Build script: make binaries and tests find libtorch at run time.
//!
//! `torch-sys` links against libtorch but adds no rpath, so without this a
//! `mop` binary or a `cargo test` run fails with "libtorch_cpu.so: cannot open
//! shared object file" unless `LD_LIBRARY_PATH` is set. We locate libtorch the
//! same way `scripts/libtorch.sh` provisions it (the `LIBTORCH` variable, else
//! the per-user cache) and bake its `lib/` directory into the rpath.
//!
//! It also compiles `csrc/optim.cpp`, a small C++ shim with the optimizer
//! kernels tch does not expose (libtorch's fused Adam, dropping a gradient,
//! lazy Adam over touched rows), and `csrc/torchscript.cpp`, which loads
//! scripted PyTorch modules with their buffers (`src/model/torchscript/`).

use std::env;

include!("libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=HOPPER_CACHE");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=libtorch_link.rs");
    println!("cargo:rerun-if-changed=csrc/optim.cpp");
    println!("cargo:rerun-if-changed=csrc/torchscript.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Some(dir) = libtorch_dir() else {
        panic!(
            "libtorch not found: set LIBTORCH to its directory or run scripts/libtorch.sh \
             (it provisions ~/.cache/hopper/libtorch-{TORCH_VERSION}-cpu)"
        );
    };
    link_libtorch(&dir);
    compile_optim_shim(&dir);
}

/// Compiles `csrc/optim.cpp`, the optimizer kernels' shim (see
/// `src/optim/shim.rs`), against libtorch's headers with the same C++ ABI
/// `torch-sys` uses. Always at -O3 without `errno` from `sqrt`, so the lazy
/// Adam row loop vectorizes in every profile.
fn compile_optim_shim(libtorch: &std::path::Path) {
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    cc::Build::new()
        .cpp(true)
        .file("csrc/optim.cpp")
        .file("csrc/torchscript.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .opt_level(3)
        .flag("-fno-math-errno")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("hopper_optim");
}
