//! Build script: the training tests link `mop-runner` (and so libtorch),
//! which `torch-sys` links without an rpath; bake libtorch's `lib/` into the
//! test executables' rpath the way `mop-runner/build.rs` does for `mop`.

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
