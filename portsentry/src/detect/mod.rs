//! What the XDP program reports and how it is told: ring-buffer events decoded into
//! [`events::ProbeEvent`], and the log lines (PortSentry 2.x wording, JSON) and history file
//! they become, and how every daemon line reaches the journal with its priority (`journal`).
//! Owns the history file; never touches maps or bans.

pub mod budget;
pub mod diagnostics;
pub mod events;
pub mod journal;
pub mod logging;
