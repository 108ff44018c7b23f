//! rnat: a userspace NAT gateway.
//!
//! - [`wire`]: zero-copy packet views and checksum arithmetic.
//! - [`nat`]: the sans-I/O translation engine.

pub mod control;
pub mod datapath;
pub mod gateway;
pub mod nat;
pub mod observe;
pub mod persist;
pub mod preflight;
pub mod settings;
pub mod wire;
