//! Benchmark helper, not shipped: redirects every packet to the device in slot 0 of
//! `BENCH_FORWARD`. The flood benchmark attaches it to a veth on the generator's side so the
//! packets reach the protected veth through `ndo_xdp_xmit`, as raw frames without an skb, the
//! way a NIC's DMA buffers reach XDP. `drop_all` is the floor the flood benchmark measures
//! filters against: the cheapest possible XDP drop.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{
    bindings::xdp_action, btf_maps::DevMap, macros::btf_map, macros::xdp, programs::XdpContext,
};

#[btf_map]
static BENCH_FORWARD: DevMap<1> = DevMap::new();

#[xdp]
pub fn forward(_ctx: XdpContext) -> u32 {
    BENCH_FORWARD
        .redirect(0, u64::from(xdp_action::XDP_ABORTED))
        .unwrap_or(xdp_action::XDP_ABORTED)
}

#[xdp]
pub fn drop_all(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}
