//! The configuration: the TOML file (`file`), the effective settings (`settings`), where they
//! come from (`sources`: file, embedded default, command line), the PortSentry ignore file and
//! the classic `portsentry.conf` importer. Pure: reads files, never maps or sockets.

pub mod classic;
mod file;
pub mod ignore;
pub mod settings;
pub mod sources;

pub use file::{load_file, parse_str, render, ConfigError, EMBEDDED_DEFAULT};
