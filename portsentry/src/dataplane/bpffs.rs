//! Making sure the pin directory is on a BPF filesystem, mounting one if needed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};

/// Conventional bpffs mount point.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Creates `pin_dir` on a bpffs. If its nearest existing ancestor is not on bpffs, a bpffs is
/// mounted at `/sys/fs/bpf` when the directory lies below it, otherwise on `pin_dir` itself
/// (a directory we create and own, never an existing one of somebody else's).
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<()> {
    let ancestor = nearest_existing(pin_dir);
    if !is_bpffs(&ancestor) {
        let root = Path::new(BPFFS_ROOT);
        let target: PathBuf = if pin_dir.starts_with(root) && root.is_dir() {
            root.to_path_buf()
        } else {
            fs::create_dir_all(pin_dir)
                .with_context(|| format!("creating {}", pin_dir.display()))?;
            pin_dir.to_path_buf()
        };
        if !is_bpffs(&target) {
            mount(
                Some("bpf"),
                &target,
                Some("bpf"),
                MsFlags::empty(),
                None::<&str>,
            )
            .with_context(|| {
                format!(
                    "mounting a BPF filesystem on {} (needs CAP_SYS_ADMIN; or mount it yourself: \
                     mount -t bpf bpf {})",
                    target.display(),
                    target.display()
                )
            })?;
        }
    }
    fs::create_dir_all(pin_dir)
        .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    Ok(())
}

fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}
