//! The configuration: the TOML file (`file`), the keys and their types (`settings`, `tables`,
//! read and written by `values`), where settings come from (`sources`: file, embedded
//! default, command line), the PortSentry ignore file and the classic `portsentry.conf`
//! importer, `smtp_url`'s syntax. Pure: reads files, never maps, bans or sockets; the ground
//! floor of the crate, importing nothing of it but `net`'s address and port types. The files
//! a value names (credentials, certificates) are read by their owners (`daemon::resources`).
//!
//! Adding a key: one field (with its doc, default and `#[serde(with)]` syntax) in
//! `StartupSettings` (needs a restart) or `LiveSettings` (SIGHUP applies it), then
//! dist/portsentry.toml and docs/CONFIG.md. Parsing, unknown-key hints, check-config output
//! and reload warnings follow from the types.

pub mod classic;
mod durations;
mod error;
mod file;
pub mod ignore;
pub mod settings;
pub mod smtp_url;
pub mod sources;
mod tables;
pub mod values;

pub use error::{ConfigError, ValidationError};
pub use file::{load_file, parse_str, render, EMBEDDED_DEFAULT};
pub use sources::{LoadError, Overlay, Sources};
pub use tables::{CrowdsecSettings, HookSettings, DEFAULT_CROWDSEC_SCENARIO, DEFAULT_HOSTS_DENY};

#[cfg(test)]
mod tests;
