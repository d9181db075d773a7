//! Facts about addresses and this host's network: CIDR and port-set value types, the host's
//! own addresses, gateways and resolvers, route change notifications, listening sockets and the
//! service ports remembered from them, the bogus ranges no real peer can be in, how this
//! host's SYN-ACKs look (`synack`) and whether XDP_TX frames leave an interface (`xdp_tx`).
//! rtnetlink is spoken in `rtnl` (dumps, and [`rtnl::subscribe`] for every live watch).
//! Never writes a map, a ban or a file (`service_ports` is serialized here, the daemon writes
//! it); its one write is `lo_forwarding` (the sysctls the path check needs, while the daemon
//! runs, restored on exit).

pub mod bogus;
pub mod cidr;
pub mod listening;
pub mod lo_forwarding;
pub mod neighbours;
pub mod netinfo;
pub mod netwatch;
pub mod ports;
pub mod rtnl;
pub mod service_ports;
pub mod synack;
pub mod topology;
pub mod xdp_tx;
