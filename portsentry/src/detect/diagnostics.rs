//! The XDP program's own diagnostics (portsentry-ebpf/src/diag.rs, written with aya-log): why a
//! packet counted as malformed, bogus or spoofed, full tables, lost events. `log_level` sets
//! how much the program writes (at load); this module forwards each record into the daemon's
//! log as `portsentry: kernel <level>: <message>` on stderr. Owns the `log` facade's logger;
//! the daemon's other lines do not go through it.

use std::sync::Once;

use log::{LevelFilter, Log, Metadata, Record};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{config::settings::LogLevel, dataplane::KernelLogger};

/// The aya-log level the XDP program is loaded with (0 = off: no diagnostic survives the
/// verifier).
pub fn kernel_level(level: LogLevel) -> u8 {
    match level {
        LogLevel::Off => 0,
        LogLevel::Error => 1,
        LogLevel::Warn => 2,
        LogLevel::Info => 3,
        LogLevel::Debug => 4,
        LogLevel::Trace => 5,
    }
}

fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::Off,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    }
}

/// One line per record, in the daemon's `portsentry: …` style.
struct DaemonLog;

impl Log for DaemonLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            crate::errln!("portsentry: kernel {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static DAEMON_LOG: DaemonLog = DaemonLog;

/// Installs the logger (once per process) at `level`.
pub fn install(level: LogLevel) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Only fails if another logger was set first; then records go there instead.
        let _ = log::set_logger(&DAEMON_LOG);
    });
    log::set_max_level(filter(level));
}

/// Forwards the program's records as they arrive. Returns when polling fails.
pub async fn forward(logger: KernelLogger) -> std::io::Result<()> {
    // SAFETY: the logger owns its ring buffer's fd and returns that same fd for as long as it
    // lives, and the AsyncFd owns the logger.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }?;
    loop {
        let mut guard = fd.readable_mut().await?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
