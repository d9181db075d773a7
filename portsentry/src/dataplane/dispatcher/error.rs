//! The dispatcher's errors ([`DispatcherError`]) and the short wording of their causes: the
//! errno of a failed syscall rather than aya's whole chain.

use std::io;

use thiserror::Error;

use super::{
    occupant::Refusal,
    protocol::{MAX_PROGRAMS, OBJECT_FILE},
};

#[derive(Debug, Error)]
pub enum DispatcherError {
    #[error(
        "libxdp's dispatcher object {OBJECT_FILE} was not found (looked in {looked}); install \
         Debian's libxdp1 (or xdp-tools), or set LIBXDP_OBJECT_PATH to its directory"
    )]
    NoObject { looked: String },
    #[error(
        "this kernel refuses freplace (BPF_PROG_TYPE_EXT) programs ({why}), which libxdp's \
         multi-program dispatcher needs: XDP programs cannot share an interface here"
    )]
    NoFreplace { why: String },
    #[error("{0}")]
    Refused(Refusal),
    /// Linux 6.13+ refuses an extension that resizes the packet in place of a stub that does
    /// not; libxdp's dispatcher stubs do since libxdp 1.5.5.
    #[error(
        "this kernel refuses freplace programs that change packet data in place of libxdp's \
         dispatcher stubs that do not (libxdp before 1.5.5; its {OBJECT_FILE} is used here)"
    )]
    ChangesPacket,
    #[error("{iface}: cannot join libxdp's dispatcher (program {id}): {why}")]
    Incompatible { iface: String, id: u32, why: String },
    #[error("{iface}: libxdp's dispatcher already holds {MAX_PROGRAMS} programs, the most it can")]
    Full { iface: String },
    #[error("{iface}: {what}: {source}")]
    Io {
        iface: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{iface}: {what}: {detail}")]
    Bpf {
        iface: String,
        what: String,
        detail: String,
    },
}

pub(super) type Result<T> = std::result::Result<T, DispatcherError>;

/// The short reason in a program error: the errno, not the whole chain.
pub(super) fn errno_of(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, .. } => errno_name(io_error),
        aya::programs::ProgramError::SyscallError(s) => {
            format!("{}: {}", s.call, errno_name(&s.io_error))
        }
        other => other.to_string(),
    }
}

/// "EPERM: Operation not permitted" rather than "Operation not permitted (os error 1)".
pub(crate) fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let errno = nix::errno::Errno::from_raw(n);
            format!("{errno:?}: {}", errno.desc())
        }
        None => e.to_string(),
    }
}

pub(super) fn io_err<'a>(
    iface: &'a str,
    what: &'a str,
) -> impl Fn(io::Error) -> DispatcherError + 'a {
    move |source| DispatcherError::Io {
        iface: iface.to_owned(),
        what: what.to_owned(),
        source,
    }
}

pub(super) fn bpf_err<'a>(
    iface: &'a str,
    what: &'a str,
) -> impl Fn(aya::programs::ProgramError) -> DispatcherError + 'a {
    move |e| DispatcherError::Bpf {
        iface: iface.to_owned(),
        what: what.to_owned(),
        detail: errno_of(&e),
    }
}
