//! Running the real XDP object under BPF_PROG_TEST_RUN: exact verdicts and map contents without
//! a network.

use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun, TestRunOptions},
};
use portsentry::{
    config::settings::Settings,
    dataplane::{Dataplane, LoadOptions, Stats},
    detect::events::ProbeEvent,
    net::cidr::Cidr,
    net::ports::PortSet,
};
use portsentry_common::IpProto;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Test settings: the given guarded ports, no pinning, nothing auto-allowed.
pub fn settings(tcp: &str, udp: &str) -> Settings {
    Settings {
        tcp_ports: PortSet::parse(tcp).expect("test port list"),
        udp_ports: PortSet::parse(udp).expect("test port list"),
        pin_dir: None,
        auto_allow: false,
        ..Settings::default()
    }
}

/// A loaded, configured program instance with its own maps.
pub struct TestXdp {
    pub dp: Dataplane,
    events: RingBuf<MapData>,
}

impl TestXdp {
    pub fn load(settings: &Settings) -> Self {
        Self::load_with(settings, &[], &[], None)
    }

    pub fn load_with(
        settings: &Settings,
        allow: &[Cidr],
        ban_cidrs: &[Cidr],
        max_bans: Option<u32>,
    ) -> Self {
        let mut dp = Dataplane::load(&LoadOptions {
            pin_dir: None,
            max_bans,
            max_ban_networks: None,
        })
        .expect("loading the XDP object (run the tests with `cargo xtask test`)");
        let events = dp.take_events().expect("ring buffer");
        let mut t = Self { dp, events };
        t.configure(settings, allow, ban_cidrs);
        t
    }

    pub fn configure(&mut self, settings: &Settings, allow: &[Cidr], ban_cidrs: &[Cidr]) {
        let allow_n = self.dp.set_allowlist(allow).expect("allowlist").count;
        let ban_n = self.dp.set_ban_cidrs(ban_cidrs).expect("ban cidrs").count;
        self.dp
            .set_guarded_ports(IpProto::Tcp, &settings.tcp_ports)
            .expect("tcp ports");
        self.dp
            .set_guarded_ports(IpProto::Udp, &settings.udp_ports)
            .expect("udp ports");
        self.dp
            .set_config(&settings.kernel_config(allow_n, ban_n))
            .expect("config");
    }

    /// Runs one packet and returns the XDP verdict.
    pub fn run(&self, packet: &[u8]) -> u32 {
        self.try_run(packet).expect("BPF_PROG_TEST_RUN")
    }

    pub fn try_run(&self, packet: &[u8]) -> Result<u32, aya::programs::ProgramError> {
        let prog = self.dp.program().expect("program");
        let opts = TestRunOptions {
            data_in: Some(packet),
            repeat: 1,
            ..Default::default()
        };
        prog.test_run(opts).map(|r| r.return_value)
    }

    /// Runs one packet `repeat` times in a single BPF_PROG_TEST_RUN call; returns the last verdict.
    pub fn run_repeat(&self, packet: &[u8], repeat: u32) -> u32 {
        let prog = self.dp.program().expect("program");
        let opts = TestRunOptions {
            data_in: Some(packet),
            repeat,
            ..Default::default()
        };
        prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    }

    /// Events emitted since the last call.
    pub fn events(&mut self) -> Vec<ProbeEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if let Some(ev) = ProbeEvent::decode(&item) {
                out.push(ev);
            }
        }
        out
    }

    pub fn stats(&self) -> Stats {
        self.dp.stats().expect("stats")
    }

    pub fn is_banned(&self, addr: &str) -> bool {
        self.dp
            .ban(addr.parse().expect("address"))
            .expect("ban lookup")
            .is_some()
    }
}
