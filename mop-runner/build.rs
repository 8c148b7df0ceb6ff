//! Build script: make binaries and tests find libtorch at run time.
//!
//! `torch-sys` links against libtorch but adds no rpath, so without this a
//! `mop` binary or a `cargo test` run fails with "libtorch_cpu.so: cannot open
//! shared object file" unless `LD_LIBRARY_PATH` is set. We locate libtorch the
//! same way `scripts/libtorch.sh` provisions it (the `LIBTORCH` variable, else
//! the per-user cache) and bake its `lib/` directory into the rpath.

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
        let lib = dir.join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    } else {
        println!(
            "cargo:warning=libtorch not found (set LIBTORCH or run scripts/libtorch.sh); \
             binaries will need LD_LIBRARY_PATH"
        );
    }
}
