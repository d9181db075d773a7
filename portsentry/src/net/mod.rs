//! Facts about addresses and this host's network: CIDR and port-set value types, the host's
//! own addresses, gateways and resolvers, route change notifications and listening sockets.
//! Read-only, but for `lo_forwarding` (the one sysctl the path check needs): nothing here
//! writes a map, a ban or a file.

pub mod cidr;
pub mod listening;
pub mod lo_forwarding;
pub mod netinfo;
pub mod netwatch;
pub mod ports;
