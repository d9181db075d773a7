//! Why a verb failed, and the exit code that follows from it: each error type a verb can
//! return is classed here, once, as a usage or configuration error (exit 2) or a runtime
//! failure (exit 1). Verbs return their layers' typed errors with `?`; none picks a code.
//!
//! Must not touch: the errors' wording (each type words its own message; `main` prints it).

use std::process::ExitCode;

use crate::{
    cli::{
        docs::DocsError,
        verbs::{import_conf::ImportConfError, notify::NotifyError, run::RunError},
    },
    config::LoadError,
    control::ControlError,
    daemon::resources::ResourceError,
};

/// The two kinds of failure the exit code tells apart (0 is success).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitClass {
    /// 1: the environment or the work failed (kernel, interfaces, state file, daemon, a
    /// transport); the same command may work later.
    Runtime,
    /// 2: the command line or the configuration is wrong; it fails until the user changes it.
    /// (clap exits 2 itself on a command line it cannot parse.)
    Usage,
}

impl ExitClass {
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }

    pub fn code(self) -> u8 {
        match self {
            ExitClass::Runtime => 1,
            ExitClass::Usage => 2,
        }
    }
}

/// An error type a verb may fail with, and its class.
pub trait Classified {
    fn exit_class(&self) -> ExitClass;
}

/// `impl Classified` for error types whose every variant is of one class: the table.
macro_rules! one_class {
    ($($(#[$doc:meta])* $ty:ty => $class:ident;)*) => {$(
        $(#[$doc])*
        impl Classified for $ty {
            fn exit_class(&self) -> ExitClass {
                ExitClass::$class
            }
        }
    )*};
}

one_class! {
    /// The settings did not load: the config file, an ignore file it names, or a flag's value.
    LoadError => Usage;
    /// The settings load but do not hold together, or a file they name (credentials,
    /// certificates, a transport's secret) is missing, unreadable or not private.
    ResourceError => Usage;
    /// The classic config to import is unreadable or has a line we cannot convert.
    ImportConfError => Usage;
    /// The daemon's socket failed or does not answer, or the pins or the state file could not
    /// be read or written. (No daemon is no error: the verbs then work on the pins and the
    /// state file.)
    ControlError => Runtime;
    /// The checked settings were fine; the daemon failed to start (kernel, program,
    /// interfaces, pins, listeners) or stopped on an error.
    RunError => Runtime;
    /// The man pages or completions could not be written.
    DocsError => Runtime;
}

impl Classified for NotifyError {
    fn exit_class(&self) -> ExitClass {
        match self {
            NotifyError::NoAction | NotifyError::NoTransport | NotifyError::Config(_) => {
                ExitClass::Usage
            }
            NotifyError::Failed { .. } => ExitClass::Runtime,
        }
    }
}

/// A verb's failure: the error (printed by `main` with its causes) and its class.
#[derive(Debug)]
pub struct Failure {
    class: ExitClass,
    error: anyhow::Error,
}

impl Failure {
    pub fn exit_class(&self) -> ExitClass {
        self.class
    }

    pub fn exit_code(&self) -> ExitCode {
        self.class.exit_code()
    }

    pub fn error(&self) -> &anyhow::Error {
        &self.error
    }
}

impl<E> From<E> for Failure
where
    E: Classified + std::error::Error + Send + Sync + 'static,
{
    fn from(e: E) -> Self {
        Failure {
            class: e.exit_class(),
            error: e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, ValidationError};

    fn printed(f: &Failure) -> String {
        format!("{:#}", f.error())
    }

    #[test]
    fn the_class_follows_from_the_type() {
        let config = LoadError::File(ConfigError {
            path: "/etc/portsentry/portsentry.toml".into(),
            line: 3,
            column: 13,
            key: Some("tcp_ports".into()),
            message: "`70000` is not a port number (1-65535)".into(),
        });
        let f = Failure::from(config);
        assert_eq!(f.exit_class(), ExitClass::Usage);
        assert_eq!(
            printed(&f),
            "/etc/portsentry/portsentry.toml:3:13: key `tcp_ports`: `70000` is not a port number (1-65535)"
        );
        let f = Failure::from(ResourceError::from(ValidationError::NoGuardedPorts));
        assert_eq!(f.exit_class(), ExitClass::Usage);
        assert_eq!(
            printed(&f),
            "no guarded ports: set at least one TCP or UDP port"
        );
        let f = Failure::from(ControlError::SocketFailed("/run/x.sock: reset".into()));
        assert_eq!(f.exit_class(), ExitClass::Runtime);
        assert_eq!(
            printed(&f),
            "the daemon's control socket failed: /run/x.sock: reset; nothing was changed"
        );
        assert_eq!(
            Failure::from(NotifyError::NoTransport).exit_class(),
            ExitClass::Usage
        );
        let failed = Failure::from(NotifyError::Failed {
            failed: 1,
            total: 2,
        });
        assert_eq!(failed.exit_class(), ExitClass::Runtime);
        assert_eq!(printed(&failed), "1 of 2 transport(s) failed");
        assert_eq!((ExitClass::Runtime.code(), ExitClass::Usage.code()), (1, 2));
    }

    /// Wrapping an untyped error keeps its whole chain, printed once, as before.
    #[test]
    fn an_untyped_cause_chain_is_printed_as_it_was() {
        let cause = || {
            anyhow::anyhow!("unknown network interface nosuch0").context("attaching XDP to nosuch0")
        };
        let before = format!("{:#}", cause());
        let f = Failure::from(RunError::Daemon(cause()));
        assert_eq!(f.exit_class(), ExitClass::Runtime);
        assert_eq!(printed(&f), before);
        assert_eq!(
            before,
            "attaching XDP to nosuch0: unknown network interface nosuch0"
        );
        let offline = Failure::from(ControlError::Offline(cause()));
        assert_eq!(printed(&offline), before);
    }
}
