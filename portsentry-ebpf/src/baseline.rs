//! The benchmark baseline: an XDP program that passes every packet and does nothing else.
//! `cargo xtask bench` divides portsentry's per-packet cost by this program's, both loaded and
//! run with BPF_PROG_TEST_RUN in the same run, so the ratio cancels the harness overhead.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
