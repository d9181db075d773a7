//! Embeds the XDP object named by `PORTSENTRY_BPF_OBJECT` (set by `cargo xtask build`).
//! Without it an empty placeholder is embedded, so `cargo build`/`cargo clippy` work on machines
//! without the eBPF toolchain; such a binary explains how to get a real one when asked to load.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=PORTSENTRY_BPF_OBJECT");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("portsentry.bpf.o");
    match env::var_os("PORTSENTRY_BPF_OBJECT") {
        Some(src) => {
            let src = PathBuf::from(src);
            println!("cargo:rerun-if-changed={}", src.display());
            if let Err(e) = fs::copy(&src, &out) {
                panic!("PORTSENTRY_BPF_OBJECT={}: {e}", src.display());
            }
        }
        None => {
            fs::write(&out, []).expect("writing the placeholder object");
        }
    }
}
