//! The control plane: what rnat learns from, and changes on, the host.
//!
//! - [`netlink`]: discovery over rtnetlink (interfaces, IPv4 addresses, the main routing table, the
//!   ARP table) and a [`netlink::Watcher`] task that publishes an immutable [`netlink::Snapshot`] on
//!   every change, readable by packet workers without a lock per packet
//!   ([`netlink::SnapshotReader`]).
//! - [`host`]: the host changes rnat needs (an nftables `netdev` table that keeps the kernel away
//!   from translated traffic, `net.ipv4.ip_local_reserved_ports`, opt-in offload changes), recorded
//!   in a state file under `/run/rnat/` before they are made, undone on exit by a
//!   [`host::Guard`], and undone on the next start after a `kill -9`; plus per-interface locks and
//!   the privilege check.
//!
//! Typical start-up of the gateway (see the crate's `main.rs`):
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use rnat::control::{host::HostSetup, netlink::Watcher};
//! rnat::control::host::check_privileges()?;
//! let watcher = Watcher::start().await?;
//! let snap = watcher.snapshot();
//! let (outside, public) = snap.ipv4_interface("eth0")?;
//! let (inside, gw) = snap.ipv4_interface("eth1")?;
//! let mut setup = HostSetup::new("eth1", "eth0");
//! setup.public_addrs = vec![public.addr];
//! setup.inside_prefixes = vec![gw.prefix()];
//! setup.gateway_addrs = snap.local_addrs();
//! let guard = setup.apply()?;
//! // ... run the datapath; each worker holds `watcher.reader()` ...
//! drop(guard); // or guard.undo()?
//! # let _ = (outside, inside);
//! # Ok(()) }
//! ```

pub mod host;
pub mod netlink;
pub mod pcp;
