//! AF_XDP backend (cargo feature `xdp`): one XDP socket per (interface, queue), fed by the XDP
//! program of [`super::xdp_prog`], which redirects rnat's traffic and passes the rest to the kernel.
//!
//! # Design
//! - **UMEM.** Each socket registers its own anonymous mapping of `frames` chunks of `frame_size`
//!   bytes. The first half serves reception (owned by the fill ring, the kernel, or the RX ring
//!   while a batch is handed to the gateway), the second half transmission (a free list, the TX
//!   ring, the kernel, the completion ring). The fill and TX rings are as large as their halves,
//!   so neither can overflow.
//! - **Receive.** `rx` takes every descriptor waiting in the RX ring (at most `rx_batch`), hands
//!   each frame to the gateway *in place in the UMEM* (the engine rewrites it there), then gives
//!   the chunks back through the fill ring: no copy in user space.
//! - **Transmit.** `tx` copies the frame into a free TX chunk (the frame usually lives in the other
//!   interface's UMEM) and queues a descriptor; `flush` publishes the queue and kicks the kernel
//!   with `sendto` (copy mode transmits only from a system call, at most 32 frames per call, so it
//!   kicks until the ring is drained), then reclaims completed chunks.
//! - **Offloads.** An XDP socket carries no offload metadata. On veth in native mode the kernel
//!   stops GSO towards the device but frames from local sockets still carry partial checksums:
//!   they are recognised from the bytes (`pnet::infer_info`) and completed in software on transmit
//!   (`soft_tx`), like the pnet backend.
//! - **ARP.** The program passes ARP to the kernel, but the gateway learns MACs from ARP and
//!   answers it for pool addresses no interface holds, so each port also opens a small AF_PACKET
//!   socket bound to `ETH_P_ARP` (a tap, like the AF_PACKET backend) and merges its frames into
//!   `rx`. `fd` is an epoll descriptor over both sockets.
//! - **Copy mode.** On veth (and NICs without AF_XDP zero-copy) the kernel copies each frame into
//!   the UMEM and out of it; zero-copy is used where the driver offers it (bind flags 0 = best).

use super::xdp_prog::{XdpMode, XdpProgram, XdpRules};
use super::{FrameInfo, Port, cvt, if_index, if_mtu, setsockopt, soft_tx};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Options of [`XdpPort::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpOptions {
    /// Receive queue of the interface this socket serves.
    pub queue: u32,
    /// UMEM chunks (a power of two, half for RX, half for TX).
    pub frames: u32,
    /// Bytes per chunk (2048 or 4096): the largest frame that fits, with the kernel's headroom.
    pub frame_size: u32,
    /// Frames handed over per `rx` call.
    pub rx_batch: usize,
    /// Frames queued before `tx` flushes by itself.
    pub tx_batch: usize,
    /// Tap ARP with an AF_PACKET socket (see the module docs).
    pub arp_tap: bool,
}

impl Default for XdpOptions {
    fn default() -> Self {
        XdpOptions {
            queue: 0,
            frames: 4096,
            frame_size: 4096,
            rx_batch: 64,
            tx_batch: 64,
            arp_tap: true,
        }
    }
}

/// Counters of one port (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    pub rx_frames: u64,
    /// Frames taken from the ARP tap.
    pub rx_arp: u64,
    /// Received frames recognised as carrying a partial checksum.
    pub rx_partial: u64,
    /// Descriptors outside the UMEM (never expected; skipped).
    pub rx_invalid: u64,
    pub tx_frames: u64,
    /// Frames dropped on transmit: larger than a chunk, or no free chunk.
    pub tx_dropped: u64,
    /// `sendto` kicks.
    pub tx_kicks: u64,
}

/// An attached XDP program shared by the sockets of one interface (one per queue). Dropping the
/// last reference detaches the program.
#[derive(Debug, Clone)]
pub struct XdpAttachment(Arc<XdpProgram>);

impl XdpAttachment {
    /// Loads and attaches the program for `rules` on `ifname` (calling thread's namespace), with
    /// room for sockets on `queues` receive queues.
    pub fn attach(
        ifname: &str,
        rules: &XdpRules,
        queues: u32,
        mode: XdpMode,
    ) -> io::Result<XdpAttachment> {
        let ifindex = if_index(ifname)?;
        let p = XdpProgram::attach(ifindex, rules, queues, mode)
            .map_err(|e| io::Error::new(e.kind(), format!("{ifname}: {e}")))?;
        Ok(XdpAttachment(Arc::new(p)))
    }

    /// The mode the program runs in.
    pub fn mode(&self) -> XdpMode {
        self.0.mode()
    }

    pub fn program(&self) -> &XdpProgram {
        &self.0
    }
}

/// A memory mapping, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly one mapping made by `map`, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

fn map(len: usize, fd: RawFd, offset: libc::off_t) -> io::Result<Mapping> {
    let (flags, fd) = if fd < 0 {
        (
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
        )
    } else {
        (libc::MAP_SHARED | libc::MAP_POPULATE, fd)
    };
    // SAFETY: a fresh mapping (anonymous, or of the socket's ring at the offset the kernel
    // defines for it) of `len` bytes; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Mapping {
        base: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
        len,
    })
}

/// One of the four rings shared with the kernel: producer and consumer indexes (free-running
/// u32) and `size` entries of `entry` bytes (16 for `xdp_desc`, 8 for UMEM addresses).
struct XRing {
    _map: Mapping,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    desc: NonNull<u8>,
    mask: u32,
    entry: usize,
}

impl XRing {
    fn open(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
        pgoff: libc::off_t,
    ) -> io::Result<XRing> {
        let len = off.desc as usize + size as usize * entry;
        let m = map(len, fd, pgoff)?;
        let at = |o: u64| -> io::Result<NonNull<u8>> {
            if o as usize >= len {
                return Err(io::Error::other("ring offset outside the mapping"));
            }
            // SAFETY: `o < len`, inside the mapping.
            Ok(unsafe { NonNull::new_unchecked(m.base.as_ptr().add(o as usize)) })
        };
        let producer = at(off.producer)?.cast();
        let consumer = at(off.consumer)?.cast();
        let desc = at(off.desc)?;
        Ok(XRing {
            _map: m,
            producer,
            consumer,
            desc,
            mask: size - 1,
            entry,
        })
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: the kernel places the producer index, a 4-byte aligned u32, at the offset it
        // reported (inside the mapping, checked in `open`); it lives as long as `self`. The kernel
        // updates it concurrently, hence the atomic view.
        unsafe { self.producer.as_ref() }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as for `prod`, for the consumer index.
        unsafe { self.consumer.as_ref() }
    }

    /// Pointer to entry `i` (taken modulo the ring size).
    fn slot(&self, i: u32) -> *mut u8 {
        // SAFETY: `(i & mask) * entry` < size * entry, inside the descriptor array.
        unsafe {
            self.desc
                .as_ptr()
                .add((i & self.mask) as usize * self.entry)
        }
    }

    fn read_addr(&self, i: u32) -> u64 {
        // SAFETY: an 8-byte entry of a u64 ring, 8-byte aligned (the kernel aligns the array).
        unsafe { std::ptr::read_volatile(self.slot(i) as *const u64) }
    }

    fn write_addr(&self, i: u32, addr: u64) {
        // SAFETY: as for `read_addr`; user space owns entries between its producer index and
        // the kernel's consumer index.
        unsafe { std::ptr::write_volatile(self.slot(i) as *mut u64, addr) }
    }

    fn read_desc(&self, i: u32) -> (u64, u32) {
        // SAFETY: a 16-byte `xdp_desc` entry (addr u64, len u32, options u32), 8-byte aligned.
        let d = unsafe { std::ptr::read_volatile(self.slot(i) as *const libc::xdp_desc) };
        (d.addr, d.len)
    }

    fn write_desc(&self, i: u32, addr: u64, len: u32) {
        let d = libc::xdp_desc {
            addr,
            len,
            options: 0,
        };
        // SAFETY: as for `read_desc`; the entry is user space's until published.
        unsafe { std::ptr::write_volatile(self.slot(i) as *mut libc::xdp_desc, d) }
    }
}

/// The transmit half: ring, completion ring, free chunks.
struct Tx {
    ring: XRing,
    comp: XRing,
    free: Vec<u64>,
    /// Our producer index (published on flush).
    prod: u32,
    pending: usize,
}

/// An interface queue opened with AF_XDP (see the module docs).
pub struct XdpPort {
    // Drop order: the XSKMAP slot is cleared in `Drop::drop`, then the socket closes before its
    // rings and UMEM are unmapped.
    xsk: OwnedFd,
    arp: Option<OwnedFd>,
    epoll: OwnedFd,
    rx: XRing,
    fill: XRing,
    tx: Tx,
    umem: Mapping,
    attachment: XdpAttachment,
    queue: u32,
    frame_size: u32,
    rx_batch: usize,
    tx_batch: usize,
    mtu: usize,
    scratch: Vec<u8>,
    segs: Vec<(usize, usize)>,
    segbuf: Vec<u8>,
    arp_buf: Vec<u8>,
    stats: XdpStats,
}

// SAFETY: `XdpPort` exclusively owns its socket, UMEM and ring mappings; the raw pointers in the
// rings point into those mappings, which move with it. Nothing is tied to the opening thread.
unsafe impl Send for XdpPort {}

impl XdpPort {
    /// Opens queue `opts.queue` of `ifname` (calling thread's namespace) and binds the socket into
    /// `attachment`'s XSKMAP, so that the program starts redirecting to it.
    pub fn open(
        ifname: &str,
        attachment: &XdpAttachment,
        opts: &XdpOptions,
    ) -> io::Result<XdpPort> {
        let ifindex = if_index(ifname)?;
        if ifindex != attachment.program().ifindex() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the XDP program is attached to another interface",
            ));
        }
        let mtu = if_mtu(ifname)?;
        let fs = opts.frame_size;
        if !(fs == 2048 || fs == 4096) || !opts.frames.is_power_of_two() || opts.frames < 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad UMEM geometry",
            ));
        }
        let half = opts.frames / 2;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })
                .map_err(|e| io::Error::new(e.kind(), format!("AF_XDP socket: {e}")))?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let xsk = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = xsk.as_raw_fd();
        let umem = map(opts.frames as usize * fs as usize, -1, 0)?;
        // SAFETY: xdp_umem_reg is plain old data; all-zero is a valid value.
        let mut reg: libc::xdp_umem_reg = unsafe { std::mem::zeroed() };
        reg.addr = umem.base.as_ptr() as u64;
        reg.len = umem.len as u64;
        reg.chunk_size = fs;
        setsockopt(s, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)?;
        setsockopt(s, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &half)?;
        setsockopt(s, libc::SOL_XDP, libc::XDP_UMEM_COMPLETION_RING, &half)?;
        setsockopt(s, libc::SOL_XDP, libc::XDP_RX_RING, &half)?;
        setsockopt(s, libc::SOL_XDP, libc::XDP_TX_RING, &half)?;
        // SAFETY: xdp_mmap_offsets is plain old data; all-zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is a writable xdp_mmap_offsets and `optlen` its size.
        cvt(unsafe {
            libc::getsockopt(
                s,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut optlen,
            )
        })?;
        if optlen as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(io::Error::other(
                "kernel too old: XDP ring offsets without flags",
            ));
        }
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let rx = XRing::open(s, &off.rx, half, desc, libc::XDP_PGOFF_RX_RING)?;
        let tx = XRing::open(s, &off.tx, half, desc, libc::XDP_PGOFF_TX_RING)?;
        let fill = XRing::open(s, &off.fr, half, 8, libc::XDP_UMEM_PGOFF_FILL_RING as _)?;
        let comp = XRing::open(
            s,
            &off.cr,
            half,
            8,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as _,
        )?;
        // The RX half goes to the fill ring before binding.
        for i in 0..half {
            fill.write_addr(i, u64::from(i) * u64::from(fs));
        }
        fill.prod().store(half, Ordering::Release);
        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: 0,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: opts.queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sxdp` is a valid sockaddr_xdp and its size is passed.
        cvt(unsafe {
            libc::bind(
                s,
                (&sxdp as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot bind an AF_XDP socket to {ifname} queue {}: {e}",
                    opts.queue
                ),
            )
        })?;
        let arp = if opts.arp_tap {
            Some(arp_socket(ifindex)?)
        } else {
            None
        };
        // SAFETY: plain epoll_create1 call; checked.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fresh descriptor owned here only.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        for fd in std::iter::once(s).chain(arp.as_ref().map(|a| a.as_raw_fd())) {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            // SAFETY: valid epoll and target descriptors, `ev` initialised.
            cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        }
        super::xdp_prog::xskmap_set(attachment.program().map_fd(), opts.queue, s)?;
        let free = (half..opts.frames)
            .map(|i| u64::from(i) * u64::from(fs))
            .collect();
        Ok(XdpPort {
            xsk,
            arp,
            epoll,
            rx,
            fill,
            tx: Tx {
                ring: tx,
                comp,
                free,
                prod: 0,
                pending: 0,
            },
            umem,
            attachment: attachment.clone(),
            queue: opts.queue,
            frame_size: fs,
            rx_batch: opts.rx_batch.clamp(1, half as usize),
            tx_batch: opts.tx_batch.clamp(1, half as usize),
            mtu,
            scratch: Vec::with_capacity(4096),
            segs: Vec::new(),
            segbuf: Vec::new(),
            arp_buf: vec![0u8; 2048],
            stats: XdpStats::default(),
        })
    }

    pub fn stats(&self) -> XdpStats {
        self.stats
    }

    /// The interface MTU read at open time.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The socket's receive queue.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The XDP socket's descriptor (the one in the XSKMAP).
    pub fn xsk_fd(&self) -> RawFd {
        self.xsk.as_raw_fd()
    }

    fn wait(&self, timeout: Duration) -> io::Result<()> {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: `ev` is a writable array of 2 events.
        let r = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), ev.as_mut_ptr(), 2, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Hands every waiting RX descriptor (up to the batch) to `f`, in place, and refills.
    fn rx_ring(&mut self, f: &mut dyn FnMut(&mut [u8], &FrameInfo)) -> usize {
        let cons = self.rx.cons().load(Ordering::Relaxed);
        let prod = self.rx.prod().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons).min(self.rx_batch as u32);
        if n == 0 {
            return 0;
        }
        let fill_prod = self.fill.prod().load(Ordering::Relaxed);
        let chunk = u64::from(self.frame_size);
        for i in 0..n {
            let (addr, len) = self.rx.read_desc(cons.wrapping_add(i));
            let base = addr - addr % chunk;
            if addr + u64::from(len) <= base + chunk && base + chunk <= self.umem.len as u64 {
                // SAFETY: `addr .. addr + len` lies inside one chunk of the UMEM (checked above);
                // the kernel handed the chunk to user space through the RX ring and gets it back
                // only through the fill ring below, after `f` returns; no other reference to it
                // exists meanwhile.
                let frame = unsafe {
                    std::slice::from_raw_parts_mut(
                        self.umem.base.as_ptr().add(addr as usize),
                        len as usize,
                    )
                };
                let info = super::pnet::infer_info(frame, self.mtu);
                if info.csum_partial {
                    self.stats.rx_partial += 1;
                }
                f(frame, &info);
                self.stats.rx_frames += 1;
            } else {
                self.stats.rx_invalid += 1;
            }
            // Every RX chunk is either here, in the fill ring or with the kernel, and the fill
            // ring holds all of them: there is always room.
            self.fill.write_addr(fill_prod.wrapping_add(i), base);
        }
        self.rx
            .cons()
            .store(cons.wrapping_add(n), Ordering::Release);
        self.fill
            .prod()
            .store(fill_prod.wrapping_add(n), Ordering::Release);
        n as usize
    }

    /// ARP frames from the tap (non-blocking).
    fn rx_arp(&mut self, f: &mut dyn FnMut(&mut [u8], &FrameInfo)) -> usize {
        let Some(arp) = &self.arp else { return 0 };
        let mut n = 0;
        while n < 16 {
            // SAFETY: `arp_buf` is writable for its length.
            let r = unsafe {
                libc::recv(
                    arp.as_raw_fd(),
                    self.arp_buf.as_mut_ptr().cast(),
                    self.arp_buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                break;
            }
            f(&mut self.arp_buf[..r as usize], &FrameInfo::default());
            n += 1;
        }
        self.stats.rx_arp += n as u64;
        n
    }

    /// Takes completed TX chunks back.
    fn reclaim(&mut self) {
        let t = &mut self.tx;
        let cons = t.comp.cons().load(Ordering::Relaxed);
        let prod = t.comp.prod().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons);
        for i in 0..n {
            t.free.push(t.comp.read_addr(cons.wrapping_add(i)));
        }
        t.comp.cons().store(cons.wrapping_add(n), Ordering::Release);
    }

    /// Publishes queued descriptors and makes the kernel send them.
    fn kick(&mut self) {
        let t = &mut self.tx;
        if t.pending > 0 {
            t.ring.prod().store(t.prod, Ordering::Release);
            t.pending = 0;
        }
        // Copy mode sends at most 32 frames per call: go on until the ring is drained (bounded).
        for _ in 0..(t.ring.mask as usize / 32 + 4) {
            if t.ring.cons().load(Ordering::Acquire) == t.prod {
                break;
            }
            self.stats.tx_kicks += 1;
            // SAFETY: sendto with no data on our socket: the kernel transmits the TX ring.
            let r = unsafe {
                libc::sendto(
                    self.xsk.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY) => continue,
                    // ENOBUFS / ENETDOWN: the device is busy or gone; the frames stay queued.
                    _ => break,
                }
            }
        }
        self.reclaim();
    }

    /// Copies one frame into a free TX chunk and queues it.
    fn push(&mut self, frame: &[u8]) {
        if frame.len() > self.frame_size as usize {
            self.stats.tx_dropped += 1;
            return;
        }
        if self.tx.free.is_empty() {
            self.reclaim();
        }
        if self.tx.free.is_empty() {
            self.kick();
        }
        let Some(addr) = self.tx.free.pop() else {
            self.stats.tx_dropped += 1;
            return;
        };
        // SAFETY: `addr` is the start of a TX chunk of `frame_size` bytes inside the UMEM, owned by
        // user space (it came from the free list), and `frame.len() <= frame_size`; `frame` lives
        // in other memory (the other port's UMEM or a heap buffer), so they do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                self.umem.base.as_ptr().add(addr as usize),
                frame.len(),
            )
        };
        let t = &mut self.tx;
        t.ring.write_desc(t.prod, addr, frame.len() as u32);
        t.prod = t.prod.wrapping_add(1);
        t.pending += 1;
        self.stats.tx_frames += 1;
        if t.pending >= self.tx_batch {
            self.kick();
        }
    }
}

impl Drop for XdpPort {
    fn drop(&mut self) {
        // Stop the program redirecting to this socket before it closes.
        let _ = super::xdp_prog::xskmap_clear(self.attachment.program().map_fd(), self.queue);
    }
}

/// An AF_PACKET socket receiving the interface's incoming ARP frames (non-blocking).
fn arp_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(proto),
        )
    })?;
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        &one,
    )?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

impl Port for XdpPort {
    fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn rx(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(&mut [u8], &FrameInfo),
    ) -> io::Result<usize> {
        let mut n = self.rx_ring(f) + self.rx_arp(f);
        if n == 0 && !timeout.is_zero() {
            self.wait(timeout)?;
            n = self.rx_ring(f) + self.rx_arp(f);
        }
        Ok(n)
    }

    fn tx(&mut self, frame: &[u8], info: &FrameInfo) -> io::Result<()> {
        if !info.csum_partial && info.gso_type == 0 && frame.len() <= self.mtu + 14 {
            self.push(frame);
            return Ok(());
        }
        // No offload metadata on an XDP socket: complete / segment in software.
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut segs = std::mem::take(&mut self.segs);
        let mut out = std::mem::take(&mut self.segbuf);
        out.clear();
        segs.clear();
        soft_tx(frame, info, self.mtu, &mut scratch, &mut |s| {
            segs.push((out.len(), s.len()));
            out.extend_from_slice(s);
        });
        for &(at, len) in &segs {
            self.push(&out[at..at + len]);
        }
        self.segbuf = out;
        self.scratch = scratch;
        self.segs = segs;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.tx.pending > 0 || self.tx.ring.cons().load(Ordering::Acquire) != self.tx.prod {
            self.kick();
        } else {
            self.reclaim();
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "af_xdp"
    }
}
