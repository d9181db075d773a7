//! The outbox: one JSON file per message under `state_dir/notify-outbox/`, written atomically
//! (`crate::state_file::write_atomic`: temporary file, fsync, rename, fsync of the directory)
//! before anything is sent, rewritten when a channel has delivered it, removed when every
//! channel has.
//!
//! The guarantee (docs/CONFIG.md, "Notifications"): a message is on disk before its first
//! attempt and stays there until every channel has accepted it, so a crash or `kill -9` loses
//! none. A channel's delivery is written down right after the server accepted it; only a crash
//! in the instant between the server's acceptance and that rename sends it again on restart,
//! with the same Message-ID (mail) and `Idempotency-Key`/`id` (webhook), so the receiver can
//! tell the repeat.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::state_file::{sync_dir, write_atomic};

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Mail,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Mail, Channel::Webhook];

    pub fn name(self) -> &'static str {
        match self {
            Channel::Mail => "mail",
            Channel::Webhook => "webhook",
        }
    }
}

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Alert,
    Digest,
    Test,
}

/// One message, as kept in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The Message-ID without brackets; also the webhook's `id`.
    pub id: String,
    pub kind: Kind,
    /// Wall clock (Unix ms) of its creation: the mail's Date.
    pub created_ms: u64,
    pub subject: String,
    /// The mail body (text/plain).
    pub text: String,
    /// The webhook body.
    pub json: serde_json::Value,
    /// Channels that have not accepted it yet.
    pub pending: Vec<Channel>,
}

impl Outgoing {
    fn file_name(&self) -> String {
        let safe: String = self
            .id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{:013}-{safe}.json", self.created_ms)
    }
}

pub const OUTBOX_DIR: &str = "notify-outbox";

pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join(OUTBOX_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every message on disk, oldest first; unreadable files are named in `bad` and left alone.
    pub fn load(&self) -> (Vec<Outgoing>, Vec<String>) {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (out, bad);
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // A temporary file a crash left behind: its message was never renamed in,
                // so it was never sent either; the rename is what makes it exist.
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Outgoing>(&b).map_err(|e| e.to_string()))
            {
                Ok(m) => out.push(m),
                Err(e) => bad.push(format!("{}: {e}", path.display())),
            }
        }
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        (out, bad)
    }

    /// Writes `m` (new or updated) atomically; removes it when nothing is pending.
    pub fn store(&self, m: &Outgoing) -> std::io::Result<()> {
        let path = self.dir.join(m.file_name());
        if m.pending.is_empty() {
            return match fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
        }
        fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec(m).map_err(std::io::Error::other)?;
        write_atomic(&self.dir, &m.file_name(), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_and_leave_when_delivered() {
        let dir = std::env::temp_dir().join(format!("ps-outbox-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ob = Outbox::new(&dir);
        let mut m = Outgoing {
            id: "1.2.3@host".into(),
            kind: Kind::Alert,
            created_ms: 5,
            subject: "s".into(),
            text: "t".into(),
            json: serde_json::json!({"version": 1}),
            pending: vec![Channel::Mail, Channel::Webhook],
        };
        ob.store(&m).unwrap();
        fs::write(ob.dir().join(".x.tmp"), "half").unwrap();
        let (loaded, bad) = ob.load();
        assert_eq!((loaded, bad.len()), (vec![m.clone()], 0));
        assert!(!ob.dir().join(".x.tmp").exists());
        m.pending.retain(|c| *c != Channel::Mail);
        ob.store(&m).unwrap();
        assert_eq!(ob.load().0[0].pending, vec![Channel::Webhook]);
        m.pending.clear();
        ob.store(&m).unwrap();
        assert!(ob.load().0.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
