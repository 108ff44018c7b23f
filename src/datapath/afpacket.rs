//! AF_PACKET backend: batched `recvmmsg` reception (or a TPACKET_V2 / V3 mmap ring) with
//! `virtio_net_hdr` metadata, and batched `sendmmsg` transmission with the same header.
//!
//! # Design
//! - **Receive modes ([`RxMode`]).** The default, `V2`, is a TPACKET_V2 ring of MTU-sized slots
//!   (2 KiB for a 1500 MTU, 8192 in 16 MiB): the kernel copies each frame into the next slot
//!   and wakes the reader per frame (a lone frame is handed over in ~6 us on 6.18 veth, against
//!   ~990 us for V3, whose wake-up waits for the block retire timer, >= 1 ms); under load the
//!   reader walks the slots with no system call per frame. A frame larger than a slot (a GSO
//!   super-frame) is queued whole on the socket by the kernel (`PACKET_COPY_THRESH`) and its
//!   slot, holding only its head, is marked `TP_STATUS_COPY`: the reader then takes the frame
//!   with one `recv`, vnet header first, in order. `Mmsg` reads up to `rx_batch` frames per
//!   `recvmmsg` into preallocated 65 KiB slots: also woken per frame, but a system call per
//!   batch and skb queueing per frame (measured: 0.5-0.8x the packet rate of `V2`). Queued
//!   frames count against the socket receive buffer, so it is raised to the ring size
//!   (`SO_RCVBUFFORCE`); `PACKET_AUXDATA` gives `Mmsg` the status bits the ring has per frame.
//!   `V3` is kept.
//! - **TPACKET_V3 RX ring (`RxMode::V3`).** The kernel copies frames into a shared ring of blocks and hands over
//!   a whole block at a time; one `poll` wakes the loop for a batch of frames and no system call
//!   is made per frame. Frames are variable-sized inside a block, so a 64 KB GSO super-frame takes
//!   64 KB and a 60 byte ACK takes ~140 bytes (a V2 ring would need 64 KB slots for every frame).
//!   Cost: a block is handed over when it is full or when its retire timer (`block_timeout_ms`,
//!   1 ms by default) fires, so at low rates a frame waits up to that long (measured on 6.18:
//!   a lone frame is delivered after 0.6-1.0 ms, median 0.98 ms; under load blocks fill first).
//! - **`PACKET_VNET_HDR`.** Every received frame is preceded in the ring by a `virtio_net_hdr`
//!   describing its offload state: `NEEDS_CSUM` (partial checksum, with `csum_start` /
//!   `csum_offset`) and GSO type / size. With default offloads on veth or virtio-net, TCP arrives
//!   as ~64 KB super-frames with partial checksums; this header lets rnat translate them as they
//!   are and hand them back to the kernel, which segments them and completes the checksum on the
//!   way out (in hardware when the device can). Turning offloads off instead would cap throughput
//!   (see the field notes) and does not even stop peers from sending such frames.
//! - **Batched TX with `sendmmsg`.** `tx` copies the frame behind a `virtio_net_hdr` built from
//!   its [`FrameInfo`] into a queue; `flush` (or a full queue) sends the whole queue with one
//!   `sendmmsg`. A TPACKET TX ring would save that copy but the kernel copies into an skb anyway,
//!   TX rings with vnet headers are newer and less travelled, and a frame the kernel refuses
//!   (EMSGSIZE, a bad header) costs only that frame here.
//! - **`PACKET_IGNORE_OUTGOING`** keeps our own transmissions out of the RX ring.
//! - Optional `PACKET_QDISC_BYPASS` and `PACKET_FANOUT` (for several workers on one interface).
//!
//! Without `vnet_hdr` (an option, for kernels that refuse it), the ring's `TP_STATUS_CSUMNOTREADY`
//! bit marks partial checksums instead, and transmission completes checksums and segments TCP
//! super-frames in software, like the pnet backend.
//!
//! Verified on Linux 6.18 (veth, default offloads, `tests/datapath_afpacket.rs`): the V3 ring with
//! `PACKET_VNET_HDR` places the 10-byte header right before the MAC header of every frame
//! (`tp_mac` points past it), with `csum_start` counted from the MAC header; bulk TCP from a veth
//! peer arrives as super-frames (NEEDS_CSUM, GSO TCPv4, gso_size 1448); frames sent with a vnet
//! header are segmented / checksummed by the kernel (in software when the veth has `tx off tso
//! off`, passed through as GSO otherwise); `PACKET_IGNORE_OUTGOING` hides the namespace's own
//! transmissions. The AUXDATA-style fallback (`vnet_hdr: false`) is kept and tested too.

use super::{
    BatchFn, FrameInfo, Port, RX_BATCH, cvt, if_index, if_mtu, one_by_one, setsockopt, soft_tx,
};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::Duration;

/// Size of the legacy `struct virtio_net_hdr` AF_PACKET uses.
pub const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// How frames are spread over the sockets of a fanout group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutMode {
    /// By flow hash (both directions of a flow are not guaranteed to meet on one socket).
    Hash,
    /// Round robin.
    LoadBalance,
    /// By the CPU that received the frame.
    Cpu,
    /// By the receive queue.
    QueueMapping,
}

/// Joins a `PACKET_FANOUT` group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    pub group: u16,
    pub mode: FanoutMode,
    /// `PACKET_FANOUT_FLAG_DEFRAG`: reassemble IP fragments before hashing.
    pub defrag: bool,
}

/// How an [`AfPacket`] port receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxMode {
    /// `recvmmsg` batches on the socket itself (no ring): each frame is copied, behind its vnet
    /// header, into one of `rx_batch` preallocated 65 KiB slots. Woken per frame.
    Mmsg,
    /// TPACKET_V2 ring of MTU-sized slots (2 KiB for a 1500 MTU), `block_size * block_count`
    /// bytes in all, woken per frame; frames larger than a slot (GSO super-frames) arrive
    /// truncated with `TP_STATUS_COPY` and are read whole from the socket queue
    /// (`PACKET_COPY_THRESH`), offload metadata included. The default.
    #[default]
    V2,
    /// TPACKET_V3 ring of `block_count` blocks of `block_size` bytes, frames packed. Woken per
    /// block: a lone frame waits for the block retire timer (`block_timeout_ms`, >= 1 ms).
    V3,
}

impl std::str::FromStr for RxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mmsg" | "recvmmsg" => Ok(RxMode::Mmsg),
            "v2" | "V2" => Ok(RxMode::V2),
            "v3" | "V3" => Ok(RxMode::V3),
            _ => Err(format!("unknown rx mode {s:?} (mmsg, v2, v3)")),
        }
    }
}

/// Options of [`AfPacket::open`]. `Default` receives with a TPACKET_V2 ring of MTU-sized slots,
/// vnet headers on; the rings get 16 MiB (64 x 256 KiB), `recvmmsg` 64 slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// Receive path (see [`RxMode`]).
    pub rx_mode: RxMode,
    /// Frames per `recvmmsg` call (`RxMode::Mmsg`).
    pub rx_batch: usize,
    /// Bytes per ring block (a multiple of the page size; must hold the largest frame, 64 KB GSO).
    /// In `RxMode::Mmsg`, `block_size * block_count` is the socket receive buffer instead.
    pub block_size: u32,
    pub block_count: u32,
    /// Milliseconds after which the kernel hands over a block that is not full.
    pub block_timeout_ms: u32,
    /// Use `PACKET_VNET_HDR` (offload metadata); `false` falls back to status bits + software.
    pub vnet_hdr: bool,
    pub qdisc_bypass: bool,
    pub promiscuous: bool,
    pub fanout: Option<Fanout>,
    /// Frames queued before `tx` flushes by itself.
    pub tx_batch: usize,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            rx_mode: RxMode::default(),
            rx_batch: 64,
            block_size: 256 * 1024,
            block_count: 64,
            block_timeout_ms: 1,
            vnet_hdr: true,
            qdisc_bypass: false,
            promiscuous: true,
            fanout: None,
            tx_batch: 64,
        }
    }
}

/// Counters of one port (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AfPacketStats {
    pub rx_frames: u64,
    /// Ring blocks (V3), ring slots (V2) or `recvmmsg` calls (mmsg) that returned frames.
    pub rx_blocks: u64,
    /// Frames cut short by the ring or the receive slot (larger than a block / slot), dropped.
    pub rx_truncated: u64,
    /// V2: frames larger than a slot, read whole from the socket queue (TP_STATUS_COPY).
    pub rx_copied: u64,
    /// Frames whose VLAN tag the device stripped into metadata (delivered untagged).
    pub rx_vlan_stripped: u64,
    pub tx_frames: u64,
    /// Of `tx_frames`, those sent at once from the caller's buffer (large frames, no copy).
    pub tx_direct: u64,
    /// Frames the kernel refused on transmit (dropped), see `last_tx_error`.
    pub tx_errors: u64,
}

/// V2 ring: block size (slots are packed into blocks of this size, a multiple of the page size).
const V2_BLOCK: u32 = 64 * 1024;

/// V2 ring slot for an interface of MTU `mtu`: the headers before the frame (tpacket2_hdr,
/// sockaddr_ll, alignment, vnet header: < 128 bytes) plus an Ethernet frame with a VLAN tag,
/// rounded up to a power of two, at least 2 KiB.
fn v2_slot_size(mtu: usize) -> u32 {
    ((mtu.min(65535) + 18 + 4 + 128).next_power_of_two() as u32).max(2048)
}

/// Frames at least this long (with a vnet header) are sent at once from the caller's buffer by
/// one `sendmsg`, after what is queued, instead of being copied into the batch buffer: for a 64 KB
/// GSO super-frame the copy costs far more than the system call (perf on bulk TCP: the copy was
/// ~3 % of all CPU); small frames keep the batching.
pub const DIRECT_TX_MIN: usize = 4096;

/// The memory of the RX ring.
struct Ring {
    base: NonNull<u8>,
    len: usize,
    block_size: usize,
    block_count: usize,
    next: usize,
    /// Offset of the status word in a block (V3: `block_status`) or slot (V2: `tp_status`).
    status_off: usize,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `AfPacket::open`, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

impl Ring {
    fn block(&self, i: usize) -> *mut u8 {
        // SAFETY: i < block_count, so the offset stays inside the mapping.
        unsafe { self.base.as_ptr().add(i * self.block_size) }
    }

    /// The block's status word, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: V3: `tpacket_block_desc` starts each page-aligned block: `version` (u32),
        // `offset_to_priv` (u32), then `tpacket_hdr_v1` whose first field `block_status` is a u32 at
        // offset 8. V2: each slot (16-byte aligned) starts with `tpacket2_hdr`, `tp_status` (u32) at 0.
        // Either way 4-byte aligned and inside the mapping for as long as `self` lives. The kernel
        // writes it concurrently, hence the atomic view.
        unsafe { &*(self.block(i).add(self.status_off) as *const AtomicU32) }
    }

    fn ready(&self, i: usize) -> bool {
        self.status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }
}

/// Bytes per `recvmmsg` slot: the vnet header and a 64 KiB GSO frame with its MAC header.
const MMSG_SLOT: usize = 65 * 1024;
/// Control bytes per `recvmmsg` slot, in u64 units: a `cmsghdr` (16) + `tpacket_auxdata` (20).
const MMSG_CTL: usize = 8;

/// Preallocated `recvmmsg` state: `batch` slots of `MMSG_SLOT` bytes, their iovecs and headers.
/// The headers point into `buf`, `ctl` and `iov`, heap blocks that are never resized.
struct Mmsg {
    buf: Vec<u8>,
    ctl: Vec<u64>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Mmsg {
    fn new(batch: usize) -> Mmsg {
        let mut m = Mmsg {
            buf: vec![0u8; batch * MMSG_SLOT],
            ctl: vec![0u64; batch * MMSG_CTL],
            iov: Vec::with_capacity(batch),
            msgs: Vec::with_capacity(batch),
        };
        for i in 0..batch {
            m.iov.push(libc::iovec {
                // SAFETY: i < batch, so the slot lies inside `buf`.
                iov_base: unsafe { m.buf.as_mut_ptr().add(i * MMSG_SLOT) }.cast(),
                iov_len: MMSG_SLOT,
            });
        }
        for i in 0..batch {
            // SAFETY: msghdr / mmsghdr are plain old data; all-zero is a valid value.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            // SAFETY: i < batch = iov.len(); `iov` and `ctl` are never resized after this.
            h.msg_hdr.msg_iov = unsafe { m.iov.as_mut_ptr().add(i) };
            h.msg_hdr.msg_iovlen = 1;
            // SAFETY: as above, the control slot lies inside `ctl`.
            h.msg_hdr.msg_control = unsafe { m.ctl.as_mut_ptr().add(i * MMSG_CTL) }.cast();
            h.msg_hdr.msg_controllen = MMSG_CTL * 8;
            m.msgs.push(h);
        }
        m
    }

    /// `tp_status` from the `PACKET_AUXDATA` control message of slot `i`, if there is one.
    fn aux_status(&self, i: usize) -> Option<u32> {
        let h = &self.msgs[i].msg_hdr;
        let c = &self.ctl[i * MMSG_CTL..(i + 1) * MMSG_CTL];
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        // cmsghdr: cmsg_len (usize), cmsg_level (i32), cmsg_type (i32); data follows aligned.
        let mut b = [0u8; MMSG_CTL * 8];
        for (d, w) in b.chunks_exact_mut(8).zip(c) {
            d.copy_from_slice(&w.to_ne_bytes());
        }
        let level = i32::from_ne_bytes(b[8..12].try_into().ok()?);
        let ty = i32::from_ne_bytes(b[12..16].try_into().ok()?);
        if h.msg_controllen < hdr + 4 || level != libc::SOL_PACKET || ty != libc::PACKET_AUXDATA {
            return None;
        }
        Some(u32::from_ne_bytes(b[hdr..hdr + 4].try_into().ok()?))
    }
}

/// The receive path of a port.
enum Rx {
    Ring(Ring),
    Mmsg(Mmsg),
}

/// An interface opened with AF_PACKET (see the module docs).
pub struct AfPacket {
    fd: OwnedFd,
    rx: Rx,
    /// The ring is TPACKET_V2 (one frame per slot) rather than V3.
    v2: bool,
    vnet: bool,
    mtu: usize,
    tx_batch: usize,
    txbuf: Vec<u8>,
    txmsgs: Vec<(usize, usize)>,
    iov: Vec<libc::iovec>,
    mmsg: Vec<libc::mmsghdr>,
    scratch: Vec<u8>,
    /// V2: where a frame too large for its slot is read whole (vnet header first).
    copy_buf: Vec<u8>,
    stats: AfPacketStats,
    last_tx_error: Option<io::Error>,
}

// SAFETY: `AfPacket` exclusively owns its ring mapping and socket; the raw pointers in `ring`, `iov`
// and `mmsg` point into that mapping or into `txbuf`, and the latter two are rebuilt before every
// use; those in `Rx::Mmsg` point into heap blocks that `Mmsg` owns and never resizes. So moving the
// whole value to another thread is sound.
unsafe impl Send for AfPacket {}

fn rd16(p: *const u8) -> u16 {
    // SAFETY: callers pass a pointer with 2 readable bytes inside the ring (bounds checked first).
    unsafe { std::ptr::read_unaligned(p as *const u16) }
}

fn rd32(p: *const u8) -> u32 {
    // SAFETY: callers pass a pointer with 4 readable bytes inside the ring (bounds checked first).
    unsafe { std::ptr::read_unaligned(p as *const u32) }
}

/// Decodes a (legacy, host-endian) `virtio_net_hdr`.
pub fn parse_vnet_hdr(h: &[u8; VNET_HDR_LEN]) -> FrameInfo {
    let u = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
    FrameInfo {
        csum_partial: h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0,
        csum_start: u(6),
        csum_offset: u(8),
        gso_type: h[1],
        gso_size: u(4),
        hdr_len: u(2),
    }
}

/// Encodes the `virtio_net_hdr` to transmit `frame` with `info`. The header length is recomputed
/// for TCP GSO (the kernel wants the whole header there) and left to the kernel otherwise.
pub fn build_vnet_hdr(frame: &[u8], info: &FrameInfo) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    let partial = info.csum_partial;
    let gso = info.gso_type != 0 && info.gso_size != 0 && partial;
    if partial {
        h[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        h[6..8].copy_from_slice(&info.csum_start.to_ne_bytes());
        h[8..10].copy_from_slice(&info.csum_offset.to_ne_bytes());
    }
    if gso {
        h[1] = info.gso_type;
        h[4..6].copy_from_slice(&info.gso_size.to_ne_bytes());
        let start = usize::from(info.csum_start);
        let hdr_len = if info.gso_type & !VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_TCPV4 {
            frame
                .get(start + 12)
                .map_or(0, |d| start + usize::from(d >> 4) * 4)
        } else {
            start + 8
        };
        let hdr_len = hdr_len.min(frame.len()) as u16;
        h[2..4].copy_from_slice(&hdr_len.to_ne_bytes());
    }
    h
}

impl AfPacket {
    /// Opens `ifname` (in the calling thread's network namespace).
    pub fn open(ifname: &str, opts: &AfPacketOptions) -> io::Result<AfPacket> {
        let ifindex = if_index(ifname)?;
        let mtu = if_mtu(ifname)?;
        let page = 4096u32;
        if opts.block_size < 65536 + 4096
            || !opts.block_size.is_multiple_of(page)
            || opts.block_count == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad ring geometry",
            ));
        }
        // Protocol 0: receive nothing until the ring is ready and `bind` names ETH_P_ALL.
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        let one: libc::c_int = 1;
        if opts.vnet_hdr {
            setsockopt(s, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)?;
        }
        setsockopt(s, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)?;
        if opts.qdisc_bypass {
            setsockopt(s, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one)?;
        }
        let total = opts.block_size as usize * opts.block_count as usize;
        let rx = match opts.rx_mode {
            RxMode::Mmsg => {
                // Queued frames count against the receive buffer by their truesize (a 64 KB GSO
                // frame ~ 66 KB): give it what the ring would have had. FORCE needs CAP_NET_ADMIN.
                let want = total.min(i32::MAX as usize) as libc::c_int;
                if setsockopt(s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &want).is_err() {
                    let _ = setsockopt(s, libc::SOL_SOCKET, libc::SO_RCVBUF, &want);
                }
                // Status bits (partial checksum, VLAN) per frame, as the ring has them.
                setsockopt(s, libc::SOL_PACKET, libc::PACKET_AUXDATA, &one)?;
                Rx::Mmsg(Mmsg::new(opts.rx_batch.clamp(1, 1024)))
            }
            RxMode::V2 => {
                // Frames too large for a slot are queued whole on the socket (TP_STATUS_COPY):
                // they count against the receive buffer, so give it room for them.
                let want = total.min(i32::MAX as usize) as libc::c_int;
                if setsockopt(s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &want).is_err() {
                    let _ = setsockopt(s, libc::SOL_SOCKET, libc::SO_RCVBUF, &want);
                }
                setsockopt(s, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, &one)?;
                Rx::Ring(Self::map_ring(s, opts, true, mtu)?)
            }
            RxMode::V3 => Rx::Ring(Self::map_ring(s, opts, false, mtu)?),
        };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
        cvt(unsafe {
            libc::bind(
                s,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        if opts.promiscuous {
            // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
            let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
            mr.mr_ifindex = ifindex as i32;
            mr.mr_type = libc::PACKET_MR_PROMISC as u16;
            setsockopt(s, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr)?;
        }
        if let Some(fo) = opts.fanout {
            let mut mode = match fo.mode {
                FanoutMode::Hash => libc::PACKET_FANOUT_HASH,
                FanoutMode::LoadBalance => libc::PACKET_FANOUT_LB,
                FanoutMode::Cpu => libc::PACKET_FANOUT_CPU,
                FanoutMode::QueueMapping => libc::PACKET_FANOUT_QM,
            };
            if fo.defrag {
                mode |= libc::PACKET_FANOUT_FLAG_DEFRAG;
            }
            let arg: libc::c_uint = u32::from(fo.group) | (mode << 16);
            setsockopt(s, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
        }
        Ok(AfPacket {
            fd,
            rx,
            v2: opts.rx_mode == RxMode::V2,
            vnet: opts.vnet_hdr,
            mtu,
            tx_batch: opts.tx_batch.max(1),
            txbuf: Vec::with_capacity(256 * 1024),
            txmsgs: Vec::with_capacity(opts.tx_batch.max(1)),
            iov: Vec::new(),
            mmsg: Vec::new(),
            scratch: Vec::new(),
            copy_buf: Vec::new(),
            stats: AfPacketStats::default(),
            last_tx_error: None,
        })
    }

    /// Sets up and maps the RX ring (V2: fixed slots sized for a 64 KB GSO frame; V3: blocks).
    fn map_ring(s: RawFd, opts: &AfPacketOptions, v2: bool, mtu: usize) -> io::Result<Ring> {
        let total = opts.block_size * opts.block_count;
        let (version, req) = if v2 {
            // One slot per frame, sized for an MTU frame (tpacket2_hdr + sockaddr_ll + vnet
            // header + the frame); larger frames (GSO super-frames) come truncated with
            // TP_STATUS_COPY and whole through the socket queue (`walk_slots_batched`). Slots are
            // contiguous: the block size is a multiple of the slot size.
            let slot = v2_slot_size(mtu);
            let block = slot.max(V2_BLOCK);
            let nb = (total / block).max(1);
            let req = libc::tpacket_req3 {
                tp_block_size: block,
                tp_block_nr: nb,
                tp_frame_size: slot,
                tp_frame_nr: nb * (block / slot),
                tp_retire_blk_tov: 0,
                tp_sizeof_priv: 0,
                tp_feature_req_word: 0,
            };
            (libc::tpacket_versions::TPACKET_V2, req)
        } else {
            let frame_size = 2048u32;
            let req = libc::tpacket_req3 {
                tp_block_size: opts.block_size,
                tp_block_nr: opts.block_count,
                tp_frame_size: frame_size,
                tp_frame_nr: opts.block_size / frame_size * opts.block_count,
                tp_retire_blk_tov: opts.block_timeout_ms.max(1),
                tp_sizeof_priv: 0,
                tp_feature_req_word: 0,
            };
            (libc::tpacket_versions::TPACKET_V3, req)
        };
        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(version as libc::c_int),
        )?;
        if v2 {
            // tpacket_req (V2) is the first four fields of tpacket_req3.
            let r = libc::tpacket_req {
                tp_block_size: req.tp_block_size,
                tp_block_nr: req.tp_block_nr,
                tp_frame_size: req.tp_frame_size,
                tp_frame_nr: req.tp_frame_nr,
            };
            setsockopt(s, libc::SOL_PACKET, libc::PACKET_RX_RING, &r)?;
        } else {
            setsockopt(s, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        }
        let len = req.tp_block_size as usize * req.tp_block_nr as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket, with its exact size.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                s,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // V2 is walked slot by slot (contiguous), V3 block by block.
        let (unit, units) = if v2 {
            (req.tp_frame_size as usize, req.tp_frame_nr as usize)
        } else {
            (req.tp_block_size as usize, req.tp_block_nr as usize)
        };
        Ok(Ring {
            base: NonNull::new(base.cast())
                .ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
            block_size: unit,
            block_count: units,
            next: 0,
            status_off: if v2 { 0 } else { 8 },
        })
    }

    /// The interface MTU read at open time.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn stats(&self) -> AfPacketStats {
        self.stats
    }

    /// The last error the kernel gave for a transmitted frame (cleared on read).
    pub fn take_last_tx_error(&mut self) -> Option<io::Error> {
        self.last_tx_error.take()
    }

    fn ring_ready(&self, i: usize) -> bool {
        matches!(&self.rx, Rx::Ring(r) if r.ready(i))
    }

    fn wait(&self, timeout: Duration) -> io::Result<()> {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Walks one ready V3 block, calling `f` per frame, then gives the block back to the kernel.
    fn walk_block(&mut self, b: usize, f: &mut dyn FnMut(&mut [u8], &FrameInfo)) -> usize {
        let Rx::Ring(ring) = &self.rx else {
            return 0;
        };
        let bs = ring.block_size;
        let blk = ring.block(b);
        let num = rd32(blk.wrapping_add(12)) as usize;
        let mut off = rd32(blk.wrapping_add(16)) as usize;
        let mut n = 0;
        for _ in 0..num {
            // tpacket3_hdr: next_offset@0 snaplen@12 len@16 status@20 mac@24 (u16) net@26 (u16)
            if off < 32 || off + 48 > bs {
                break;
            }
            let h = blk.wrapping_add(off);
            let next = rd32(h) as usize;
            let snaplen = rd32(h.wrapping_add(12)) as usize;
            let wirelen = rd32(h.wrapping_add(16)) as usize;
            let status = rd32(h.wrapping_add(20));
            let mac = usize::from(rd16(h.wrapping_add(24)));
            let min_mac = 48 + if self.vnet { VNET_HDR_LEN } else { 0 };
            if off + mac + snaplen > bs || mac < min_mac || snaplen < wirelen {
                self.stats.rx_truncated += 1;
            } else {
                // SAFETY: `off + mac .. off + mac + snaplen` lies inside this block (checked above),
                // the block belongs to user space until its status is reset below, and no other
                // reference into it exists while `f` runs; the VNET_HDR_LEN bytes before `mac`
                // are inside the frame slot (mac >= 48 + VNET_HDR_LEN when vnet is on).
                unsafe {
                    deliver(
                        h,
                        mac,
                        snaplen,
                        status,
                        self.vnet,
                        self.mtu,
                        &mut self.stats,
                        f,
                    )
                };
                n += 1;
            }
            if next == 0 {
                break;
            }
            off += next;
        }
        fence(Ordering::Release);
        ring.status(b)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.stats.rx_blocks += 1;
        self.stats.rx_frames += n as u64;
        n
    }

    /// V2, batched: hands over up to [`RX_BATCH`] consecutive ready slots at once (in place),
    /// then gives them back to the kernel; a slot marked TP_STATUS_COPY ends a batch and its frame
    /// goes alone. Walks at most the ring once. Returns the number of frames handed over.
    fn walk_slots_batched(&mut self, f: &mut BatchFn<'_>) -> usize {
        let mut n = 0;
        let mut budget = match &self.rx {
            Rx::Ring(r) => r.block_count,
            Rx::Mmsg(_) => return 0,
        };
        let min_mac = 32 + if self.vnet { VNET_HDR_LEN } else { 0 };
        loop {
            let Rx::Ring(ring) = &mut self.rx else {
                return n;
            };
            // (slot, frame pointer, length, status) of the batch; slots stay ours until released.
            let mut got: [(usize, *mut u8, usize, u32); RX_BATCH] =
                [(0, std::ptr::null_mut(), 0, 0); RX_BATCH];
            let mut k = 0;
            let mut copied = None;
            while k < RX_BATCH && budget > 0 {
                let b = ring.next;
                if !ring.ready(b) {
                    break;
                }
                budget -= 1;
                ring.next = (b + 1) % ring.block_count;
                let h = ring.block(b);
                let status = rd32(h);
                if status & libc::TP_STATUS_COPY != 0 {
                    copied = Some((b, status));
                    break;
                }
                let wirelen = rd32(h.wrapping_add(4)) as usize;
                let snaplen = rd32(h.wrapping_add(8)) as usize;
                let mac = usize::from(rd16(h.wrapping_add(12)));
                if mac + snaplen > ring.block_size || mac < min_mac || snaplen < wirelen {
                    self.stats.rx_truncated += 1;
                    fence(Ordering::Release);
                    ring.status(b)
                        .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                    continue;
                }
                got[k] = (b, h.wrapping_add(mac), snaplen, status);
                k += 1;
            }
            if k > 0 {
                let mut infos = [FrameInfo::default(); RX_BATCH];
                let mut frames: [&mut [u8]; RX_BATCH] = Default::default();
                for (i, &(_, p, len, status)) in got[..k].iter().enumerate() {
                    // SAFETY: `p .. p + len` and the vnet header before it lie inside slot
                    // `got[i].0` (checked above), which belongs to user space until its status is
                    // reset below; the slots of a batch are distinct, so the slices do not
                    // overlap, and nothing else refers to them while `f` runs.
                    let (frame, info) =
                        unsafe { ring_frame(p, len, status, self.vnet, self.mtu, &mut self.stats) };
                    frames[i] = frame;
                    infos[i] = info;
                }
                f(&mut frames[..k], &infos[..k]);
                let Rx::Ring(ring) = &self.rx else {
                    return n;
                };
                fence(Ordering::Release);
                for &(b, ..) in &got[..k] {
                    ring.status(b)
                        .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                }
                self.stats.rx_blocks += k as u64;
                self.stats.rx_frames += k as u64;
                n += k;
            }
            if let Some((b, status)) = copied {
                let c = self.recv_copied(status, &mut one_by_one(&mut *f));
                let Rx::Ring(ring) = &self.rx else {
                    return n;
                };
                fence(Ordering::Release);
                ring.status(b)
                    .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                self.stats.rx_blocks += 1;
                self.stats.rx_copied += c as u64;
                self.stats.rx_frames += c as u64;
                n += c;
            } else if k < RX_BATCH {
                return n;
            }
        }
    }

    /// V2, a slot marked TP_STATUS_COPY: reads its frame whole from the socket queue into
    /// `copy_buf` and hands it to `f` (offload state from the vnet header, else the slot's status
    /// bits). Returns 1, or 0 if the frame was not there (counted as truncated).
    fn recv_copied(&mut self, status: u32, f: &mut dyn FnMut(&mut [u8], &FrameInfo)) -> usize {
        let skip = if self.vnet { VNET_HDR_LEN } else { 0 };
        if self.copy_buf.len() < MMSG_SLOT {
            self.copy_buf.resize(MMSG_SLOT, 0);
        }
        let r = loop {
            // SAFETY: `copy_buf` is a valid, writable buffer of the length passed; recv writes
            // at most that much.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.copy_buf.as_mut_ptr().cast(),
                    self.copy_buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break r;
            }
        };
        if r < 0 || (r as usize) > self.copy_buf.len() || (r as usize) < skip + 14 {
            self.stats.rx_truncated += 1;
            return 0;
        }
        let (vh, frame) = self.copy_buf[..r as usize].split_at_mut(skip);
        let info = buffer_info(vh, frame, status, self.mtu);
        f(frame, &info);
        1
    }

    /// One `recvmmsg` batch (non-blocking), each frame to `f`. `Ok(None)`: nothing waiting.
    fn rx_mmsg(&mut self, f: &mut dyn FnMut(&mut [u8], &FrameInfo)) -> io::Result<Option<usize>> {
        let Rx::Mmsg(m) = &mut self.rx else {
            return Ok(Some(0));
        };
        for h in m.msgs.iter_mut() {
            h.msg_hdr.msg_controllen = MMSG_CTL * 8;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let r = loop {
            // SAFETY: `msgs` holds `msgs.len()` initialised headers whose iovecs and control
            // buffers point into `buf` / `ctl`, owned by `m` and not touched until the call ends.
            let r = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    m.msgs.as_mut_ptr(),
                    m.msgs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            }
        };
        let mut n = 0;
        for i in 0..r {
            let len = m.msgs[i].msg_len as usize;
            let trunc = m.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let status = m.aux_status(i).unwrap_or(0);
            let skip = if self.vnet { VNET_HDR_LEN } else { 0 };
            if trunc || len < skip || len > MMSG_SLOT {
                self.stats.rx_truncated += 1;
                continue;
            }
            if status & libc::TP_STATUS_VLAN_VALID != 0 {
                self.stats.rx_vlan_stripped += 1;
            }
            let slot = &mut m.buf[i * MMSG_SLOT..i * MMSG_SLOT + len];
            let (vh, frame) = slot.split_at_mut(skip);
            let info = buffer_info(vh, frame, status, self.mtu);
            f(frame, &info);
            n += 1;
        }
        if r > 0 {
            self.stats.rx_blocks += 1;
        }
        self.stats.rx_frames += n as u64;
        Ok(Some(n))
    }

    /// Sends one frame (vnet header + frame, two iovecs) without copying it; a refusal is counted
    /// like a refused batch message.
    fn send_direct(&mut self, frame: &[u8], info: &FrameInfo) {
        let mut hdr = build_vnet_hdr(frame, info);
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                // The kernel only reads from it (sendmsg); the pointer is `*mut` by C's signature.
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            },
        ];
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_iov = iov.as_mut_ptr();
        m.msg_iovlen = iov.len();
        for _ in 0..8 {
            // SAFETY: `m` points to two iovecs that point into `hdr` and `frame`, all of which
            // outlive the call; sendmsg only reads them.
            let r = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &m, 0) };
            if r >= 0 {
                self.stats.tx_frames += 1;
                self.stats.tx_direct += 1;
                return;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                self.stats.tx_errors += 1;
                self.last_tx_error = Some(e);
                return;
            }
        }
        self.stats.tx_errors += 1;
    }

    fn queue(&mut self, frame: &[u8], info: &FrameInfo) {
        let start = self.txbuf.len();
        if self.vnet {
            self.txbuf.extend_from_slice(&build_vnet_hdr(frame, info));
        }
        self.txbuf.extend_from_slice(frame);
        self.txmsgs.push((start, self.txbuf.len() - start));
    }
}

/// Offload metadata of a frame read into a buffer behind `vh`: its vnet header when there is one
/// (`vh` is `VNET_HDR_LEN` bytes), else the status bits.
fn buffer_info(vh: &[u8], frame: &[u8], status: u32, mtu: usize) -> FrameInfo {
    match <[u8; VNET_HDR_LEN]>::try_from(vh) {
        Ok(h) => parse_vnet_hdr(&h),
        Err(_) => status_info(frame, status, mtu),
    }
}

/// Offload metadata without a vnet header: `TP_STATUS_CSUMNOTREADY` marks a partial checksum.
fn status_info(frame: &[u8], status: u32, mtu: usize) -> FrameInfo {
    let mut info = FrameInfo::default();
    if status & libc::TP_STATUS_CSUMNOTREADY != 0
        && let Ok(l) = crate::wire::offload::l4_info(frame)
    {
        info.csum_partial = true;
        info.csum_start = l.l4 as u16;
        info.csum_offset = l.csum_offset as u16;
    }
    super::pnet::infer_gso(frame, mtu, &mut info);
    info
}

/// The ring frame at `p` (`len` bytes) with its offload metadata: the vnet header right before
/// it, or the ring status bits (`status`). Counts a stripped VLAN tag.
///
/// # Safety
/// `p - VNET_HDR_LEN .. p + len` (from `p` without vnet headers) must be inside a ring slot that
/// user space owns for `'a`, with no other reference into it meanwhile.
unsafe fn ring_frame<'a>(
    p: *mut u8,
    len: usize,
    status: u32,
    vnet: bool,
    mtu: usize,
    stats: &mut AfPacketStats,
) -> (&'a mut [u8], FrameInfo) {
    if status & libc::TP_STATUS_VLAN_VALID != 0 {
        stats.rx_vlan_stripped += 1;
    }
    // SAFETY: the caller guarantees the range is inside an owned slot, unaliased for 'a.
    let frame = unsafe { std::slice::from_raw_parts_mut(p, len) };
    let info = if vnet {
        let mut vh = [0u8; VNET_HDR_LEN];
        // SAFETY: the header sits right before the frame, inside the slot (caller), and does not
        // overlap `frame`.
        unsafe {
            std::ptr::copy_nonoverlapping(p.sub(VNET_HDR_LEN), vh.as_mut_ptr(), VNET_HDR_LEN)
        };
        parse_vnet_hdr(&vh)
    } else {
        status_info(frame, status, mtu)
    };
    (frame, info)
}

/// Calls `f` on the ring frame at `h + mac` (`snaplen` bytes), with its offload metadata.
///
/// # Safety
/// As [`ring_frame`] for `h + mac`: the frame (and its vnet header) inside a ring slot that user
/// space owns, with no other reference into it while this runs.
#[allow(clippy::too_many_arguments)]
unsafe fn deliver(
    h: *mut u8,
    mac: usize,
    snaplen: usize,
    status: u32,
    vnet: bool,
    mtu: usize,
    stats: &mut AfPacketStats,
    f: &mut dyn FnMut(&mut [u8], &FrameInfo),
) {
    // SAFETY: forwarded from the caller.
    let (frame, info) = unsafe { ring_frame(h.add(mac), snaplen, status, vnet, mtu, stats) };
    f(frame, &info);
}

impl Port for AfPacket {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn rx(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(&mut [u8], &FrameInfo),
    ) -> io::Result<usize> {
        let (next, count) = match &self.rx {
            Rx::Mmsg(_) => {
                if let Some(n) = self.rx_mmsg(f)? {
                    return Ok(n);
                }
                if timeout.is_zero() {
                    return Ok(0);
                }
                self.wait(timeout)?;
                return Ok(self.rx_mmsg(f)?.unwrap_or(0));
            }
            Rx::Ring(r) => (r.next, r.block_count),
        };
        if !self.ring_ready(next) {
            if timeout.is_zero() {
                return Ok(0);
            }
            self.wait(timeout)?;
        }
        if self.v2 {
            // The batched walk, handing the frames over one by one.
            return Ok(self.walk_slots_batched(&mut |frames, infos| {
                for (frame, info) in frames.iter_mut().zip(infos) {
                    f(frame, info);
                }
            }));
        }
        let mut n = 0;
        for _ in 0..count {
            let Rx::Ring(r) = &self.rx else { break };
            let b = r.next;
            if !r.ready(b) {
                break;
            }
            n += self.walk_block(b, f);
            if let Rx::Ring(r) = &mut self.rx {
                r.next = (b + 1) % count;
            }
        }
        Ok(n)
    }

    fn rx_batch(&mut self, timeout: Duration, f: &mut BatchFn<'_>) -> io::Result<usize> {
        let next = match &self.rx {
            Rx::Ring(r) if self.v2 => r.next,
            _ => {
                // recvmmsg and V3: frame by frame (V3 blocks hold frames of any size).
                return self.rx(timeout, &mut one_by_one(f));
            }
        };
        if !self.ring_ready(next) {
            if timeout.is_zero() {
                return Ok(0);
            }
            self.wait(timeout)?;
        }
        Ok(self.walk_slots_batched(f))
    }

    fn tx(&mut self, frame: &[u8], info: &FrameInfo) -> io::Result<()> {
        if self.vnet && frame.len() >= DIRECT_TX_MIN {
            // In order: what is queued leaves first.
            self.flush()?;
            self.send_direct(frame, info);
            return Ok(());
        } else if self.vnet {
            self.queue(frame, info);
        } else {
            // No metadata path: complete / segment in software, queue the results.
            let mut scratch = std::mem::take(&mut self.scratch);
            let mut out = Vec::new();
            soft_tx(frame, info, self.mtu, &mut scratch, &mut |seg| {
                out.push(seg.to_vec())
            });
            self.scratch = scratch;
            for seg in out {
                self.queue(&seg, &FrameInfo::default());
            }
        }
        if self.txmsgs.len() >= self.tx_batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.txmsgs.is_empty() {
            return Ok(());
        }
        self.iov.clear();
        self.mmsg.clear();
        let base = self.txbuf.as_mut_ptr();
        for &(start, len) in &self.txmsgs {
            // SAFETY: start + len <= txbuf.len() by construction in `queue`.
            let p = unsafe { base.add(start) };
            self.iov.push(libc::iovec {
                iov_base: p.cast(),
                iov_len: len,
            });
        }
        for i in 0..self.iov.len() {
            // SAFETY: msghdr / mmsghdr are plain old data; all-zero is a valid value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            // SAFETY: `i` < iov.len(); `iov` is not resized until the sends below are done.
            m.msg_hdr.msg_iov = unsafe { self.iov.as_mut_ptr().add(i) };
            m.msg_hdr.msg_iovlen = 1;
            self.mmsg.push(m);
        }
        let total = self.mmsg.len();
        let mut done = 0;
        // Each round sends at least one message or drops one: bounded by 2 * total rounds.
        for _ in 0..2 * total + 2 {
            if done >= total {
                break;
            }
            let left = (total - done).min(1024) as libc::c_uint;
            // SAFETY: `mmsg[done..]` are initialised headers whose iovecs point into `txbuf`,
            // which is neither moved nor modified until this loop ends.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.mmsg.as_mut_ptr().add(done),
                    left,
                    0,
                )
            };
            if r > 0 {
                done += r as usize;
                self.stats.tx_frames += r as u64;
            } else {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        // The first message of the rest was refused: drop it, go on.
                        self.stats.tx_errors += 1;
                        self.last_tx_error = Some(e);
                        done += 1;
                    }
                }
            }
        }
        self.txmsgs.clear();
        self.txbuf.clear();
        self.iov.clear();
        self.mmsg.clear();
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "af_packet"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_hdr_roundtrip() {
        let mut frame = vec![0u8; 200];
        frame[34 + 12] = 8 << 4; // TCP data offset 32 bytes
        let info = FrameInfo {
            csum_partial: true,
            csum_start: 34,
            csum_offset: 16,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            gso_size: 1448,
            hdr_len: 9999,
        };
        let h = build_vnet_hdr(&frame, &info);
        let back = parse_vnet_hdr(&h);
        assert_eq!(
            back,
            FrameInfo {
                hdr_len: 66,
                ..info
            }
        );
        let plain = build_vnet_hdr(&frame, &FrameInfo::default());
        assert_eq!(plain, [0; VNET_HDR_LEN]);
        // GSO without a partial checksum is not representable: sent as a plain frame.
        let odd = build_vnet_hdr(
            &frame,
            &FrameInfo {
                csum_partial: false,
                ..info
            },
        );
        assert_eq!(odd, [0; VNET_HDR_LEN]);
        // header length never exceeds the frame
        let h = build_vnet_hdr(&frame[..40], &info);
        assert_eq!(parse_vnet_hdr(&h).hdr_len, 0);
    }
}
