//! Zero-copy views over the packet formats rnat reads and rewrites.
//!
//! # Contract
//! Every view is built with `new_checked`, which validates exactly the lengths its accessors rely on.
//! After a successful `new_checked`, no accessor or setter of that view panics, whatever the bytes
//! are: fields are read at fixed offsets inside the validated length, and variable-length parts
//! (IPv4 options, TCP options, payloads) are bounded by lengths checked at construction. Untrusted
//! input therefore yields an [`Error`], never a panic. `new_unchecked` exists for callers that have
//! already validated the buffer (the engine after `new_checked`, the builders in this crate).
//!
//! Setters never recompute checksums; callers update them incrementally with [`checksum`].
#![forbid(unsafe_code)]

pub(crate) mod bytes;
pub mod checksum;
pub mod frag;
pub mod offload;
pub mod pcp;
mod views;

pub use views::*;

/// Why a buffer was refused by a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header, or than a length field claims.
    Truncated,
    /// A field holds a value the format does not allow (version, IHL, data offset...).
    Malformed,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated"),
            Error::Malformed => f.write_str("malformed"),
        }
    }
}

impl std::error::Error for Error {}

/// IP protocol numbers rnat handles.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// EtherType values rnat handles.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
}
