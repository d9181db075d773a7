//! The cgroup programs that learn peers: loaded from the same object as the XDP program (so they
//! write the PS_PEERS map it reads) and attached to the cgroup2 root, where they see the
//! sockets of every process in every network namespace. They record only in this process's
//! namespace (its cookie goes into `Config::netns_cookie`), and only the remote address and the
//! time: never ports or payload. They never refuse a connect, a send or a receive (the recvmsg
//! programs only mark which sources a UDP socket heard from, so its answers teach no peer).
//!
//! Owns: finding the cgroup2 root, this namespace's cookie, loading and attaching the programs.
//! The links live in [`PeerLearning`]; dropping it (or the process exiting) detaches them.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::{
    cgroup_sock_addr::CgroupSockAddrLink, sock_ops::SockOpsLink, CgroupAttachMode, CgroupSockAddr,
    ProgramError, SockOps,
};
use portsentry_common::peer_programs;
use thiserror::Error;

use super::Dataplane;

#[derive(Debug, Error)]
pub enum PeerError {
    #[error("no cgroup2 file system in /proc/self/mounts, and mounting one on {path} failed")]
    NoCgroup2 {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening the cgroup2 root {path}")]
    OpenCgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading this network namespace's cookie (SO_NETNS_COOKIE needs Linux 5.14)")]
    NetnsCookie(#[source] io::Error),
    #[error("the object has no program {0}")]
    NoProgram(&'static str),
    #[error("loading {name}")]
    Load {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {name} to the cgroup2 root {cgroup}")]
    Attach {
        name: &'static str,
        cgroup: PathBuf,
        #[source]
        source: ProgramError,
    },
}

/// The attached peer-learning programs; dropping this detaches them.
#[derive(Debug)]
pub struct PeerLearning {
    /// The cgroup2 root they are attached to, as this process reached it.
    pub cgroup: PathBuf,
    /// The network namespace they record for (`bpf_get_netns_cookie`).
    pub netns_cookie: u64,
    _tcp: SockOpsLink,
    _udp: Vec<CgroupSockAddrLink>,
}

impl Dataplane {
    /// Loads the peer-learning programs and attaches them to the cgroup2 root. On error nothing
    /// stays attached (links attached so far are dropped, which detaches them).
    pub fn learn_peers(&mut self) -> Result<PeerLearning, PeerError> {
        let netns_cookie = netns_cookie().map_err(PeerError::NetnsCookie)?;
        let (root, cgroup) = cgroup2_root()?;
        let attach_err = |name| {
            let cgroup = cgroup.clone();
            move |source| PeerError::Attach {
                name,
                cgroup,
                source,
            }
        };

        let name = peer_programs::TCP_ESTABLISHED;
        let prog: &mut SockOps = self
            .ebpf
            .program_mut(name)
            .ok_or(PeerError::NoProgram(name))?
            .try_into()
            .map_err(|source| PeerError::Load { name, source })?;
        prog.load()
            .map_err(|source| PeerError::Load { name, source })?;
        // A BPF link on a cgroup always allows other programs next to it (each daemon of the
        // host attaches its own); the mode flag must be the default.
        let id = prog
            .attach(&root, CgroupAttachMode::Single)
            .map_err(attach_err(name))?;
        let tcp = prog.take_link(id).map_err(attach_err(name))?;

        let mut udp = Vec::new();
        for name in [
            peer_programs::UDP_CONNECT4,
            peer_programs::UDP_CONNECT6,
            peer_programs::UDP_SENDMSG4,
            peer_programs::UDP_SENDMSG6,
            peer_programs::UDP_RECVMSG4,
            peer_programs::UDP_RECVMSG6,
        ] {
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(PeerError::NoProgram(name))?
                .try_into()
                .map_err(|source| PeerError::Load { name, source })?;
            prog.load()
                .map_err(|source| PeerError::Load { name, source })?;
            let id = prog
                .attach(&root, CgroupAttachMode::Single)
                .map_err(attach_err(name))?;
            udp.push(prog.take_link(id).map_err(attach_err(name))?);
        }
        Ok(PeerLearning {
            cgroup,
            netns_cookie,
            _tcp: tcp,
            _udp: udp,
        })
    }
}

/// The cookie of this process's network namespace, as `bpf_get_netns_cookie` reports it for
/// its sockets.
pub fn netns_cookie() -> io::Result<u64> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The cgroup2 root, opened, and how it was reached (for messages): the mount listed in this
/// process's mounts, else a mount of its own. `ip netns exec` remounts /sys, which hides the
/// cgroup mounts; the hierarchy is the same whatever the mount, so a private mount on a fresh
/// directory is opened and at once detached again (the open directory keeps it usable).
fn cgroup2_root() -> Result<(File, PathBuf), PeerError> {
    if let Some(dir) = cgroup2_mount(Path::new("/proc/self/mounts")) {
        let root = File::open(&dir).map_err(|source| PeerError::OpenCgroup {
            path: dir.clone(),
            source,
        })?;
        return Ok((root, dir));
    }
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let dir = std::env::temp_dir().join(format!("portsentry-cgroup2-{}", std::process::id()));
    let no_mount = |source: io::Error| PeerError::NoCgroup2 {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(no_mount)?;
    let mounted = mount(
        Some("cgroup2"),
        &dir,
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| no_mount(io::Error::from(e)));
    let opened = mounted.and_then(|()| {
        let root = File::open(&dir).map_err(|source| PeerError::OpenCgroup {
            path: dir.clone(),
            source,
        });
        let _ = umount2(&dir, MntFlags::MNT_DETACH);
        root
    });
    let _ = std::fs::remove_dir(&dir);
    Ok((opened?, PathBuf::from("cgroup2 root (own mount)")))
}

/// The first cgroup2 mount point listed in a mounts file.
fn cgroup2_mount(mounts: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(mounts).ok()?;
    parse_cgroup2_mount(&text)
}

fn parse_cgroup2_mount(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(dir)))
    })
}

/// Mount points in /proc/*/mounts escape space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_a_hybrid_layout() {
        let mounts = "sysfs /sys sysfs rw 0 0\n\
                      tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        assert_eq!(
            parse_cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(parse_cgroup2_mount("sysfs /sys sysfs rw 0 0\n"), None);
        assert_eq!(
            parse_cgroup2_mount("none /tmp/my\\040cgroup cgroup2 rw 0 0"),
            Some(PathBuf::from("/tmp/my cgroup"))
        );
    }

    #[test]
    fn this_namespace_has_a_cookie() {
        // Linux 5.14+; every namespace's cookie is non-zero.
        assert_ne!(netns_cookie().unwrap(), 0);
    }
}
