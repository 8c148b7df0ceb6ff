//! Build script: the `training` benchmark links `mop-runner` (and so
//! libtorch), which `torch-sys` links without an rpath; bake libtorch's
//! `lib/` into the executables' rpath the way `mop-runner/build.rs` does for
//! `mop`, so the benchmark runs without `LD_LIBRARY_PATH`.

include!("../mop-runner/libtorch_dir.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=HOPPER_CACHE");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../mop-runner/libtorch_dir.rs");
    if let Some(dir) = libtorch_dir() {
        println!(
            "cargo:rustc-link-arg=-Wl,-rpath,{}",
            dir.join("lib").display()
        );
    }
}
