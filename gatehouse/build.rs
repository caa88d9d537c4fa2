//! Release builds place the request path's functions next to each other.
//!
//! `hot-functions.txt` lists (mangled) the functions a proxied request runs, hottest first,
//! made by `bench/run.sh --sections instructions --hot-functions` from callgrind. The linker
//! puts them at the start of `.text` in that order: ~280 KiB of code on ~70 pages instead of
//! ~145 pages spread over 11 MiB, which costs fewer iTLB and cache misses per request
//! (bench/RESULTS.md, round 10). A name that no longer matches (renamed, inlined differently,
//! a dependency updated) is skipped by the linker, so a stale list only loses the effect.
//!
//! Only where the linker is known to be LLD: the default for x86_64-unknown-linux-gnu since
//! Rust 1.90 (`rust-lld`), and no linker chosen in `RUSTFLAGS` or `CARGO_TARGET_*_LINKER`.
//! `GATEHOUSE_NO_LINK_ORDER=1` turns it off.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=hot-functions.txt");
    for var in [
        "GATEHOUSE_NO_LINK_ORDER",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let default_lld = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let linker_chosen = flags.contains("linker")
        || flags.contains("-fuse-ld")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some();
    let off = env::var_os("GATEHOUSE_NO_LINK_ORDER").is_some();
    if !release || !default_lld || linker_chosen || off {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let list = format!("{dir}/hot-functions.txt");
    if std::path::Path::new(&list).exists() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={list}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
