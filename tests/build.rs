//! Build script: the training tests link `mop-runner` (and so libtorch),
//! which `torch-sys` links without an rpath; bake libtorch's `lib/` into the
//! test executables' rpath the way `mop-runner/build.rs` does for `mop`.

use std::env;
use std::path::PathBuf;

/// The libtorch version `tch` 0.26 is built against (see `scripts/libtorch.sh`).
const TORCH_VERSION: &str = "2.13.0";

fn libtorch_dir() -> Option<PathBuf> {
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

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=HOPPER_CACHE");
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(dir) = libtorch_dir() {
        println!(
            "cargo:rustc-link-arg=-Wl,-rpath,{}",
            dir.join("lib").display()
        );
    }
}
