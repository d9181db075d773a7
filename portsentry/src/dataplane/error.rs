//! The data plane's error type ([`DataplaneError`]) and the translations into it: a component
//! the kernel refuses (no freplace, a program that changes the packet), the verifier's log cut
//! to its reason or to one line naming what an old kernel lacks, a map operation's error.

use std::path::PathBuf;

use aya::{maps::MapError, programs::ProgramError, EbpfError};
use thiserror::Error;

use super::{dispatcher, kernel, object};

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(transparent)]
    MissingObject(#[from] object::MissingObject),
    #[error("loading the XDP object failed")]
    Load(#[source] EbpfError),
    #[error(
        "the kernel verifier rejected the XDP program ({errno}); last verifier lines:\n{tail}"
    )]
    Verifier { errno: String, tail: String },
    /// The load failed because the kernel lacks a feature the program needs: one line, no dump.
    #[error("{0}")]
    KernelTooOld(kernel::TooOld),
    #[error("XDP program")]
    Program(#[source] ProgramError),
    #[error("the XDP object has no map {0} (object and binary out of step?)")]
    NoSuchMap(&'static str),
    #[error("the XDP object has no program `{0}`")]
    NoProgram(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "pinned map {path} does not match this build ({what}); it was made by another portsentry \
         version. Stop the other instance, then remove the directory to start fresh: rm -r {dir}"
    )]
    IncompatiblePin {
        path: PathBuf,
        dir: PathBuf,
        what: String,
    },
    #[error("attaching XDP to {iface}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    /// Another XDP program is on the interface, or the dispatcher could not be joined.
    #[error(transparent)]
    Dispatcher(#[from] dispatcher::DispatcherError),
    #[error("xdp_mode = \"multi\" needs the program loaded as a dispatcher component")]
    NotComponent,
    #[error("the {0} table is full")]
    TableFull(&'static str),
    #[error("reading the XDP program's diagnostics (log_level)")]
    Logger(#[source] aya_log::Error),
}

pub(super) type Result<T> = std::result::Result<T, DataplaneError>;

/// A component that fails to load: a kernel that refuses freplace says so in one line.
pub(super) fn extension_error(e: ProgramError) -> DataplaneError {
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &e
    {
        if io_error.raw_os_error() == Some(libc::EPERM) {
            return dispatcher::DispatcherError::NoFreplace {
                why: dispatcher::errno_name(io_error),
            }
            .into();
        }
        if verifier_log.to_string().contains("changes packet data") {
            return dispatcher::DispatcherError::ChangesPacket.into();
        }
    }
    verifier_error(e)
}

/// A kernel too old for the program gets one line naming what it lacks ([`kernel`]).
/// Otherwise keeps the end of the verifier log, where the reason is; the full log is rarely useful to an
/// administrator and can be megabytes long.
pub(super) fn verifier_error(e: ProgramError) -> DataplaneError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if let Some(too_old) = kernel::explain(&log) {
                return DataplaneError::KernelTooOld(too_old);
            }
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n");
            DataplaneError::Verifier {
                errno: io_error.to_string(),
                tail,
            }
        }
        other => DataplaneError::Program(other),
    }
}

pub(super) fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}
