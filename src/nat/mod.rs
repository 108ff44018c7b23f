//! The sans-I/O NAT core: translation table, port allocation, timers, TCP tracking and in-place
//! packet rewriting. No sockets, no clock reads (time is passed in as [`Time`]), no allocation and
//! no global lock per packet.
#![forbid(unsafe_code)]

mod blocks;
pub mod config;
mod engine;
mod fragment;
mod hairpin;
mod icmp;
mod index;
mod live;
mod portmap;
pub mod snapshot;
mod stats;
mod synhold;
mod table;
pub mod tcp;

pub use blocks::PortBlock;
pub use config::{
    Config, ConfigError, Filtering, Forward, MIN_SYN_HOLD, PortRange, Prefix, Timeouts,
    UnsolicitedSyn,
};
pub use engine::{Engine, FrameMeta, SessionInfo, Verdict, Worker};
pub use live::Reconfigured;
pub use portmap::{EXPLICIT_PER_SUBSCRIBER, MapError, MapGrant, MapRequest, MappingInfo};
pub use snapshot::{RestoreReport, SnapshotError};
pub use stats::{DropReason, Stats};

use std::time::Duration;

/// A point in time, in nanoseconds since an epoch the caller chooses (a monotonic clock in the
/// gateway, a virtual clock in tests). The core never reads a clock itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);
    pub const fn from_nanos(n: u64) -> Time {
        Time(n)
    }
    pub const fn from_secs(s: u64) -> Time {
        Time(s * 1_000_000_000)
    }
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms * 1_000_000)
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Whole seconds, saturating at `u32::MAX` (136 years).
    pub fn secs_u32(self) -> u32 {
        (self.0 / 1_000_000_000).min(u32::MAX as u64) as u32
    }
    pub fn saturating_sub(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
}

/// Which way a frame travels through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received on the inside interface, leaves on the outside.
    Outbound,
    /// Received on the outside interface, leaves on the inside.
    Inbound,
}

/// A translated transport protocol. Each has its own public port space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Proto {
    Tcp = 0,
    Udp = 1,
    /// ICMP queries; the "port" is the query identifier.
    Icmp = 2,
}

impl Proto {
    /// From an IP protocol number.
    pub fn from_ip(p: u8) -> Option<Proto> {
        match p {
            crate::wire::proto::TCP => Some(Proto::Tcp),
            crate::wire::proto::UDP => Some(Proto::Udp),
            crate::wire::proto::ICMP => Some(Proto::Icmp),
            _ => None,
        }
    }
    pub fn ip_number(self) -> u8 {
        match self {
            Proto::Tcp => crate::wire::proto::TCP,
            Proto::Udp => crate::wire::proto::UDP,
            Proto::Icmp => crate::wire::proto::ICMP,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}
