//! Datapaths: how frames get in and out of the interfaces. All `unsafe` of rnat lives under this
//! module, each block with a `// SAFETY:` comment.
//!
//! A backend is one interface opened for raw Ethernet frames. The gateway loop receives a batch
//! from one port, lets the engine rewrite each frame in place, and queues the result on the other
//! port, flushing once per batch.

use crate::nat::FrameMeta;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Offload metadata of a frame (what a `virtio_net_hdr` carries), so that GSO super-frames and
/// partial checksums survive translation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameInfo {
    /// The transport checksum is partial (pseudo-header sum only); complete it from
    /// `csum_start` (offset from the frame start) and store at `csum_start + csum_offset`.
    pub csum_partial: bool,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// GSO type (virtio: 0 none, 1 TCPv4, 3 UDP, 4 TCPv6) and segment payload size.
    pub gso_type: u8,
    pub gso_size: u16,
    pub hdr_len: u16,
}

impl FrameInfo {
    /// What the engine needs to know.
    pub fn nat_meta(&self) -> FrameMeta {
        FrameMeta {
            csum_partial: self.csum_partial,
            gso: self.gso_type != 0,
        }
    }
}

/// One interface, opened for raw frames.
pub trait Port: Send {
    /// A descriptor that becomes readable when frames wait, for poll(2).
    fn fd(&self) -> RawFd;
    /// Receives what is waiting (waiting at most `timeout` for the first frame) and calls `f` on
    /// each frame, which it may modify in place. Returns the number of frames.
    fn rx(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(&mut [u8], &FrameInfo),
    ) -> io::Result<usize>;
    /// Queues a frame for transmission.
    fn tx(&mut self, frame: &[u8], info: &FrameInfo) -> io::Result<()>;
    /// Sends everything queued.
    fn flush(&mut self) -> io::Result<()>;
    /// Short name of the backend, for logs.
    fn backend(&self) -> &'static str;
}
