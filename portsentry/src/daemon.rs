//! `portsentry run`: load, configure, attach, log events, detach on SIGINT/SIGTERM.

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context, Result};
use portsentry_common::proto;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    bpffs,
    cidr::Cidr,
    cli::{ModeArg, RunArgs, XdpModeArg},
    dataplane::{AttachMode, Dataplane, LoadOptions},
    events::{self, EventKind, ProbeEvent},
    logging, netinfo,
    ports::PortSet,
    settings::{Mode, Settings},
};

/// Applies command-line overrides to the embedded defaults.
pub fn settings_from_args(args: &RunArgs) -> Result<Settings> {
    let mut s = Settings::default();
    if !args.interfaces.is_empty() {
        s.interfaces = args.interfaces.clone();
    }
    if let Some(list) = &args.tcp_ports {
        s.tcp_ports = PortSet::parse(list).with_context(|| format!("--tcp-ports {list:?}"))?;
    }
    if let Some(list) = &args.udp_ports {
        s.udp_ports = PortSet::parse(list).with_context(|| format!("--udp-ports {list:?}"))?;
    }
    if let Some(n) = args.scan_trigger {
        s.scan_trigger = n;
    }
    if let Some(w) = args.window {
        s.window = w.0;
    }
    if let Some(t) = args.ban_ttl {
        s.ban_ttl = t.0;
    }
    if let Some(m) = args.mode {
        s.mode = match m {
            ModeArg::Block => Mode::Block,
            ModeArg::Detect => Mode::Detect,
        };
    }
    s.allow.extend(args.allow.iter().copied());
    s.auto_allow = !args.no_auto_allow;
    if let Some(x) = args.xdp_mode {
        s.xdp_mode = match x {
            XdpModeArg::Auto => AttachMode::Auto,
            XdpModeArg::Native => AttachMode::Native,
            XdpModeArg::Generic => AttachMode::Generic,
        };
    }
    if args.no_pin {
        s.pin_dir = None;
    } else if let Some(dir) = &args.pin_dir {
        s.pin_dir = Some(dir.clone());
    }
    if args.max_bans.is_some() {
        s.max_bans = args.max_bans;
    }
    s.validate()?;
    Ok(s)
}

/// This host's own addresses, default gateways and resolvers, as host entries.
fn auto_allow_list() -> Result<Vec<Cidr>> {
    let mut addrs: Vec<IpAddr> = netinfo::own_addresses()?;
    addrs.extend(
        netinfo::default_routes()
            .into_iter()
            .filter_map(|r| r.gateway),
    );
    addrs.extend(netinfo::resolvers("/etc/resolv.conf"));
    let mut out: Vec<Cidr> = addrs.into_iter().map(Cidr::host).collect();
    out.sort_by_key(|c| (c.addr, c.prefix));
    out.dedup();
    Ok(out)
}

pub async fn run(settings: Settings) -> Result<()> {
    let interfaces = if settings.interfaces.is_empty() {
        vec![netinfo::default_route_iface()?]
    } else {
        settings.interfaces.clone()
    };

    if let Some(dir) = &settings.pin_dir {
        bpffs::ensure_pin_dir(dir)?;
    }
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: settings.pin_dir.clone(),
        max_bans: settings.max_bans,
    })?;

    let mut allow = settings.allow.clone();
    if settings.auto_allow {
        let auto = auto_allow_list()?;
        eprintln!(
            "portsentry: auto-allowlisted {} own/gateway/resolver address(es): {}",
            auto.len(),
            auto.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        allow.extend(auto);
    }
    let allow_count = dp.set_allowlist(&allow)?;
    dp.set_guarded_ports(proto::TCP, &settings.tcp_ports)?;
    dp.set_guarded_ports(proto::UDP, &settings.udp_ports)?;
    // The config goes in last: until then the program fails open.
    dp.set_config(&settings.kernel_config(allow_count, 0))?;

    let mut names_by_index = HashMap::new();
    for iface in &interfaces {
        let mode = dp.attach(iface, settings.xdp_mode)?;
        if settings.xdp_mode == AttachMode::Auto && mode == AttachMode::Generic {
            eprintln!("portsentry: warning: {iface} has no native XDP support; using generic XDP (slower)");
        }
        let index = nix::net::if_::if_nametoindex(iface.as_str()).unwrap_or(0);
        names_by_index.insert(index, iface.clone());
        eprintln!(
            "portsentry: attached to {iface} ({} XDP)",
            if mode == AttachMode::Native {
                "native"
            } else {
                "generic"
            }
        );
    }
    eprintln!(
        "portsentry: guarding TCP [{}] UDP [{}]; mode {}; trigger {}",
        settings.tcp_ports,
        settings.udp_ports,
        if settings.mode == Mode::Block {
            "block"
        } else {
            "detect"
        },
        settings.effective_trigger()
    );

    let ring = dp.take_events()?;
    let (tx, mut rx) = mpsc::channel::<ProbeEvent>(4096);
    let reader = tokio::spawn(events::read_events(ring, tx));
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    println!("Portsentry is now active and listening.");
    let trigger = settings.effective_trigger();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => log_event(&ev, trigger, &names_by_index),
                None => {
                    reader.abort();
                    anyhow::bail!("the event reader stopped unexpectedly");
                }
            },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    reader.abort();
    drop(dp); // detaches from every interface
    eprintln!(
        "portsentry: stopped; XDP detached from {}",
        interfaces.join(", ")
    );
    Ok(())
}

fn log_event(ev: &ProbeEvent, trigger: u64, names: &HashMap<u32, String>) {
    println!("{}", logging::scan_line(ev, trigger, None));
    match ev.kind {
        EventKind::Ban if logging::is_blocked(ev) => {
            let iface = names.get(&ev.ifindex).map(String::as_str).unwrap_or("?");
            println!("{}", logging::ban_line(ev, iface));
        }
        EventKind::BanTableFull => println!("{}", logging::ban_table_full_line(ev)),
        _ => {}
    }
}
