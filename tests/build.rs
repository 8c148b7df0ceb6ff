//! Build script: the end-to-end tests link `mop-trainer` (and so libtorch); link it
//! the way every package of hopper does (`mop-trainer/libtorch_link.rs`).

include!("../mop-trainer/libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../mop-trainer/libtorch_link.rs");
    if let Some(dir) = libtorch_dir() {
        link_libtorch(&dir);
    }
}
