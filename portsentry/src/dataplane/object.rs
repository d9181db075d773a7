//! The XDP object embedded at build time (see `build.rs`).

use thiserror::Error;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portsentry.bpf.o"));

#[derive(Debug, Error)]
#[error(
    "this portsentry binary was built without its XDP object; build it with `cargo xtask build` \
     (plain `cargo build` embeds an empty placeholder)"
)]
pub struct MissingObject;

/// The embedded XDP object, or an error if this binary was built without one.
pub fn embedded() -> Result<&'static [u8], MissingObject> {
    if OBJECT.is_empty() {
        Err(MissingObject)
    } else {
        Ok(OBJECT)
    }
}
