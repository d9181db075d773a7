//! Sharing an interface with other XDP programs: libxdp's multi-program dispatcher protocol
//! (xdp-tools' lib/libxdp/protocol.org, version 2), implemented here with aya's `Extension`
//! (freplace) programs and the dispatcher object libxdp ships (`xdp-dispatcher.o`, Debian's
//! libxdp1), so `xdp-loader status` and every other libxdp user see portsentry as one of the
//! interface's programs and keep it when they add or remove theirs.
//!
//! Owns: recognising what occupies an interface's XDP slot ([`occupant`]), the refusal to
//! replace a program that is not ours ([`Refusal`]), whether this kernel can run a dispatcher
//! at all ([`kernel_runs_dispatcher`]), joining ([`join`]) and leaving ([`leave`]).
//!
//! The protocol in short: a dispatcher is an XDP program named `xdp_dispatcher` whose frozen
//! `.rodata` holds a config (magic 236, version 2, the number of programs, and per slot the
//! chain-call actions, run priority and flags); its stub functions `prog0`..`prog9` are replaced
//! by the component programs (freplace). Changing the set means building a new dispatcher with
//! every component re-linked into it in run-priority order, pinning the links and programs
//! under `/sys/fs/bpf/xdp/dispatch-IFINDEX-ID/progN-{link,prog}` (the pins keep them attached
//! after the process exits), swapping it in atomically with `XDP_FLAGS_REPLACE`, then unpinning
//! the old one, all under an exclusive flock on `/sys/fs/bpf/xdp`. We never copy libxdp code;
//! we read its protocol and interoperate with its files.
//!
//! The parts, each in its own file:
//! - `protocol`: the protocol's constants and config layout, finding libxdp's dispatcher
//!   object and loading a dispatcher (and the template our program is verified against);
//! - `error`: [`DispatcherError`] and the short errno wording of its causes;
//! - `occupant`: what occupies an interface's XDP slot, and the [`Refusal`] for one we may not
//!   replace;
//! - `probe`: whether this kernel runs freplace programs at all ([`kernel_runs_dispatcher`]);
//! - `membership`: joining and leaving ([`join`], [`leave`]);
//! - `existing`: reading the dispatcher attached now (its config and pinned components);
//! - `swap`: building the new dispatcher, linking and pinning its components, swapping it in;
//! - `pins`: libxdp's bpffs directory, unpinning and its lock;
//! - [`netlink`]: the rtnetlink requests that read and set an interface's XDP program;
//! - this file: the decision whether to load as a dispatcher component at all ([`wanted`]).

use super::AttachMode;

mod error;
mod existing;
mod membership;
pub mod netlink;
mod occupant;
mod pins;
mod probe;
mod protocol;
mod swap;

pub(crate) use error::errno_name;
pub use error::DispatcherError;
pub use membership::{join, leave, Joined};
pub use occupant::{occupant, refusal, Occupant, Refusal};
pub use probe::kernel_runs_dispatcher;
pub use protocol::{load_template, RUN_PRIORITY};

/// Whether portsentry should load its program as a dispatcher component: `xdp_mode =
/// "multi"`, or libxdp's dispatcher already runs on one of the interfaces.
pub fn wanted(mode: AttachMode, interfaces: &[String]) -> bool {
    mode == AttachMode::Multi
        || interfaces.iter().any(|iface| {
            nix::net::if_::if_nametoindex(iface.as_str())
                .ok()
                .and_then(|i| occupant(iface, i).ok())
                .is_some_and(|o| matches!(o, Occupant::Dispatcher { .. }))
        })
}
