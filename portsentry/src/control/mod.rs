//! The control verbs (`status`, `list`, `ban`, `unban`, `promote-shadow`) from the CLI's side.
//! With a daemon running they go through its control socket, so they act on the state it
//! enforces; with none they act on the pinned maps (if any) and the state file through a ban
//! book of their own. Each run says on stderr which it used. Read-only verbs never modify files;
//! a verb never reports success for a change that will not hold.
//!
//! Must not touch: kernel maps or the state file except through the ban book.

pub mod socket;
pub mod verbs;

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{bans::BanBook, clock::Now, config::settings::Settings, dataplane::Maps};
pub use socket::{Reply, Request};

/// Written by the daemon at start so `status` can say what runs where.
pub const DAEMON_FILE: &str = "daemon.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonInfo {
    pub pid: u32,
    pub started_at_ms: u64,
    /// (interface, "native" | "generic")
    pub interfaces: Vec<(String, String)>,
    pub pin_dir: Option<PathBuf>,
}

fn pid_alive(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
}

/// Why a verb did nothing (or, offline, could not save what it did). No daemon is no error.
#[derive(Debug, Error)]
pub enum ControlError {
    /// A daemon is there but the exchange failed.
    #[error("the daemon's control socket failed: {0}; nothing was changed")]
    SocketFailed(String),
    /// A daemon runs but nobody answers on its socket: a change behind its back would not hold.
    #[error(
        "a daemon is running (pid {pid}) but its control socket {} does not answer; nothing was \
         changed (a change made behind its back would not hold)",
        socket.display()
    )]
    NotAnswering { pid: u32, socket: PathBuf },
    /// No daemon: the pins or the state file could not be opened, read or saved.
    #[error(transparent)]
    Offline(anyhow::Error),
}

/// Runs a verb; prints its output and returns its exit code.
pub fn run(settings: &Settings, req: &Request) -> Result<u8, ControlError> {
    let reply = dispatch(settings, req)?;
    print!("{}", reply.stdout);
    eprint!("{}", reply.stderr);
    Ok(reply.code)
}

fn dispatch(settings: &Settings, req: &Request) -> Result<Reply, ControlError> {
    let path = socket::socket_path(&settings.startup.state_dir);
    match socket::call(&path, req) {
        Ok(reply) => {
            eprintln!(
                "portsentry: via the running daemon (control socket {})",
                path.display()
            );
            return Ok(reply);
        }
        Err(socket::CallError::Failed(e)) => return Err(ControlError::SocketFailed(e)),
        Err(socket::CallError::NoDaemon(_)) => {}
    }
    let info: Option<DaemonInfo> =
        std::fs::read_to_string(settings.startup.state_dir.join(DAEMON_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    if let Some(i) = info.filter(|i| pid_alive(i.pid) && i.pid != std::process::id()) {
        return Err(ControlError::NotAnswering {
            pid: i.pid,
            socket: path,
        });
    }
    offline(settings, req).map_err(ControlError::Offline)
}

/// No daemon: the pinned maps (if any) and the state file, through a ban book.
fn offline(settings: &Settings, req: &Request) -> Result<Reply> {
    let store = crate::bans::StateStore::new(&settings.startup.state_dir);
    let mut maps = match &settings.startup.pin_dir {
        Some(dir) => Maps::open_pinned(dir)
            .with_context(|| format!("opening pinned maps in {}", dir.display()))?,
        None => None,
    };
    let state = store.path();
    match (&maps, &settings.startup.pin_dir) {
        (Some(_), Some(dir)) => eprintln!(
            "portsentry: no daemon is running; acting on the pinned maps in {} and {}",
            dir.display(),
            state.display()
        ),
        _ if req.mutates() => eprintln!(
            "portsentry: no daemon is running; acting on {} (takes effect when portsentry starts)",
            state.display()
        ),
        _ => eprintln!(
            "portsentry: no daemon is running; reading {}",
            state.display()
        ),
    }
    let saved = store
        .load()
        .with_context(|| "reading saved bans (nothing was changed)")?;
    let now = Now::read();
    let (mut book, _) = BanBook::open(store, saved, maps.as_ref(), None, false, &now)?;
    let reply = verbs::execute(
        req,
        verbs::Target {
            book: &mut book,
            maps: maps.as_mut(),
            daemon: None,
            pin_dir: settings.startup.pin_dir.as_deref(),
            view: None,
            top_bans: settings.startup.metrics_top_bans as usize,
        },
    );
    if req.mutates() && book.is_dirty() {
        book.save().context("saving bans")?;
    }
    Ok(reply)
}
