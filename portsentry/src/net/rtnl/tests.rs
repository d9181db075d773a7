use super::{parse::*, *};

/// A netlink message of `kind` with `header` and the attributes `attrs`.
fn message(kind: u16, header: &[u8], attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = header.to_vec();
    for (k, v) in attrs {
        let len = 4 + v.len();
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&k.to_ne_bytes());
        body.extend_from_slice(v);
        body.resize(align4(body.len()), 0);
    }
    let mut m = vec![0u8; NLMSG_HDRLEN];
    m[0..4].copy_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

#[test]
fn a_vlan_link_and_a_neighbour_parse() {
    let mut ifinfo = [0u8; 16];
    ifinfo[4..8].copy_from_slice(&7u32.to_ne_bytes());
    let mut data = Vec::new();
    let v = 100u16.to_ne_bytes();
    data.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
    data.extend_from_slice(&IFLA_VLAN_ID.to_ne_bytes());
    data.extend_from_slice(&v);
    let mut info = Vec::new();
    for (k, v) in [(IFLA_INFO_KIND, b"vlan\0".to_vec()), (IFLA_INFO_DATA, data)] {
        info.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        info.extend_from_slice(&k.to_ne_bytes());
        info.extend_from_slice(&v);
        info.resize(align4(info.len()), 0);
    }
    let m = message(
        RTM_NEWLINK,
        &ifinfo,
        &[
            (IFLA_IFNAME, b"eth0.100\0".to_vec()),
            (IFLA_LINK, 2u32.to_ne_bytes().to_vec()),
            (IFLA_LINKINFO, info),
        ],
    );
    let msgs = messages(&m);
    assert_eq!(msgs.len(), 1);
    let link = parse_link(msgs[0].1).expect("a link");
    assert_eq!(
        link,
        Link {
            index: 7,
            name: "eth0.100".into(),
            master: 0,
            link: 2,
            kind: "vlan".into(),
            vlan: Some((100, false)),
        }
    );

    let mut ndmsg = [0u8; 12];
    ndmsg[0] = libc::AF_INET as u8;
    ndmsg[4..8].copy_from_slice(&3u32.to_ne_bytes());
    ndmsg[8..10].copy_from_slice(&4u16.to_ne_bytes());
    let m = message(
        RTM_NEWNEIGH,
        &ndmsg,
        &[
            (NDA_DST, vec![10, 0, 0, 3]),
            (NDA_LLADDR, vec![2, 0, 0, 0, 0, 9]),
        ],
    );
    let n = parse_neighbour(messages(&m)[0].1).expect("a neighbour");
    assert_eq!(n.addr, "10.0.0.3".parse::<IpAddr>().unwrap());
    assert_eq!(
        (n.ifindex, n.mac, n.state),
        (3, Some([2, 0, 0, 0, 0, 9]), 4)
    );
}

#[test]
fn truncated_messages_end_the_walk_without_panicking() {
    assert!(messages(&[1, 2, 3]).is_empty());
    assert!(messages(&[200, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_empty());
    assert!(parse_link(&[0; 3]).is_none());
    assert!(parse_neighbour(&[2, 0, 0, 0]).is_none());
    assert!(attrs(&[255, 255, 1, 0]).is_empty());
}
