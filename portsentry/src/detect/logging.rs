//! Where the daemon's lines go: stdout (the journal under systemd) and the history file in
//! PortSentry 2.x's or 1.2's format. The words are `lines`'; this only writes them.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use crate::{
    clock,
    config::settings::{HistoryFormat, LogFormat},
    detect::{
        events::{EventKind, ProbeEvent},
        lines::{
            ban_line, ban_table_full_line, classic_history_line, json_line, refused_line, scan_line,
        },
    },
    report::{ReportGate, REPORT_INTERVAL},
};

/// Where worker threads and hook tasks send log lines; the event loop writes them.
pub type LogFn = std::sync::Arc<dyn Fn(String) + Send + Sync>;

/// Where event lines go: stdout (the journal under systemd) and the history file, which is
/// appended to, never truncated. In 2.x format the history holds every line, each prefixed by a
/// local ISO-8601 timestamp; in 1.2 format only the `Host: … Blocked` lines.
pub struct LogSink {
    format: LogFormat,
    history_format: HistoryFormat,
    history_path: Option<PathBuf>,
    history: Option<File>,
    /// A failing history file is retried on every line but reported once per interval.
    history_error_report: ReportGate,
    /// History writes that failed since the last report.
    failed_writes: u64,
}

impl LogSink {
    pub fn new(
        format: LogFormat,
        history_path: Option<&Path>,
        history_format: HistoryFormat,
    ) -> Self {
        let mut sink = Self {
            format,
            history_format,
            history_path: history_path.map(Path::to_path_buf),
            history: None,
            history_error_report: ReportGate::new(REPORT_INTERVAL),
            failed_writes: 0,
        };
        if sink.history_path.is_some() {
            if let Err(e) = sink.open_history() {
                sink.report_history_error(&e);
            }
        }
        sink
    }

    fn open_history(&mut self) -> std::io::Result<()> {
        if let Some(path) = &self.history_path {
            let f = OpenOptions::new().create(true).append(true).open(path)?;
            self.history = Some(f);
        }
        Ok(())
    }

    /// Logs one event: the scan line, plus the ban line when it banned. `trigger` is the
    /// trigger as applied (`LiveSettings::effective_trigger`).
    pub fn event(&mut self, ev: &ProbeEvent, trigger: u64, iface: &str) {
        let now = clock::unix_ms();
        match self.format {
            LogFormat::Json => self.line_at(&json_line(ev, trigger, iface, now), now),
            LogFormat::Portsentry => {
                if let Some(line) = refused_line(ev, iface) {
                    self.line_at(&line, now);
                    return;
                }
                self.line_at(&scan_line(ev, trigger, None), now);
                match ev.kind {
                    EventKind::Ban if ev.is_blocked() => self.line_at(&ban_line(ev, iface), now),
                    EventKind::BanTableFull => self.line_at(&ban_table_full_line(ev), now),
                    _ => {}
                }
            }
        }
    }

    /// Logs a line that is not an event (hooks, start-up), to stdout and history.
    pub fn line(&mut self, text: &str) {
        self.line_at(text, clock::unix_ms());
    }

    /// A source reached the trigger for the first time in its ban period: PortSentry 1.2's
    /// history line, when the history is in that format (the caller decides "first").
    pub fn first_trigger(&mut self, ev: &ProbeEvent) {
        if self.history_format == HistoryFormat::Portsentry1 {
            let line = classic_history_line(ev, clock::unix_ms());
            self.append_history(&format!("{line}\n"));
        }
    }

    pub fn history_format(&self) -> HistoryFormat {
        self.history_format
    }

    fn line_at(&mut self, text: &str, unix_ms: u64) {
        crate::journal::stdout_line(text);
        if self.history_format == HistoryFormat::Portsentry2 {
            self.append_history(&format!("{} {text}\n", clock::iso_local_ms(unix_ms)));
        }
    }

    fn append_history(&mut self, stamped: &str) {
        if self.history_path.is_none() {
            return;
        }
        if self.history.is_none() {
            // Retry: the disk may have been fixed or the directory created since.
            let _ = self.open_history();
        }
        let result = match self.history.as_mut() {
            Some(f) => f.write_all(stamped.as_bytes()),
            None => Err(std::io::Error::other("history file is not open")),
        };
        if let Err(e) = result {
            self.history = None;
            self.failed_writes += 1;
            self.report_history_error(&e);
        }
    }

    fn report_history_error(&mut self, e: &std::io::Error) {
        if self.history_error_report.try_report().is_some() {
            let path = self.history_path.as_deref().map(Path::display);
            crate::errln!(
                "portsentry: error: cannot write history file {}: {e} ({} line(s) not written since the last report; enforcement continues)",
                path.map(|p| p.to_string()).unwrap_or_default(),
                self.failed_writes
            );
            self.failed_writes = 0;
        }
    }
}
