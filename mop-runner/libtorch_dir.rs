// Shared by the build scripts of every crate that links libtorch
// (mop-runner, tests, bench) through `include!`: torch-sys adds no rpath,
// so each of them bakes libtorch's `lib/` into its binaries' rpath.

/// The libtorch version `tch` 0.26 is built against (see `scripts/libtorch.sh`).
const TORCH_VERSION: &str = "2.13.0";

/// libtorch as `scripts/libtorch.sh` provisions it: `LIBTORCH`, else the cache.
fn libtorch_dir() -> Option<std::path::PathBuf> {
    use std::env;
    use std::path::PathBuf;
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
