//! The probe of the kernel's freplace support: whether an extension (BPF_PROG_TYPE_EXT)
//! loads and attaches here, as libxdp checks before it builds a dispatcher.

use aya::{
    programs::{Extension, Xdp},
    EbpfLoader,
};

use super::{
    error::{errno_of, DispatcherError, Result},
    protocol::{object, OBJECT_FILE},
};

/// Whether the kernel can run libxdp's dispatcher: freplace programs load and attach (libxdp
/// tries the same with the dispatcher object's `xdp_pass`).
pub fn kernel_runs_dispatcher() -> Result<()> {
    let bytes = object()?;
    let no = |why: String| DispatcherError::NoFreplace { why };
    let mut target = EbpfLoader::new()
        .load(&bytes)
        .map_err(|e| no(format!("loading {OBJECT_FILE}: {e}")))?;
    let pass: &mut Xdp = target
        .program_mut("xdp_pass")
        .ok_or_else(|| no(format!("{OBJECT_FILE} has no xdp_pass")))?
        .try_into()
        .map_err(|e| no(format!("{e}")))?;
    pass.load()
        .map_err(|e| no(format!("loading xdp_pass: {e}")))?;
    let target_fd = pass
        .fd()
        .and_then(|f| f.try_clone().map_err(Into::into))
        .map_err(|e| no(format!("{e}")))?;
    let mut test = EbpfLoader::new()
        .extension("xdp_pass")
        .load(&bytes)
        .map_err(|e| no(format!("loading {OBJECT_FILE}: {e}")))?;
    let ext: &mut Extension = test
        .program_mut("xdp_pass")
        .ok_or_else(|| no(format!("{OBJECT_FILE} has no xdp_pass")))?
        .try_into()
        .map_err(|e| no(format!("{e}")))?;
    ext.load(target_fd, "xdp_pass")
        .map_err(|e| no(errno_of(&e)))?;
    ext.attach().map_err(|e| no(errno_of(&e)))?;
    Ok(())
}
