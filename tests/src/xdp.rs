//! Running the real XDP object under BPF_PROG_TEST_RUN: exact verdicts and map contents without
//! a network.

use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun, TestRunOptions},
};
use portsentry::{
    bans::{BanBook, NewBan, Origin, Saved, StateStore},
    clock::Now,
    config::settings::LiveSettings,
    daemon::guard::{self, KernelExtras},
    dataplane::{Dataplane, LoadOptions, Stats},
    detect::events::{EventKind, ProbeEvent},
    net::{cidr::Cidr, listening::Listening, ports::PortSet, synack::SynAckShape},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// Test settings: the given guarded ports, nothing auto-allowed, no path check (test-run
/// packets arrive on the loopback device of the test's namespace, which routes nothing back;
/// the path check has its own tests inside a lab namespace).
pub fn settings(tcp: &str, udp: &str) -> LiveSettings {
    LiveSettings {
        tcp_ports: PortSet::parse(tcp).expect("test port list"),
        udp_ports: PortSet::parse(udp).expect("test port list"),
        auto_allow: false,
        path_check: false,
        ..LiveSettings::default()
    }
}

/// A ban book over `dp`'s maps with nothing saved, its state file in `store`, opened at `now`
/// as a daemon start opens it.
pub fn open_book(store: StateStore, dp: &Dataplane, now: &Now) -> BanBook {
    BanBook::open(store, Saved::default(), Some(dp), None, true, now)
        .expect("opening the ban book")
        .0
}

/// A loaded program instance with its own maps, programmed the way the daemon does it:
/// `daemon::guard` for ports, allowlist and config, a ban book for bans.
pub struct TestXdp {
    pub dp: Dataplane,
    pub book: BanBook,
    events: RingBuf<MapData>,
    /// What `configure` writes beyond the settings; the daemon sets `peer_challenge` when its
    /// peer-learning programs are attached.
    pub extras: KernelExtras,
    /// The interface every packet arrives on (`run`, `run_out`), in the namespace of the thread
    /// that runs them; `None`: the test run's default (that namespace's `lo`).
    pub ingress: Option<u32>,
}

impl TestXdp {
    pub fn load(settings: &LiveSettings) -> Self {
        Self::load_with(settings, &[], &[], None)
    }

    pub fn load_with(
        settings: &LiveSettings,
        allow: &[Cidr],
        ban_cidrs: &[Cidr],
        max_bans: Option<u32>,
    ) -> Self {
        let opts = LoadOptions {
            max_bans,
            ..LoadOptions::default()
        };
        Self::load_opts(settings, allow, ban_cidrs, &opts)
    }

    /// Loaded with the XDP program's diagnostics at aya-log `level` (0 off … 5 trace).
    pub fn load_with_log_level(settings: &LiveSettings, level: u8) -> Self {
        let opts = LoadOptions {
            log_level: level,
            ..LoadOptions::default()
        };
        Self::load_opts(settings, &[], &[], &opts)
    }

    /// The program a kernel without the SYN cookie helpers (before 6.0) gets.
    pub fn load_compat(settings: &LiveSettings) -> Self {
        let opts = LoadOptions {
            compat: true,
            ..LoadOptions::default()
        };
        Self::load_opts(settings, &[], &[], &opts)
    }

    fn load_opts(
        settings: &LiveSettings,
        allow: &[Cidr],
        ban_cidrs: &[Cidr],
        opts: &LoadOptions,
    ) -> Self {
        let mut dp = Dataplane::load(opts)
            .expect("loading the XDP object (run the tests with `cargo xtask test`)");
        let events = dp.take_events().expect("ring buffer");
        // Never saved: the book only needs a store to exist.
        let store = StateStore::new(&std::env::temp_dir().join("portsentry-xdp-tests-unsaved"));
        let (book, _) = BanBook::open(
            store,
            Saved::default(),
            Some(&dp),
            None,
            false,
            &Now::read(),
        )
        .expect("ban book");
        let mut t = Self {
            dp,
            book,
            events,
            // As the daemon: the trap SYN-ACK's shape from this namespace's TCP sysctls.
            extras: KernelExtras {
                synack: SynAckShape::read(),
                ..KernelExtras::default()
            },
            ingress: None,
        };
        t.configure(settings, allow, ban_cidrs);
        t
    }

    /// A program configured as a daemon whose peer-learning programs are attached (trap
    /// probes from learned peers are challenged); peers are then added with `add_peer`.
    pub fn with_peer_challenge(settings: &LiveSettings) -> Self {
        let mut t = Self::load(settings);
        assert!(
            t.dp.syn_cookies(),
            "this kernel lacks the XDP SYN cookie helpers (Linux 6.0+)"
        );
        t.extras.peer_challenge = true;
        t.configure(settings, &[], &[]);
        t
    }

    /// Records `addr` as a learned peer last seen `ago` before now, as the cgroup programs do
    /// (or a restore, for an `ago` beyond this boot: see [`crate::clock`]).
    pub fn add_peer(&mut self, addr: &str, ago: std::time::Duration) {
        let entry = portsentry_common::PeerEntry {
            last_seen_ns: crate::clock::instant_ago(ago),
            ways: portsentry_common::peer_ways::OUTBOUND,
            _pad: 0,
        };
        self.dp
            .insert_peer(addr.parse().expect("address"), &entry)
            .expect("peer insert");
    }

    /// Runs one packet and returns the verdict and the packet as the program left it (what
    /// XDP_TX sends).
    pub fn run_out(&self, packet: &[u8]) -> (u32, Vec<u8>) {
        let prog = self.dp.program().expect("program");
        let mut out = vec![0u8; 4096];
        let ctx = self.ingress.map(|i| xdp_md(packet, i));
        let opts = TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ctx_in: ctx.as_deref(),
            repeat: 1,
            ..Default::default()
        };
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// Programs ports, allowlist and config as the daemon does (no listening sockets), and
    /// bans `ban_cidrs` through the ban book as manual bans.
    pub fn configure(&mut self, settings: &LiveSettings, allow: &[Cidr], ban_cidrs: &[Cidr]) {
        guard::write(
            &mut self.dp,
            settings,
            allow,
            &Listening::default(),
            &Listening::default(),
            &self.extras,
        )
        .expect("guard");
        let now = Now::read();
        for target in ban_cidrs {
            let new = NewBan {
                target: *target,
                origin: Origin::Manual,
                shadow: false,
                expires_ms: None,
                trigger: None,
                fleet: None,
                unverified: false,
            };
            self.book
                .ban(Some(&mut self.dp), new, &now)
                .expect("ban through the book");
        }
    }

    /// Turns the kernel's global event limit off (`Config::event_interval_ns` = 0), so every
    /// event goes out: for measuring the cost of a real event per probe, or filling the ring.
    pub fn without_event_limit(&mut self) {
        let mut config = self.dp.config().expect("config");
        config.event_interval_ns = 0;
        let allow_count = config.allow_cidr_count;
        self.dp
            .configure(&config, allow_count)
            .expect("config write");
    }

    /// The kernel's global event limit at the daemon's setting again.
    pub fn with_event_limit(&mut self) {
        let mut config = self.dp.config().expect("config");
        config.event_interval_ns = portsentry_common::EVENT_INTERVAL_NS;
        let allow_count = config.allow_cidr_count;
        self.dp
            .configure(&config, allow_count)
            .expect("config write");
    }

    /// Runs one packet and returns the XDP verdict.
    pub fn run(&self, packet: &[u8]) -> u32 {
        self.try_run(packet).expect("BPF_PROG_TEST_RUN")
    }

    pub fn try_run(&self, packet: &[u8]) -> Result<u32, aya::programs::ProgramError> {
        let prog = self.dp.program().expect("program");
        let ctx = self.ingress.map(|i| xdp_md(packet, i));
        let opts = TestRunOptions {
            data_in: Some(packet),
            ctx_in: ctx.as_deref(),
            repeat: 1,
            ..Default::default()
        };
        prog.test_run(opts).map(|r| r.return_value)
    }

    /// Runs one packet as if it arrived on interface `ingress_ifindex` of the calling thread's
    /// network namespace (the kernel resolves the index there), so helpers that look at the
    /// receiving device, such as the path check's route lookup, see a real interface.
    pub fn run_on(&self, packet: &[u8], ingress_ifindex: u32) -> u32 {
        let prog = self.dp.program().expect("program");
        let ctx = xdp_md(packet, ingress_ifindex);
        let opts = TestRunOptions {
            data_in: Some(packet),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        };
        prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
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

    /// The events of `kind` emitted since the last call to this or [`TestXdp::events`] (the
    /// others are consumed too).
    pub fn events_of(&mut self, kind: EventKind) -> Vec<ProbeEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
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

/// The `struct xdp_md` a test run starts from for `packet` arriving on `ingress_ifindex`: data,
/// data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex (u32 each); data_end
/// must be the packet length.
fn xdp_md(packet: &[u8], ingress_ifindex: u32) -> Vec<u8> {
    let fields = [0, packet.len() as u32, 0, ingress_ifindex, 0, 0];
    fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
}
