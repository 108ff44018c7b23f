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

/// Most frames [`Port::rx_batch`] hands over at once (the engine's batch group).
pub const RX_BATCH: usize = 16;

/// What [`Port::rx_batch`] calls on each batch: the frames (in place) and their metadata.
pub type BatchFn<'a> = dyn FnMut(&mut [&mut [u8]], &[FrameInfo]) + 'a;

/// A per-frame callback for [`Port::rx`] that hands each frame to `f` as a batch of one.
pub(crate) fn one_by_one<'a, 'b: 'a>(
    f: &'a mut BatchFn<'b>,
) -> impl FnMut(&mut [u8], &FrameInfo) + 'a {
    move |frame, info| f(&mut [frame], std::slice::from_ref(info))
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
    /// Like [`Port::rx`], but hands the frames over in batches of up to [`RX_BATCH`], all in
    /// place at once, so that the caller can translate them together (`Worker::process_batch`
    /// overlaps their table lookups). The default hands each frame over alone.
    fn rx_batch(&mut self, timeout: Duration, f: &mut BatchFn<'_>) -> io::Result<usize> {
        self.rx(timeout, &mut one_by_one(f))
    }
    /// Queues a frame for transmission.
    fn tx(&mut self, frame: &[u8], info: &FrameInfo) -> io::Result<()>;
    /// Sends everything queued.
    fn flush(&mut self) -> io::Result<()>;
    /// Short name of the backend, for logs.
    fn backend(&self) -> &'static str;
}

pub mod afpacket;
pub mod hint;
pub mod memory;
pub mod pnet;
#[cfg(feature = "xdp")]
pub mod xdp;
#[cfg(feature = "xdp")]
pub mod xdp_prog;

pub use afpacket::{AfPacket, AfPacketOptions, AfPacketStats, Fanout, FanoutMode, RxMode};
pub use memory::{MemoryHandle, MemoryPort, memory_port};
pub use pnet::{PnetOptions, PnetPort};
#[cfg(feature = "xdp")]
pub use xdp::{XdpAttachment, XdpOptions, XdpPort, XdpStats};
#[cfg(feature = "xdp")]
pub use xdp_prog::{Role, XdpMode, XdpRules};

/// Which backend [`open`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// AF_PACKET: a TPACKET_V2 ring (or `recvmmsg` / V3, see `RxMode`) + vnet headers +
    /// sendmmsg (the default).
    #[default]
    AfPacket,
    /// The `pnet_datalink` channel: one syscall per frame, offloads redone in software.
    Pnet,
    /// AF_XDP sockets fed by rnat's XDP program (cargo feature `xdp`; see `xdp.rs`). Accepted by
    /// the parser in every build so that a build without the feature can say so.
    Xdp,
}

/// Whether this build has the AF_XDP datapath (cargo feature `xdp`).
pub const XDP_BUILT: bool = cfg!(feature = "xdp");

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "af_packet" | "afpacket" | "af-packet" => Ok(Backend::AfPacket),
            "pnet" => Ok(Backend::Pnet),
            "xdp" | "af_xdp" | "af-xdp" => Ok(Backend::Xdp),
            _ => Err(format!(
                "unknown datapath backend {s:?} (af_packet, pnet, xdp)"
            )),
        }
    }
}

/// Opens `ifname` with `backend` and its default options. The AF_XDP backend needs its XDP
/// program first (`XdpAttachment`, `XdpPort::open`): here it is refused.
pub fn open(backend: Backend, ifname: &str) -> io::Result<Box<dyn Port>> {
    Ok(match backend {
        Backend::AfPacket => Box::new(AfPacket::open(ifname, &AfPacketOptions::default())?),
        Backend::Pnet => Box::new(PnetPort::open(ifname, &PnetOptions::default())?),
        Backend::Xdp => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the AF_XDP backend is opened with XdpAttachment::attach + XdpPort::open",
            ));
        }
    })
}

/// Runs `f` on a thread that entered the network namespace `netns` (a name under `/run/netns`, or
/// a path such as `/proc/PID/ns/net`), and returns its result. Sockets opened by `f` stay in that
/// namespace wherever they are used afterwards, so a port opened this way can be moved to any
/// thread.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let path = if netns.contains('/') {
        netns.to_string()
    } else {
        format!("/run/netns/{netns}")
    };
    let file = std::fs::File::open(&path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: `file` is an open namespace file; setns only changes this (new) thread.
            cvt(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// Converts a `-1` return into the thread's `errno`.
pub(crate) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `setsockopt(2)` with a typed value.
pub(crate) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` is a valid, initialised `T` for the duration of the call and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn ifreq_for(ifname: &str) -> io::Result<libc::ifreq> {
    let b = ifname.as_bytes();
    if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok(ifr)
}

fn if_ioctl(ifname: &str, req: libc::Ioctl) -> io::Result<libc::ifreq> {
    let mut ifr = ifreq_for(ifname)?;
    // SAFETY: plain socket(2) call, checked.
    let s = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `s` is a fresh descriptor owned here only.
    let s = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFINDEX / SIOCGIFMTU read and write one `ifreq`, which `ifr` is.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), req, &mut ifr as *mut libc::ifreq) })?;
    Ok(ifr)
}

/// Puts the calling thread under the real-time policy SCHED_FIFO at `priority` (1..=99): it then
/// runs before every normal thread of the machine when it wakes, as the kernel's own softirq
/// processing does. Needs CAP_SYS_NICE (or an RLIMIT_RTPRIO that allows it).
pub fn set_realtime(priority: u8) -> io::Result<()> {
    if !(1..=99).contains(&priority) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "real-time priority must be between 1 and 99",
        ));
    }
    let param = libc::sched_param {
        sched_priority: priority as libc::c_int,
    };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is this thread.
    cvt(unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) }).map(drop)
}

/// Index of `ifname` in the calling thread's network namespace.
pub fn if_index(ifname: &str) -> io::Result<u32> {
    let ifr = if_ioctl(ifname, libc::SIOCGIFINDEX)?;
    // SAFETY: SIOCGIFINDEX filled the `ifru_ifindex` member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_ifindex } as u32)
}

/// MTU of `ifname` in the calling thread's network namespace (read with an ioctl, since `/sys`
/// shows the namespace it was mounted in, not the thread's).
pub fn if_mtu(ifname: &str) -> io::Result<usize> {
    let ifr = if_ioctl(ifname, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu }.max(68) as usize)
}

/// Transmission without offload metadata support: completes a partial checksum and segments a
/// TCP frame larger than `mtu` (or marked GSO) in software, passing each resulting frame to `emit`.
/// `scratch` is reused between calls.
pub(crate) fn soft_tx(
    frame: &[u8],
    info: &FrameInfo,
    mtu: usize,
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) {
    use crate::wire::offload;
    if let Ok(l) = offload::l4_info(frame) {
        let ip_len = l.end - l.l3;
        if l.protocol == crate::wire::proto::TCP && (ip_len > mtu || info.gso_type != 0) {
            let doff = usize::from(frame[l.l4 + 12] >> 4) * 4;
            let max = mtu.saturating_sub((l.l4 - l.l3) + doff).max(1);
            let mss = if info.gso_size != 0 {
                usize::from(info.gso_size).min(max)
            } else {
                max
            };
            if offload::segment_tcp(frame, mss, scratch, |s| emit(s)).is_ok() {
                return;
            }
        }
    }
    if info.csum_partial {
        scratch.clear();
        scratch.extend_from_slice(frame);
        let _ = offload::complete_partial_checksum(
            scratch,
            usize::from(info.csum_start),
            usize::from(info.csum_offset),
        );
        emit(scratch);
    } else {
        emit(frame);
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (negative descriptors are ignored, as
/// poll(2) does). Interrupted waits return early without error.
pub fn wait_readable(fds: &[RawFd], timeout: Duration) -> io::Result<()> {
    let mut p: [libc::pollfd; 4] = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    for (slot, fd) in p.iter_mut().zip(fds) {
        *slot = libc::pollfd {
            fd: *fd,
            events: libc::POLLIN,
            revents: 0,
        };
    }
    let n = fds.len().min(p.len());
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `p` is a valid array of `n` pollfd structures that outlives the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), n as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
