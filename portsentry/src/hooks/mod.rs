//! Ban response hooks: PortSentry's KILL_RUN_CMD, KILL_HOSTS_DENY and KILL_ROUTE, made safe.
//!
//! PortSentry pasted the attacker's address into a command line and handed it to `system()`,
//! i.e. to `/bin/sh`. Here every command is an argv list executed directly, never through a
//! shell: placeholders are expanded inside each argv element on its own, so a value stays exactly
//! one argument whatever it contains (spaces, `;`, quotes, `$(...)`). An admin who wants shell
//! features writes `["/bin/sh", "-c", "<fixed script>", "sh", "{target}"]`: the script is theirs
//! and fixed, the value only arrives as `$1` and is never parsed as code.
//!
//! Placeholders (in argv elements and the hosts.deny line): `$TARGET$`/`{target}` (source
//! address), `$PORT$`/`{port}` (destination port), `$MODE$`/`{mode}` (`tcp`/`udp`), `{proto}`
//! (`TCP`/`UDP`), `{scan}` (scan type). Anything else is left as written.
//!
//! Limits: one ban response (the configured hooks for one ban, in order) holds a permit of a
//! `max_concurrent` semaphore, and at most `max_per_minute` responses start per rolling minute.
//! A response over either limit is skipped, not queued: a distributed scan bans thousands of
//! sources, and a queue would turn that into thousands of processes or hours of backlog. Each
//! command is killed, with its process group, after `timeout`.
//!
//! Skips are counted, never lost, and reported by [`HookRunner::flush_skip_summary`] in one
//! line: the first promptly, later ones at most once per [`SKIP_SUMMARY_INTERVAL`], so a flood
//! neither floods the log nor goes unnoticed.

use std::{
    collections::VecDeque,
    fs::OpenOptions,
    io::{ErrorKind, Write},
    net::IpAddr,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use tokio::{
    io::AsyncReadExt,
    process::{ChildStderr, Command},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};

use crate::{config::settings::HookSettings, detect::events::Protocol, detect::logging::LogFn};

/// Skipped responses are summarised at most this often (the first skip is reported at once).
pub const SKIP_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// The rolling window of `max_per_minute`.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Bytes of a command's stderr kept for its error line; the rest is drained and dropped.
const STDERR_KEEP: usize = 4096;
/// The stderr excerpt in an error line is cut to this many characters.
const STDERR_LINE_MAX: usize = 200;
/// After a command failed, how long its stderr may still take to reach EOF: a background child
/// can hold the pipe open forever, and the error line must not wait for it.
const STDERR_GRACE: Duration = Duration::from_millis(100);

/// The ban a response is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanInfo {
    pub target: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub scan: String,
    /// The source is dropped (block mode, blocking on for this protocol). Only `run_cmd` runs
    /// for a ban that is not, and only with `run_cmd_always`.
    pub blocked: bool,
}

/// Placeholder values for one ban.
pub struct Vars<'a> {
    target: String,
    port: String,
    mode: &'static str,
    proto: &'static str,
    scan: &'a str,
}

impl<'a> Vars<'a> {
    pub fn new(b: &'a BanInfo) -> Self {
        Self {
            target: b.target.to_string(),
            port: b.port.to_string(),
            mode: b.protocol.mode(),
            proto: b.protocol.name(),
            scan: &b.scan,
        }
    }

    /// The placeholder `text` starts with: its length and value.
    fn lookup(&self, text: &str) -> Option<(usize, &str)> {
        let table: [(&str, &str); 8] = [
            ("$TARGET$", &self.target),
            ("{target}", &self.target),
            ("$PORT$", &self.port),
            ("{port}", &self.port),
            ("$MODE$", self.mode),
            ("{mode}", self.mode),
            ("{proto}", self.proto),
            ("{scan}", self.scan),
        ];
        table
            .into_iter()
            .find(|(key, _)| text.starts_with(key))
            .map(|(key, value)| (key.len(), value))
    }
}

/// Substitutes placeholders in one string, in a single left-to-right pass: substituted text is
/// never scanned again, so a value containing `{port}` stays literal.
pub fn expand(template: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(i) = rest.find(['$', '{']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        // Not a placeholder: keep the '$' or '{' (one byte, ASCII) and look further.
        let (len, value) = vars.lookup(rest).unwrap_or((1, &rest[..1]));
        out.push_str(value);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// Expands each argv element separately: one element stays one element, whatever the values
/// contain; elements are never joined or split.
pub fn expand_argv(argv: &[String], vars: &Vars) -> Vec<String> {
    argv.iter().map(|a| expand(a, vars)).collect()
}

/// Counters since start. `started` and the `skipped_*` count ban responses; `succeeded`,
/// `failed` and `timed_out` count single hooks (a command or a hosts.deny write). A timed-out
/// command is also counted as failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub skipped_concurrency: u64,
    pub skipped_rate: u64,
}

#[derive(Clone, Copy)]
enum Hook {
    RunCmd,
    KillRoute,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::RunCmd => "run_cmd",
            Hook::KillRoute => "kill_route",
        }
    }
}

/// One hook of a response, still with its templates.
enum Step<'s> {
    Command(Hook, &'s [String]),
    HostsDeny(&'s str),
}

enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
}

struct State {
    settings: Arc<HookSettings>,
    permits: Arc<Semaphore>,
    /// The limit `permits` was made for (`max_concurrent`, at least 1).
    permits_for: usize,
    /// Start times of the responses of the last minute, oldest first.
    starts: VecDeque<Instant>,
    stats: HookStats,
    /// Skips not reported yet.
    unreported_concurrency: u64,
    unreported_rate: u64,
    last_summary: Option<Instant>,
}

struct Inner {
    state: Mutex<State>,
    log: LogFn,
    running: AtomicUsize,
    became_idle: Notify,
    /// Serialises hosts.deny check-then-append, so two responses cannot both miss a line and both
    /// write it.
    deny_lock: Arc<Mutex<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop bans from being answered; the data stays consistent
    // because every critical section only does plain counter and queue updates.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the ban response hooks; cheap to call from the event loop.
pub struct HookRunner {
    inner: Arc<Inner>,
}

/// One response in flight: keeps the permit and the running count until the task ends, even if
/// it panics or the runtime drops it.
struct InFlight {
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.inner.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.became_idle.notify_waiters();
        }
    }
}

impl HookRunner {
    /// `log` receives complete log lines (the daemon prints them to stdout and the history file).
    pub fn new(settings: HookSettings, log: LogFn) -> Self {
        // max_concurrent 0 is clamped to 1 rather than meaning "no hooks ever run", which would
        // silently disable what the admin configured; max_per_minute 0 means unlimited.
        let permits_for = settings.max_concurrent.max(1);
        let state = State {
            settings: Arc::new(settings),
            permits: Arc::new(Semaphore::new(permits_for)),
            permits_for,
            starts: VecDeque::new(),
            stats: HookStats::default(),
            unreported_concurrency: 0,
            unreported_rate: 0,
            last_summary: None,
        };
        let inner = Inner {
            state: Mutex::new(state),
            log,
            running: AtomicUsize::new(0),
            became_idle: Notify::new(),
            deny_lock: Arc::new(Mutex::new(())),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// New settings take effect for the next ban; running responses finish with the old ones
    /// (and keep their permits of the old semaphore if `max_concurrent` changed).
    pub fn reload(&self, settings: HookSettings) {
        let mut st = lock(&self.inner.state);
        let permits_for = settings.max_concurrent.max(1);
        if permits_for != st.permits_for {
            st.permits = Arc::new(Semaphore::new(permits_for));
            st.permits_for = permits_for;
        }
        st.settings = Arc::new(settings);
    }

    /// Starts the response to one ban in the background and returns at once; no-op without hooks.
    pub fn on_ban(&self, ban: &BanInfo) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            (self.inner.log)(format!(
                "portsentry: error: hooks for host {} not run: no async runtime",
                ban.target
            ));
            return;
        };
        let (settings, permit) = {
            let mut st = lock(&self.inner.state);
            if st.settings.is_empty() {
                return;
            }
            // An unenforced ban has nothing to respond with unless run_cmd is asked to run
            // for it; that is not a skip.
            let runs_unblocked = st.settings.run_cmd_always && st.settings.run_cmd.is_some();
            if !ban.blocked && !runs_unblocked {
                return;
            }
            // Decided here, synchronously, so a burst of bans is limited exactly.
            let Ok(permit) = st.permits.clone().try_acquire_owned() else {
                st.stats.skipped_concurrency += 1;
                st.unreported_concurrency += 1;
                return;
            };
            let now = Instant::now();
            while st
                .starts
                .front()
                .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
            {
                st.starts.pop_front();
            }
            let max = st.settings.max_per_minute;
            if max > 0 && st.starts.len() >= max as usize {
                st.stats.skipped_rate += 1;
                st.unreported_rate += 1;
                return;
            }
            st.starts.push_back(now);
            st.stats.started += 1;
            self.inner.running.fetch_add(1, Ordering::SeqCst);
            (st.settings.clone(), permit)
        };
        let in_flight = InFlight {
            inner: self.inner.clone(),
            _permit: permit,
        };
        let ban = ban.clone();
        runtime.spawn(async move {
            in_flight.inner.respond(&settings, &ban).await;
            drop(in_flight);
        });
    }

    pub fn stats(&self) -> HookStats {
        lock(&self.inner.state).stats
    }

    /// Reports responses skipped since the last report in one line: at once if none was
    /// reported before or the last report is at least [`SKIP_SUMMARY_INTERVAL`] old, otherwise
    /// the counts wait for a later call.
    pub fn flush_skip_summary(&self) {
        let line = {
            let mut st = lock(&self.inner.state);
            let skipped = st.unreported_concurrency + st.unreported_rate;
            if skipped == 0
                || st
                    .last_summary
                    .is_some_and(|t| t.elapsed() < SKIP_SUMMARY_INTERVAL)
            {
                return;
            }
            let line = format!(
                "portsentry: hooks: skipped {skipped} ban response(s) since the last report ({} over max_concurrent = {}, {} over max_per_minute = {}); {} run so far",
                st.unreported_concurrency, st.permits_for, st.unreported_rate, st.settings.max_per_minute, st.stats.started,
            );
            st.unreported_concurrency = 0;
            st.unreported_rate = 0;
            st.last_summary = Some(Instant::now());
            line
        };
        (self.inner.log)(line);
    }

    /// Waits until no response is running, at most `timeout`; true if idle.
    pub async fn idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a response ending in between still wakes us.
            let notified = self.inner.became_idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.running.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inner.running.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

impl Inner {
    /// Runs the configured hooks for one ban in PortSentry's order. A failing hook does not stop
    /// the next one, as in PortSentry: each is a separate defence.
    async fn respond(&self, s: &HookSettings, ban: &BanInfo) {
        let vars = Vars::new(ban);
        let run_cmd = s
            .run_cmd
            .as_deref()
            .map(|argv| Step::Command(Hook::RunCmd, argv));
        // hosts_deny and kill_route block; an unenforced ban must stay unenforced.
        let deny = s
            .hosts_deny
            .as_deref()
            .filter(|_| ban.blocked)
            .map(Step::HostsDeny);
        let route = s
            .kill_route
            .as_deref()
            .filter(|_| ban.blocked)
            .map(|argv| Step::Command(Hook::KillRoute, argv));
        let order = if s.run_cmd_first {
            [run_cmd, deny, route]
        } else {
            [deny, route, run_cmd]
        };
        for step in order.into_iter().flatten() {
            let outcome = match step {
                Step::HostsDeny(template) => {
                    self.hosts_deny(template, &s.hosts_deny_file, &vars, ban.target)
                        .await
                }
                Step::Command(hook, argv) => {
                    self.run_command(hook, &expand_argv(argv, &vars), s.timeout, ban.target)
                        .await
                }
            };
            let mut st = lock(&self.state);
            match outcome {
                Outcome::Succeeded => st.stats.succeeded += 1,
                Outcome::Failed => st.stats.failed += 1,
                Outcome::TimedOut => {
                    st.stats.failed += 1;
                    st.stats.timed_out += 1;
                }
            }
        }
    }

    async fn run_command(
        &self,
        hook: Hook,
        argv: &[String],
        timeout: Duration,
        target: IpAddr,
    ) -> Outcome {
        let shown = argv.join(" ");
        let fail = |what: String| {
            (self.log)(format!(
                "portsentry: error: hook {} \"{shown}\" for host {target} {what}",
                hook.name()
            ));
            Outcome::Failed
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
                (self.log)(format!(
                    "portsentry: error: hook {} \"{shown}\" for host {target} timed out after {}; killed",
                    hook.name(),
                    humantime::format_duration(timeout)
                ));
                Outcome::TimedOut
            }
            Ok(Err(e)) => fail(format!("could not be waited for: {e}")),
            Ok(Ok(status)) if status.success() => {
                (self.log)(match hook {
                    Hook::KillRoute => format!("attackalert: Host {target} has been blocked via dropped route using command: \"{shown}\""),
                    Hook::RunCmd => format!("attackalert: External command run for host: {target} using command: \"{shown}\""),
                });
                Outcome::Succeeded
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

    async fn hosts_deny(
        &self,
        template: &str,
        file: &Path,
        vars: &Vars<'_>,
        target: IpAddr,
    ) -> Outcome {
        let line = expand(template, vars);
        let fail = |what: String| {
            (self.log)(format!(
                "portsentry: error: hook hosts_deny for host {target}: {what}"
            ));
            Outcome::Failed
        };
        // A line break would let a value add lines of its own to the access-control file.
        if line.contains(['\n', '\r', '\0']) {
            return fail(format!(
                "refusing to write {line:?}: it contains a line break or NUL"
            ));
        }
        let (deny_lock, path, owned) = (self.deny_lock.clone(), file.to_owned(), line.clone());
        let result = tokio::task::spawn_blocking(move || {
            let _guard = lock(&deny_lock);
            append_line(&path, &owned)
        })
        .await;
        match result {
            Ok(Ok(written)) => {
                let note = if written { "" } else { " (already present)" };
                (self.log)(format!("attackalert: Host {target} has been blocked via wrappers with string: \"{line}\"{note}"));
                Outcome::Succeeded
            }
            Ok(Err(e)) => fail(format!("cannot append to {}: {e}", file.display())),
            Err(e) => fail(format!("cannot append to {}: {e}", file.display())),
        }
    }
}

/// Appends `line` to `path` unless it already is a line there (PortSentry did not duplicate
/// either); false if it was present.
fn append_line(path: &Path, line: &str) -> std::io::Result<bool> {
    let mut glue = "";
    match std::fs::read(path) {
        Ok(bytes) => {
            if String::from_utf8_lossy(&bytes).lines().any(|l| l == line) {
                return Ok(false);
            }
            // Otherwise our line would be glued onto an unterminated last line.
            if bytes.last().is_some_and(|b| *b != b'\n') {
                glue = "\n";
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(format!("{glue}{line}\n").as_bytes())?;
    Ok(true)
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

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf, sync::atomic::AtomicUsize};

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::SeqCst);
            let dir =
                std::env::temp_dir().join(format!("portsentry-hooks-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    type Lines = Arc<Mutex<Vec<String>>>;

    fn runner(settings: HookSettings) -> (HookRunner, Lines) {
        let lines: Lines = Arc::default();
        let sink = lines.clone();
        (
            HookRunner::new(settings, Arc::new(move |l| lock(&sink).push(l))),
            lines,
        )
    }

    fn ban(scan: &str) -> BanInfo {
        BanInfo {
            target: "192.0.2.7".parse().unwrap(),
            port: 31337,
            protocol: Protocol::Tcp,
            scan: scan.to_owned(),
            blocked: true,
        }
    }

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// `/bin/sh -c SCRIPT sh FILE`: a fixed admin script with the file path as `$1`.
    fn sh(script: &str, file: &Path) -> Vec<String> {
        argv(&["/bin/sh", "-c", script, "sh", &file.display().to_string()])
    }

    fn hooks(run_cmd: Option<Vec<String>>) -> HookSettings {
        HookSettings {
            run_cmd,
            timeout: Duration::from_secs(10),
            ..HookSettings::default()
        }
    }

    async fn settle(r: &HookRunner) {
        assert!(
            r.idle(Duration::from_secs(10)).await,
            "hooks still running after 10 s"
        );
    }

    #[test]
    fn expand_substitutes_both_syntaxes_once() {
        let b = BanInfo {
            protocol: Protocol::Udp,
            ..ban("SYN")
        };
        let v = Vars::new(&b);
        assert_eq!(
            expand(
                "$TARGET$ {target} $PORT$ {port} $MODE$ {mode} {proto} {scan}",
                &v
            ),
            "192.0.2.7 192.0.2.7 31337 31337 udp udp UDP SYN"
        );
        assert_eq!(
            expand("{target}{port}é$PORT$$", &v),
            "192.0.2.731337é31337$"
        );
        assert_eq!(
            expand("{x} $X$ $TARGET {target {Target} $$ {{port}}", &v),
            "{x} $X$ $TARGET {target {Target} $$ {31337}"
        );
        let v6 = BanInfo {
            target: "2001:db8::1".parse().unwrap(),
            ..ban("")
        };
        assert_eq!(expand("{target}", &Vars::new(&v6)), "2001:db8::1");
        // Substituted text is not scanned again.
        let nasty = ban("{port}$TARGET${scan}");
        assert_eq!(
            expand("<{scan}>", &Vars::new(&nasty)),
            "<{port}$TARGET${scan}>"
        );
    }

    #[test]
    fn expand_argv_keeps_one_element_per_element() {
        let b = ban("a b; c $(d) `e`");
        let out = expand_argv(
            &argv(&["/sbin/route", "add", "{scan}", "x {target} y", "$(z)"]),
            &Vars::new(&b),
        );
        assert_eq!(
            out,
            argv(&[
                "/sbin/route",
                "add",
                "a b; c $(d) `e`",
                "x 192.0.2.7 y",
                "$(z)"
            ])
        );
    }

    #[tokio::test]
    async fn hostile_values_never_reach_a_shell() {
        let dir = Scratch::new();
        let out = dir.path("out");
        let marks: Vec<PathBuf> = (1..=3).map(|i| dir.path(&format!("mark{i}"))).collect();
        let hostile = format!(
            "x; touch {} $(touch {}) `touch {}` 'q' \"w\"  end",
            marks[0].display(),
            marks[1].display(),
            marks[2].display()
        );
        let script = format!("printf '%s\\n' \"$@\" > '{}'", out.display());
        let (r, lines) = runner(hooks(Some(argv(&[
            "/bin/sh", "-c", &script, "argv0", "{scan}",
        ]))));
        r.on_ban(&ban(&hostile));
        settle(&r).await;
        assert_eq!(
            fs::read_to_string(&out).unwrap(),
            format!("{hostile}\n"),
            "log: {:?}",
            lock(&lines)
        );
        for m in &marks {
            assert!(
                !m.exists(),
                "{} was created: the value ran as shell code",
                m.display()
            );
        }
        assert_eq!(r.stats().succeeded, 1);
    }

    #[tokio::test]
    async fn hooks_run_in_portsentry_order() {
        for first in [true, false] {
            let dir = Scratch::new();
            let file = dir.path("order");
            let s = HookSettings {
                run_cmd: Some(sh("echo cmd >> \"$1\"", &file)),
                kill_route: Some(sh("echo route >> \"$1\"", &file)),
                // The same file, so the order of all three shows in it.
                hosts_deny: Some("ALL: {target}".to_owned()),
                hosts_deny_file: file.clone(),
                run_cmd_first: first,
                ..hooks(None)
            };
            let (r, lines) = runner(s);
            r.on_ban(&ban("SYN"));
            settle(&r).await;
            let want = if first {
                "cmd\nALL: 192.0.2.7\nroute\n"
            } else {
                "ALL: 192.0.2.7\nroute\ncmd\n"
            };
            assert_eq!(
                fs::read_to_string(&file).unwrap(),
                want,
                "run_cmd_first = {first}"
            );
            let lines = lock(&lines).clone();
            assert_eq!(lines.len(), 3, "{lines:?}");
            let cmd = format!("/bin/sh -c echo cmd >> \"$1\" sh {}", file.display());
            assert!(lines.contains(&format!("attackalert: External command run for host: 192.0.2.7 using command: \"{cmd}\"")), "{lines:?}");
            assert!(lines.iter().any(|l| l.starts_with("attackalert: Host 192.0.2.7 has been blocked via dropped route using command: \"/bin/sh -c echo route")), "{lines:?}");
            assert!(lines.contains(&"attackalert: Host 192.0.2.7 has been blocked via wrappers with string: \"ALL: 192.0.2.7\"".to_owned()), "{lines:?}");
            assert_eq!(
                r.stats(),
                HookStats {
                    started: 1,
                    succeeded: 3,
                    ..HookStats::default()
                }
            );
        }
    }

    #[tokio::test]
    async fn an_unenforced_ban_runs_only_run_cmd_and_only_when_asked() {
        for always in [false, true] {
            let dir = Scratch::new();
            let file = dir.path("order");
            let s = HookSettings {
                run_cmd: Some(sh("echo cmd >> \"$1\"", &file)),
                kill_route: Some(sh("echo route >> \"$1\"", &file)),
                hosts_deny: Some("ALL: {target}".to_owned()),
                hosts_deny_file: file.clone(),
                run_cmd_always: always,
                ..hooks(None)
            };
            let (r, lines) = runner(s);
            r.on_ban(&BanInfo {
                blocked: false,
                ..ban("SYN")
            });
            settle(&r).await;
            let got = fs::read_to_string(&file).unwrap_or_default();
            let (want, started) = if always { ("cmd\n", 1) } else { ("", 0) };
            assert_eq!(got, want, "run_cmd_always = {always}: {:?}", lock(&lines));
            assert_eq!(
                r.stats(),
                HookStats {
                    started,
                    succeeded: started,
                    ..HookStats::default()
                },
                "not running is not a skip"
            );
        }
    }

    #[tokio::test]
    async fn hosts_deny_line_is_written_once() {
        let dir = Scratch::new();
        let file = dir.path("hosts.deny");
        fs::write(&file, "# local rules\nALL: 198.51.100.1").unwrap();
        let s = HookSettings {
            hosts_deny: Some("ALL: $TARGET$ : {proto}".to_owned()),
            hosts_deny_file: file.clone(),
            ..hooks(None)
        };
        let (r, lines) = runner(s);
        for _ in 0..3 {
            r.on_ban(&ban("SYN"));
            settle(&r).await;
        }
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "# local rules\nALL: 198.51.100.1\nALL: 192.0.2.7 : TCP\n"
        );
        assert_eq!(r.stats().succeeded, 3);
        assert_eq!(
            lock(&lines)
                .iter()
                .filter(|l| l.ends_with("(already present)"))
                .count(),
            2
        );
    }

    #[tokio::test]
    async fn hosts_deny_refuses_line_breaks() {
        let dir = Scratch::new();
        let file = dir.path("hosts.deny");
        let s = HookSettings {
            hosts_deny: Some("ALL: {target} # {scan}".to_owned()),
            hosts_deny_file: file.clone(),
            ..hooks(None)
        };
        let (r, lines) = runner(s);
        r.on_ban(&ban("x\nALL: ALL"));
        settle(&r).await;
        assert!(!file.exists());
        assert_eq!(r.stats().failed, 1);
        assert!(lock(&lines)[0]
            .starts_with("portsentry: error: hook hosts_deny for host 192.0.2.7: refusing"));
    }

    #[tokio::test]
    async fn failures_are_counted_and_logged() {
        let dir = Scratch::new();
        let cases: [(Vec<String>, &str); 3] = [
            (argv(&["/bin/false"]), "portsentry: error: hook run_cmd \"/bin/false\" for host 192.0.2.7 exited with status 1"),
            (argv(&["/bin/sh", "-c", "echo '' >&2; echo '  no route to {target}' >&2; exit 3"]), "exited with status 3: no route to 192.0.2.7"),
            (argv(&["/bin/sh", "-c", "kill -9 $$"]), "was killed by signal 9"),
        ];
        for (cmd, want) in cases {
            let (r, lines) = runner(hooks(Some(cmd)));
            r.on_ban(&ban("SYN"));
            settle(&r).await;
            assert_eq!(
                r.stats(),
                HookStats {
                    started: 1,
                    failed: 1,
                    ..HookStats::default()
                }
            );
            let lines = lock(&lines).clone();
            assert!(
                lines.len() == 1
                    && lines[0].starts_with("portsentry: error: hook run_cmd")
                    && lines[0].ends_with(want),
                "{lines:?}"
            );
        }
        let missing = dir.path("no-such-program");
        let (r, lines) = runner(hooks(Some(vec![missing.display().to_string()])));
        r.on_ban(&ban("SYN"));
        settle(&r).await;
        assert_eq!(r.stats().failed, 1);
        assert!(
            lock(&lines)[0].contains("could not be started"),
            "{:?}",
            lock(&lines)
        );
    }

    #[tokio::test]
    async fn slow_commands_are_killed() {
        let s = HookSettings {
            timeout: Duration::from_millis(200),
            ..hooks(Some(argv(&["/bin/sleep", "5"])))
        };
        let (r, lines) = runner(s);
        let t0 = Instant::now();
        r.on_ban(&ban("SYN"));
        settle(&r).await;
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(
            r.stats(),
            HookStats {
                started: 1,
                failed: 1,
                timed_out: 1,
                ..HookStats::default()
            }
        );
        assert!(
            lock(&lines)[0].ends_with("timed out after 200ms; killed"),
            "{:?}",
            lock(&lines)
        );
    }

    #[tokio::test]
    async fn concurrency_limit_skips_and_reports() {
        let s = HookSettings {
            max_concurrent: 2,
            ..hooks(Some(argv(&["/bin/sleep", "1"])))
        };
        let (r, lines) = runner(s);
        for _ in 0..10 {
            r.on_ban(&ban("SYN"));
        }
        assert_eq!(
            r.stats(),
            HookStats {
                started: 2,
                skipped_concurrency: 8,
                ..HookStats::default()
            }
        );
        r.flush_skip_summary();
        r.flush_skip_summary();
        assert_eq!(
            *lock(&lines),
            ["portsentry: hooks: skipped 8 ban response(s) since the last report (8 over max_concurrent = 2, 0 over max_per_minute = 60); 2 run so far"]
        );
        // A later skip waits for the interval, but is not lost.
        r.on_ban(&ban("SYN"));
        r.flush_skip_summary();
        assert_eq!(lock(&lines).len(), 1);
        {
            let mut st = lock(&r.inner.state);
            st.last_summary = Instant::now().checked_sub(SKIP_SUMMARY_INTERVAL);
        }
        r.flush_skip_summary();
        assert!(
            lock(&lines)
                .last()
                .is_some_and(|l| l.contains("skipped 1 ban response(s)")),
            "{:?}",
            lock(&lines)
        );
        settle(&r).await;
        assert_eq!(r.stats().succeeded, 2);
    }

    #[tokio::test]
    async fn rate_limit_skips() {
        let s = HookSettings {
            max_per_minute: 3,
            ..hooks(Some(argv(&["/bin/true"])))
        };
        let (r, lines) = runner(s);
        for _ in 0..10 {
            r.on_ban(&ban("SYN"));
            settle(&r).await;
        }
        assert_eq!(
            r.stats(),
            HookStats {
                started: 3,
                succeeded: 3,
                skipped_rate: 7,
                ..HookStats::default()
            }
        );
        r.flush_skip_summary();
        assert!(lock(&lines)
            .last()
            .is_some_and(|l| l.contains("(0 over max_concurrent = 4, 7 over max_per_minute = 3)")));
    }

    #[tokio::test]
    async fn idle_waits_for_running_responses() {
        let (r, _) = runner(hooks(Some(argv(&["/bin/true"]))));
        assert!(r.idle(Duration::ZERO).await);
        r.on_ban(&ban("SYN"));
        settle(&r).await;
        assert_eq!(r.stats().succeeded, 1);
        r.reload(hooks(Some(argv(&["/bin/sleep", "5"]))));
        r.on_ban(&ban("SYN"));
        assert!(!r.idle(Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn empty_settings_do_nothing_until_reloaded() {
        let (r, lines) = runner(HookSettings::default());
        r.on_ban(&ban("SYN"));
        r.flush_skip_summary();
        assert!(r.idle(Duration::ZERO).await);
        assert_eq!(r.stats(), HookStats::default());
        assert!(lock(&lines).is_empty());
        r.reload(hooks(Some(argv(&["/bin/true"]))));
        r.on_ban(&ban("SYN"));
        settle(&r).await;
        assert_eq!(
            r.stats(),
            HookStats {
                started: 1,
                succeeded: 1,
                ..HookStats::default()
            }
        );
    }
}
