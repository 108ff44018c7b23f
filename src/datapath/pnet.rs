//! Fallback backend on the `pnet_datalink` channel (an AF_PACKET socket used with one `poll` +
//! `recvfrom` per received frame and one `sendto` per transmitted frame, no ring, no metadata).
//!
//! Without offload metadata this port recovers what it can from the bytes: a TCP/UDP checksum that
//! does not verify but holds the folded pseudo-header sum is marked partial
//! ([`crate::wire::offload::looks_partial`]), and an IPv4 TCP frame longer than the MTU is marked
//! as a GSO super-frame. On transmit, partial checksums are completed and super-frames segmented
//! in software ([`crate::wire::offload`]), since the kernel gets no header telling it to do so.
//!
//! The socket is created here (so its descriptor can be polled and `PACKET_IGNORE_OUTGOING` set)
//! and handed to pnet through `Config::socket_fd`; pnet owns and closes it.

use super::{FrameInfo, Port, cvt, if_mtu, soft_tx};
use pnet_datalink::{Channel, Config, DataLinkReceiver, DataLinkSender};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Options of [`PnetPort::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PnetOptions {
    /// Interface MTU; `None` reads it from the interface.
    pub mtu: Option<usize>,
    /// Most frames one `rx` call returns.
    pub rx_batch: usize,
    pub promiscuous: bool,
}

impl Default for PnetOptions {
    fn default() -> Self {
        PnetOptions {
            mtu: None,
            rx_batch: 64,
            promiscuous: true,
        }
    }
}

/// Counters of one port (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PnetStats {
    pub rx_frames: u64,
    pub rx_partial: u64,
    pub tx_frames: u64,
    /// Frames produced by software segmentation.
    pub tx_segments: u64,
    pub tx_errors: u64,
}

/// An interface opened through `pnet_datalink`.
pub struct PnetPort {
    fd: RawFd,
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
    mtu: usize,
    rx_batch: usize,
    scratch: Vec<u8>,
    stats: PnetStats,
    last_tx_error: Option<io::Error>,
}

const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;

impl PnetPort {
    /// Opens `ifname` (in the calling thread's network namespace).
    pub fn open(ifname: &str, opts: &PnetOptions) -> io::Result<PnetPort> {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == ifname)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}"))
            })?;
        let mtu = match opts.mtu {
            Some(m) => m,
            None => if_mtu(ifname)?,
        };
        // SAFETY: plain socket(2) call, checked; ownership passes to pnet below (or is closed on
        // the error paths pnet takes).
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        })?;
        let one: libc::c_int = 1;
        // SAFETY: `one` is a valid c_int for the duration of the call, its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: `fd` is ours and not handed over yet.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        let cfg = Config {
            read_buffer_size: 65536 + 4096,
            write_buffer_size: 4096,
            read_timeout: Some(Duration::ZERO),
            write_timeout: Some(Duration::from_millis(100)),
            promiscuous: opts.promiscuous,
            socket_fd: Some(fd),
            ..Config::default()
        };
        match pnet_datalink::channel(&iface, cfg)? {
            Channel::Ethernet(tx, rx) => Ok(PnetPort {
                fd,
                tx,
                rx,
                mtu,
                rx_batch: opts.rx_batch.max(1),
                scratch: Vec::new(),
                stats: PnetStats::default(),
                last_tx_error: None,
            }),
            _ => Err(io::Error::other("pnet returned a non-Ethernet channel")),
        }
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn stats(&self) -> PnetStats {
        self.stats
    }

    /// The last error a transmitted frame got (cleared on read).
    pub fn take_last_tx_error(&mut self) -> Option<io::Error> {
        self.last_tx_error.take()
    }
}

/// Offload metadata recovered from the bytes of a received frame.
pub fn infer_info(frame: &[u8], mtu: usize) -> FrameInfo {
    use crate::wire::offload;
    let mut info = FrameInfo::default();
    if let Some((start, off)) = offload::looks_partial(frame) {
        info.csum_partial = true;
        info.csum_start = start;
        info.csum_offset = off;
    }
    infer_gso(frame, mtu, &mut info);
    info
}

/// Marks an IPv4 TCP frame longer than `mtu` as a GSO super-frame (segment size from the MTU).
pub(crate) fn infer_gso(frame: &[u8], mtu: usize, info: &mut FrameInfo) {
    if let Ok(l) = crate::wire::offload::l4_info(frame)
        && l.protocol == crate::wire::proto::TCP
        && l.end - l.l3 > mtu
    {
        let doff = usize::from(frame[l.l4 + 12] >> 4) * 4;
        info.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
        info.gso_size = mtu.saturating_sub(l.l4 - l.l3 + doff).clamp(1, 65535) as u16;
        info.hdr_len = (l.l4 + doff) as u16;
    }
}

impl Port for PnetPort {
    fn fd(&self) -> RawFd {
        self.fd
    }

    fn rx(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(&mut [u8], &FrameInfo),
    ) -> io::Result<usize> {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut p = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r <= 0 {
            return Ok(0);
        }
        let mut n = 0;
        while n < self.rx_batch {
            match self.rx.next() {
                Ok(frame) => {
                    let mut buf = std::mem::take(&mut self.scratch);
                    buf.clear();
                    buf.extend_from_slice(frame);
                    let info = infer_info(&buf, self.mtu);
                    if info.csum_partial {
                        self.stats.rx_partial += 1;
                    }
                    f(&mut buf, &info);
                    self.scratch = buf;
                    n += 1;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if n == 0 {
                        return Err(e);
                    }
                    break;
                }
            }
        }
        self.stats.rx_frames += n as u64;
        Ok(n)
    }

    fn tx(&mut self, frame: &[u8], info: &FrameInfo) -> io::Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let (sender, stats, last) = (&mut self.tx, &mut self.stats, &mut self.last_tx_error);
        let mut segs = 0u64;
        soft_tx(frame, info, self.mtu, &mut scratch, &mut |out| {
            segs += 1;
            match sender.send_to(out, None) {
                Some(Ok(())) => stats.tx_frames += 1,
                Some(Err(e)) => {
                    stats.tx_errors += 1;
                    *last = Some(e);
                }
                None => stats.tx_errors += 1,
            }
        });
        if segs > 1 {
            self.stats.tx_segments += segs;
        }
        self.scratch = scratch;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "pnet"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_gso_for_oversized_tcp() {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 3, 4);
        let mut v = Vec::new();
        b.write(&mut v, &[7u8; 3000]).unwrap();
        let i = infer_info(&v, 1500);
        assert_eq!((i.gso_type, i.gso_size, i.csum_partial), (1, 1460, false));
        let i = infer_info(&v, 9000);
        assert_eq!(i, FrameInfo::default());
        assert_eq!(infer_info(&v[..20], 1500), FrameInfo::default());
    }
}
