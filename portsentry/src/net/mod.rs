//! Facts about addresses and this host's network: CIDR and port-set value types, the host's
//! own addresses, gateways and resolvers, route change notifications, listening sockets and the
//! service ports remembered from them, and the bogus ranges no real peer can be in.
//! Read-only: nothing here writes a map, a ban or a file.

pub mod bogus;
pub mod cidr;
pub mod listening;
pub mod netinfo;
pub mod netwatch;
pub mod ports;
pub mod service_ports;
