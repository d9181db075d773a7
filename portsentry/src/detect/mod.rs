//! What the XDP program reports and how it is told: ring-buffer events decoded into
//! [`events::ProbeEvent`]; `lines`, the one module that words every PortSentry-format and
//! `attackalert:` line (2.x wording, 1.2 history, JSON twins) from the facts callers hand it;
//! `logging`, the sink writing them to stdout and the history file; `budget`, the flood bound on
//! event lines.
//! Owns the history file; never touches maps or bans.

pub mod budget;
pub mod diagnostics;
pub mod events;
pub mod lines;
pub mod logging;
