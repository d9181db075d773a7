//! Data-plane tests: the real XDP object under BPF_PROG_TEST_RUN, one module per concern
//! (one test binary, `dataplane`; test names carry their module, e.g.
//! `verifier::the_program_verifies_within_a_small_budget`).

use portsentry_common::{
    ethertype::{QINQ, VLAN},
    tcp_flags::{ACK, FIN, PSH, RST, SYN, URG},
    BanOrigin, IpProto, ScanType, Stat,
};
use portsentry_tests::{
    packets::Packet,
    xdp::{settings, TestXdp, XDP_DROP, XDP_PASS},
};

mod concurrency;
mod detection;
mod event_limits;
mod parsing;
mod peers;
mod policy;
mod prefixes;
mod thresholds;
mod verifier;
