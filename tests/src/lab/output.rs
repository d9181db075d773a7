//! A child's stdout and stderr, collected line by line while it runs.
//!
//! A background thread reads whatever arrives, so the child never blocks on a full pipe. Reads
//! happen under the same lock on that thread and in [`Output::sync`] on the caller's, with the
//! pipes non-blocking: after `sync` every line the child wrote before some other signal the
//! caller has seen (READY=1 on the notify socket, its exit) is in [`Output::with_lines`], with no
//! sleep and no race against the background thread.

use std::{
    io::{ErrorKind, Read},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    process::Child,
    sync::{Arc, Mutex, MutexGuard},
    thread,
};

use anyhow::{Context, Result};
use nix::{
    errno::Errno,
    fcntl::{fcntl, FcntlArg, OFlag},
    poll::{poll, PollFd, PollFlags, PollTimeout},
};

pub(super) struct Output {
    shared: Arc<Mutex<Collected>>,
}

struct Collected {
    streams: Vec<Stream>,
    lines: Vec<String>,
}

struct Stream {
    pipe: Box<dyn Read + Send>,
    /// Bytes after the last newline read so far.
    partial: Vec<u8>,
    eof: bool,
}

impl Output {
    /// Takes the child's piped stdout and stderr and starts following them.
    pub(super) fn capture(child: &mut Child) -> Result<Self> {
        let mut streams = Vec::new();
        let mut watched = Vec::new();
        let pipes = [
            child.stdout.take().map(|s| {
                (
                    s.as_fd().try_clone_to_owned(),
                    Box::new(s) as Box<dyn Read + Send>,
                )
            }),
            child.stderr.take().map(|s| {
                (
                    s.as_fd().try_clone_to_owned(),
                    Box::new(s) as Box<dyn Read + Send>,
                )
            }),
        ];
        for (fd, pipe) in pipes.into_iter().flatten() {
            let fd = fd.context("duplicating a pipe descriptor")?;
            set_nonblocking(&fd)?;
            watched.push(fd);
            streams.push(Stream {
                pipe,
                partial: Vec::new(),
                eof: false,
            });
        }
        let shared = Arc::new(Mutex::new(Collected {
            streams,
            lines: Vec::new(),
        }));
        let follower = shared.clone();
        thread::spawn(move || follow(&follower, &watched));
        Ok(Self { shared })
    }

    /// Reads everything already in the pipes into the lines, on this thread.
    pub(super) fn sync(&self) {
        drain(&mut lock(&self.shared));
    }

    /// Calls `f` with the lines so far, after a [`Output::sync`].
    pub(super) fn with_lines<T>(&self, f: impl FnOnce(&[String]) -> T) -> T {
        let mut c = lock(&self.shared);
        drain(&mut c);
        f(&c.lines)
    }
}

fn lock(shared: &Mutex<Collected>) -> MutexGuard<'_, Collected> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).context("F_GETFL on a pipe")?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .context("F_SETFL on a pipe")?;
    Ok(())
}

/// The background reader: waits until a pipe is readable, then drains under the lock; ends
/// when every pipe has reached end of file.
fn follow(shared: &Mutex<Collected>, watched: &[OwnedFd]) {
    loop {
        let open: Vec<bool> = lock(shared).streams.iter().map(|s| !s.eof).collect();
        let mut fds: Vec<PollFd> = watched
            .iter()
            .zip(open)
            .filter(|(_, open)| *open)
            .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        if fds.is_empty() {
            return;
        }
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
        drain(&mut lock(shared));
    }
}

/// Reads every stream until it would block, appending complete lines (newline and a trailing
/// carriage return stripped); at end of file an unfinished last line counts too.
fn drain(c: &mut Collected) {
    let Collected { streams, lines } = c;
    let mut buf = [0u8; 8192];
    for s in streams.iter_mut() {
        while !s.eof {
            match s.pipe.read(&mut buf) {
                Ok(0) => {
                    s.eof = true;
                    if !s.partial.is_empty() {
                        lines.push(String::from_utf8_lossy(&s.partial).into_owned());
                        s.partial.clear();
                    }
                }
                Ok(n) => {
                    s.partial.extend_from_slice(&buf[..n]);
                    while let Some(i) = s.partial.iter().position(|b| *b == b'\n') {
                        let mut line: Vec<u8> = s.partial.drain(..=i).collect();
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        lines.push(String::from_utf8_lossy(&line).into_owned());
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => s.eof = true,
            }
        }
    }
}
