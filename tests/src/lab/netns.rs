//! A named network namespace (`/run/netns/NAME`): running code on a thread inside it, commands
//! through `ip netns exec`, TCP connects from a chosen source address and throwaway TCP services.

use std::{
    fs::File,
    net::{IpAddr, SocketAddr, TcpListener},
    os::fd::AsFd,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use nix::sched::{setns, CloneFlags};

/// A named network namespace.
#[derive(Clone, Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it makes live there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("netns thread panicked")
    }

    /// Runs `f` on a background thread that has entered this namespace (a server the test
    /// stops through state of its own); join the handle for its result.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = self.path();
        thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Writes `/proc/sys/<key>` (dots for slashes) inside this namespace: the thread that
    /// entered it sees its `net` sysctls (no procps needed).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        use anyhow::Context;
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_owned();
        self.run(move || std::fs::write(&path, value))
            .with_context(|| format!("writing {key} in {}", self.name))
    }

    /// The index of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> anyhow::Result<u32> {
        use anyhow::Context;
        let name = dev.to_owned();
        self.run(move || nix::net::if_::if_nametoindex(name.as_str()))
            .with_context(|| format!("the index of {dev} in {}", self.name))
    }

    /// `ip netns exec NAME PROGRAM` as a command to configure further.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Sends each of `frames` (whole Ethernet frames) out of `dev` through an AF_PACKET
    /// socket, as an attacker on the link would.
    pub fn send_frames(&self, dev: &str, frames: Vec<Vec<u8>>) {
        let dev = dev.to_owned();
        self.run(move || {
            let index = nix::net::if_::if_nametoindex(dev.as_str()).expect("ifindex");
            // SAFETY: plain socket(2); the fd is closed below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: sockaddr_ll is plain data; all-zero is valid before the fields are set.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            for frame in frames {
                addr.sll_addr[..6].copy_from_slice(&frame[..6]);
                // SAFETY: frame and addr are valid for the lengths passed.
                let sent = unsafe {
                    libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const addr).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(
                    sent,
                    frame.len() as isize,
                    "sending a frame on {dev}: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
        });
    }

    /// Attempts a TCP connect from `src` (an address of this namespace) to `dst`.
    pub fn tcp_connect(&self, src: IpAddr, dst: SocketAddr, timeout: Duration) -> bool {
        self.run(move || {
            use socket2::{Domain, Socket, Type};
            let domain = if dst.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            };
            let Ok(sock) = Socket::new(domain, Type::STREAM, None) else {
                return false;
            };
            if sock.bind(&SocketAddr::new(src, 0).into()).is_err() {
                return false;
            }
            sock.connect_timeout(&dst.into(), timeout).is_ok()
        })
    }

    /// Sends one UDP datagram from `src` (an address of this namespace) to `dst` with
    /// `sendto` on an unconnected socket.
    pub fn udp_send(&self, src: IpAddr, dst: SocketAddr) -> bool {
        self.run(move || {
            let Ok(sock) = std::net::UdpSocket::bind(SocketAddr::new(src, 0)) else {
                return false;
            };
            sock.send_to(b"portsentry test", dst).is_ok()
        })
    }

    /// A TCP service that accepts and closes connections until the returned guard drops.
    pub fn tcp_service(&self, addr: SocketAddr) -> Service {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let path = self.path();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            enter(&path);
            let listener = TcpListener::bind(addr).expect("bind test service");
            listener.set_nonblocking(true).expect("nonblocking");
            tx.send(()).ok();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("service started");
        Service { stop, accepted }
    }
}

/// A namespace beyond a lab's two (a LAN host, a peer, a forger), with its loopback up;
/// deleted on drop, with every link end inside it.
pub struct OwnedNetns(pub Netns);

impl OwnedNetns {
    /// `ip netns add NAME`, `lo` up.
    pub fn add(name: &str) -> anyhow::Result<Self> {
        super::ip(&["netns", "add", name])?;
        let ns = Self(Netns {
            name: name.to_owned(),
        });
        super::ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl std::ops::Deref for OwnedNetns {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.0
    }
}

impl Drop for OwnedNetns {
    fn drop(&mut self) {
        let _ = super::ip(&["netns", "del", &self.0.name]);
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    let ns = File::open(path).expect("netns file");
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
}

/// A running test service; stops on drop.
pub struct Service {
    stop: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
