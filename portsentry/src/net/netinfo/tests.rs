//! Route and resolver parsing from sample text, the automatic allowlist from temporary
//! resolver files (plus whatever addresses the test host has), and LAPI URL hosts.

use std::path::PathBuf;

use super::*;

/// A file under the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("portsentry-netinfo-{}-{name}", std::process::id()));
        fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn allow_list_includes_resolved_upstreams_and_extra_hosts() {
    let stub = TempFile::new(
        "stub.conf",
        "# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
    );
    let upstream = TempFile::new(
        "upstream.conf",
        "# This is /run/systemd/resolve/resolv.conf\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver 192.0.2.53\n",
    );
    let missing = std::env::temp_dir().join(format!(
        "portsentry-netinfo-{}-missing.conf",
        std::process::id()
    ));
    let extra = [
        ip("198.51.100.7"),
        ip("::ffff:192.0.2.53"),
        ip("198.51.100.7"),
    ];
    let list = auto_allow_list_from(&[&stub.0, &upstream.0, &missing], &extra).unwrap();

    for want in ["127.0.0.53", "192.0.2.53", "2001:db8::53", "198.51.100.7"] {
        assert!(
            list.contains(&Cidr::host(ip(want))),
            "{want} missing from {list:?}"
        );
    }
    // This host's own addresses are in too (the test runs with at least loopback, when up).
    for own in own_addresses().unwrap() {
        assert!(
            list.contains(&Cidr::host(own)),
            "{own} missing from {list:?}"
        );
    }
    // Every entry a host entry, sorted, no duplicates (the mapped address folded into IPv4).
    assert!(list.iter().all(|c| *c == Cidr::host(c.addr)));
    assert!(list
        .windows(2)
        .all(|w| (w[0].addr, w[0].prefix) < (w[1].addr, w[1].prefix)));
    assert_eq!(
        list.iter().filter(|c| c.addr == ip("192.0.2.53")).count(),
        1
    );
}

#[test]
fn allow_list_without_resolver_files() {
    let missing = std::env::temp_dir().join(format!(
        "portsentry-netinfo-{}-none.conf",
        std::process::id()
    ));
    let list = auto_allow_list_from(&[&missing], &[]).unwrap();
    let mut own: Vec<Cidr> = own_addresses()
        .unwrap()
        .into_iter()
        .map(Cidr::host)
        .collect();
    own.extend(
        default_routes()
            .into_iter()
            .filter_map(|r| r.gateway)
            .map(Cidr::host),
    );
    own.sort_by_key(|c| (c.addr, c.prefix));
    own.dedup();
    assert_eq!(list, own);
}

#[test]
fn resolved_upstream_file_parsing() {
    let upstream = TempFile::new(
        "resolved.conf",
        "# Third party programs should typically not access this file directly\n\
         nameserver 192.0.2.53\nnameserver 2001:db8::1%eth0\n",
    );
    assert_eq!(
        resolvers(&upstream.0),
        vec![ip("192.0.2.53"), ip("2001:db8::1")]
    );
    let stub = TempFile::new("stub-resolv.conf", "nameserver 127.0.0.53\n");
    assert_eq!(resolvers(&stub.0), vec![ip("127.0.0.53")]);
}

#[test]
fn lapi_hosts_of_literals() {
    assert_eq!(lapi_hosts("http://127.0.0.1:8080"), vec![ip("127.0.0.1")]);
    assert_eq!(lapi_hosts("https://192.0.2.10"), vec![ip("192.0.2.10")]);
    assert_eq!(
        lapi_hosts("http://[2001:db8::10]:8080/v1"),
        vec![ip("2001:db8::10")]
    );
    assert_eq!(
        lapi_hosts("HTTPS://[2001:db8::10]/"),
        vec![ip("2001:db8::10")]
    );
    assert_eq!(
        lapi_hosts("http://[fe80::1%25eth0]:8080"),
        vec![ip("fe80::1")]
    );
    assert_eq!(
        lapi_hosts("http://user:pw@192.0.2.11:80/x?y#z"),
        vec![ip("192.0.2.11")]
    );
    assert_eq!(lapi_hosts("http://192.0.2.12?q"), vec![ip("192.0.2.12")]);
}

#[test]
fn lapi_hosts_best_effort() {
    for bad in [
        "",
        "192.0.2.1:8080",
        "ftp://192.0.2.1",
        "http://",
        "http://:8080",
        "http://[2001:db8::1",
        "http://[2001:db8::1]x:80",
        "http://192.0.2.1:notaport",
        "http://192.0.2.1:99999",
    ] {
        assert_eq!(lapi_hosts(bad), Vec::<IpAddr>::new(), "{bad}");
    }
    // A name goes to the system resolver; localhost is answered locally (/etc/hosts).
    assert!(lapi_hosts("http://localhost:8080")
        .iter()
        .all(|a| a.is_loopback()));
    assert_eq!(
        url_host_port("https://lapi.example"),
        Some(("lapi.example", 443))
    );
    assert_eq!(
        url_host_port("http://lapi.example:8080/"),
        Some(("lapi.example", 8080))
    );
    assert_eq!(url_host_port("http://[::1]:"), Some(("::1", 80)));
}

#[test]
fn reads_default_routes() {
    let v4 =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
              eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
              eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    assert_eq!(
        parse_route_v4(v4),
        vec![DefaultRoute {
            iface: "eth0".into(),
            gateway: Some("192.0.2.1".parse().unwrap())
        }]
    );
    let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n";
    assert_eq!(
        parse_route_v6(v6),
        vec![DefaultRoute {
            iface: "eth1".into(),
            gateway: Some("fe80::1".parse().unwrap())
        }]
    );
}

#[test]
fn reads_resolvers() {
    let r = parse_resolv_conf(
        "# c\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch x\nnameserver bogus\n",
    );
    assert_eq!(
        r,
        vec![
            "192.0.2.53".parse::<IpAddr>().unwrap(),
            "fe80::1".parse().unwrap()
        ]
    );
}
