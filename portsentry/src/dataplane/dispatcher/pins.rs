//! libxdp's directory in bpffs (`$LIBXDP_BPFFS/xdp`), removing a dispatcher's pins, and
//! libxdp's lock: the exclusive flock on that directory held while pins change.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::error::{io_err, DispatcherError, Result};

/// libxdp's directory in bpffs: `$LIBXDP_BPFFS/xdp`, by default `/sys/fs/bpf/xdp`.
pub(super) fn pin_root() -> PathBuf {
    std::env::var_os("LIBXDP_BPFFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::dataplane::bpffs::BPFFS_ROOT))
        .join("xdp")
}

/// Removes a dispatcher's pins (`progN-link`, `progN-prog`) and its directory; what is already
/// gone is fine.
pub(super) fn unpin_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// libxdp's lock: an exclusive flock on its bpffs directory, held while pins change.
pub(super) struct Lock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

impl Lock {
    pub(super) fn acquire(iface: &str) -> Result<Self> {
        let root = pin_root();
        crate::dataplane::bpffs::ensure_pin_dir(&root).map_err(|e| DispatcherError::Io {
            iface: iface.to_owned(),
            what: format!("libxdp's directory {}", root.display()),
            source: io::Error::other(format!("{e:#}")),
        })?;
        let dir =
            fs::File::open(&root).map_err(io_err(iface, &format!("opening {}", root.display())))?;
        nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
            .map(Lock)
            .map_err(|(_, e)| DispatcherError::Io {
                iface: iface.to_owned(),
                what: format!("locking {}", root.display()),
                source: e.into(),
            })
    }
}
