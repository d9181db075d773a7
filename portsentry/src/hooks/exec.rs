//! Runs one hook command: an argv list executed directly, never through a shell, in its own
//! process group, killed with that group after the timeout. On failure the first line of its
//! stderr goes into the error line, since that is usually what the admin needs to see.

use std::{
    net::IpAddr,
    os::unix::process::ExitStatusExt,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use tokio::{
    io::AsyncReadExt,
    process::{ChildStderr, Command},
};

use super::{lock, HookOutcome};
use crate::detect::{
    lines::{self, Response},
    logging::LogFn,
};

/// Bytes of a command's stderr kept for its error line; the rest is drained and dropped.
const STDERR_KEEP: usize = 4096;
/// The stderr excerpt in an error line is cut to this many characters.
const STDERR_LINE_MAX: usize = 200;
/// After a command failed, how long its stderr may still take to reach EOF: a background child
/// can hold the pipe open forever, and the error line must not wait for it.
const STDERR_GRACE: Duration = Duration::from_millis(100);

/// The hooks that run a command; each has its own success line (`detect::lines::Response`).
#[derive(Clone, Copy)]
pub enum CommandHook {
    RunCmd,
    KillRoute,
}

impl CommandHook {
    fn name(self) -> &'static str {
        match self {
            CommandHook::RunCmd => "run_cmd",
            CommandHook::KillRoute => "kill_route",
        }
    }
}

/// Runs `argv` (placeholders already expanded) for the ban of `target` and logs the result.
pub async fn run_command(
    log: &LogFn,
    hook: CommandHook,
    argv: &[String],
    timeout: Duration,
    target: IpAddr,
) -> HookOutcome {
    let shown = argv.join(" ");
    let fail = |what: String| {
        log(format!(
            "portsentry: error: hook {} \"{shown}\" for host {target} {what}",
            hook.name()
        ));
        HookOutcome::Failed
    };
    let Some((program, args)) = argv.split_first() else {
        return fail("not run: the command is empty".to_owned());
    };
    let mut cmd = Command::new(program);
    // Own process group: on timeout the whole tree the hook started is killed, not only its
    // first process.
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return fail(format!("could not be started: {e}")),
    };
    let kept = Arc::new(Mutex::new(Vec::new()));
    let mut reader = child
        .stderr
        .take()
        .map(|pipe| tokio::spawn(keep_stderr(pipe, kept.clone())));
    let outcome = match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // Not reaped yet, so the group id cannot have been reused.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill().await;
            log(format!(
                "portsentry: error: hook {} \"{shown}\" for host {target} timed out after {}; killed",
                hook.name(),
                humantime::format_duration(timeout)
            ));
            HookOutcome::TimedOut
        }
        Ok(Err(e)) => fail(format!("could not be waited for: {e}")),
        Ok(Ok(status)) if status.success() => {
            let command = shown.as_str();
            log(lines::response_line(&match hook {
                CommandHook::KillRoute => Response::DroppedRoute { target, command },
                CommandHook::RunCmd => Response::ExternalCommand { target, command },
            }));
            HookOutcome::Succeeded
        }
        Ok(Ok(status)) => {
            if let Some(r) = reader.as_mut() {
                let _ = tokio::time::timeout(STDERR_GRACE, r).await;
            }
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                (None, None) => format!("ended with {status}"),
            };
            let text = String::from_utf8_lossy(&lock(&kept)).into_owned();
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("");
            let first: String = first.chars().take(STDERR_LINE_MAX).collect();
            fail(if first.is_empty() {
                how
            } else {
                format!("{how}: {first}")
            })
        }
    };
    if let Some(r) = reader {
        r.abort();
    }
    outcome
}

/// Keeps the first [`STDERR_KEEP`] bytes of a command's stderr and drains the rest, so a chatty
/// command never blocks on a full pipe.
async fn keep_stderr(mut pipe: ChildStderr, kept: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let mut k = lock(&kept);
        let room = STDERR_KEEP.saturating_sub(k.len());
        k.extend_from_slice(&buf[..n.min(room)]);
    }
}
