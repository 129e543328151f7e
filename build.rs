//! Link settings for the `muster` binary.
//!
//! Packed relative relocations (`-z pack-relative-relocs`, glibc's DT_RELR): a
//! position-independent Rust binary carries one 24-byte relocation entry for every
//! pointer in its read-only data (vtables, string tables), about 10,000 of them. The
//! loader reads them all at every start, and they stay resident for the life of the
//! supervisor. Packed, they take a few kilobytes. The flag is used only where the
//! linker accepts it (binutils 2.38 or later, lld, mold) against a C library that
//! supports it, so older toolchains build as before.

use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const PACK_RELATIVE: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let linux_gnu = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu && linker_accepts(PACK_RELATIVE) {
        println!("cargo:rustc-link-arg-bins={PACK_RELATIVE}");
    }
}

/// Whether the C compiler driver (which rustc links with) links a trivial
/// position-independent program with `flag`.
fn linker_accepts(flag: &str) -> bool {
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let source = out_dir.join("probe.c");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let compiler = env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    Command::new(compiler)
        .arg("-pie")
        .arg("-fPIE")
        .arg(flag)
        .arg(&source)
        .arg("-o")
        .arg(out_dir.join("probe"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
