//! The gateway loop: two ports, one engine worker, and the layer-2 duties around translation
//! (next-hop MAC resolution, ARP, fragmentation of DF-clear packets over the MTU).
//!
//! Per batch it receives from the inside port, lets the engine rewrite each frame in place,
//! resolves the next hop on the other side and queues the frame there, then does the same from the
//! outside, and flushes. Only unicast frames addressed to the receiving interface's own MAC are
//! translated: broadcasts, multicasts and frames for other stations (seen on a shared segment) are
//! the kernel's business. Next hops come from the kernel's routes and neighbour table (a netlink
//! snapshot, read without locking), from MAC addresses learned from the frames and ARP packets rnat
//! sees, and, when neither knows one, from rnat's own ARP request.

use crate::control::netlink::{Snapshot, SnapshotReader};
use crate::datapath::{FrameInfo, Port, RX_BATCH, wait_readable};
use crate::nat::{Direction, FrameMeta, Time, Verdict, Worker};
use crate::observe::pcap::PcapWriter;
use crate::wire::{Arp, Ethernet, ethertype};
use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One interface as the gateway uses it.
#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// The gateway's own address on this link (ARP sender address).
    pub addr: Ipv4Addr,
    /// IPv4 MTU.
    pub mtu: usize,
}

/// Counters of the layer-2 work around the engine.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Translated, but no route leaves through the other interface.
    pub no_route: AtomicU64,
    /// Translated, but the next hop's MAC is not known yet (an ARP request went out).
    pub no_neighbour: AtomicU64,
    pub arp_requests: AtomicU64,
    /// ARP replies rnat sent for pool addresses the kernel does not own.
    pub arp_replies: AtomicU64,
    pub fragments_sent: AtomicU64,
    pub tx_errors: AtomicU64,
    pub replies_sent: AtomicU64,
}

impl GatewayStats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

const BROADCAST: [u8; 6] = [0xff; 6];
/// A next hop is asked for at most once a second.
const ARP_RETRY: Duration = Duration::from_secs(1);
/// Entries learned by the gateway itself are trusted this long.
const LEARNED_TTL: Duration = Duration::from_secs(300);
const MAX_PENDING_REPLIES: usize = 64;

/// Frames generated or hairpinned during a receive batch, sent after it: at most
/// `MAX_PENDING_REPLIES` (more are dropped), copied into buffers that are kept from batch to batch,
/// so that hairpinned traffic and ICMP errors allocate nothing once the buffers have grown.
struct Pending {
    bufs: Vec<(Vec<u8>, FrameInfo)>,
    len: usize,
}

impl Pending {
    fn new() -> Self {
        Pending {
            bufs: Vec::with_capacity(MAX_PENDING_REPLIES),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Queues a copy of `frame` (bounded).
    fn push(&mut self, frame: &[u8], info: FrameInfo) {
        if self.len >= MAX_PENDING_REPLIES {
            return;
        }
        if self.len == self.bufs.len() {
            self.bufs
                .push((Vec::with_capacity(frame.len().max(128)), info));
        }
        let (buf, i) = &mut self.bufs[self.len];
        buf.clear();
        buf.extend_from_slice(frame);
        *i = info;
        self.len += 1;
    }

    /// The queued frames, in order; the queue is empty afterwards.
    fn take(&mut self) -> impl Iterator<Item = &(Vec<u8>, FrameInfo)> {
        let n = std::mem::take(&mut self.len);
        self.bufs[..n].iter()
    }
}

/// MACs learned on one side, shared by all workers: with several workers the reply to a frame
/// one worker learned a MAC from may arrive at another. Taken for writing at most once a second
/// per host (when an entry is new, changed or a second old), for reading only on a worker's
/// local cache miss: never per packet.
pub type SharedNeighbours = Arc<parking_lot::RwLock<IpMap<([u8; 6], Instant)>>>;

/// A hash map keyed by an IPv4 address with a multiply-shift hash instead of SipHash: the
/// neighbour maps are read for every forwarded frame, and their keys (addresses of hosts on a
/// directly attached link) are not chosen by remote attackers.
pub type IpMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<IpHasher>>;

/// The hasher of [`IpMap`]: one multiply of the 32-bit key.
#[derive(Default)]
pub struct IpHasher(u64);

impl std::hash::Hasher for IpHasher {
    fn finish(&self) -> u64 {
        // The table indexes by the low bits: fold the well-mixed high half of the product in.
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64 ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// One worker's view of a side's MACs: a local cache in front of the shared table.
struct Neighbours {
    learned: IpMap<([u8; 6], Instant)>,
    shared: SharedNeighbours,
    asked: IpMap<Instant>,
}

const SHARED_REFRESH: Duration = Duration::from_secs(1);

impl Neighbours {
    fn new() -> Self {
        Neighbours {
            learned: IpMap::with_capacity_and_hasher(4096, Default::default()),
            shared: SharedNeighbours::default(),
            asked: IpMap::with_capacity_and_hasher(256, Default::default()),
        }
    }

    fn learn(&mut self, ip: u32, mac: [u8; 6], now: Instant) {
        if mac[0] & 1 != 0 || ip == 0 {
            return;
        }
        let known = self.learned.get(&ip);
        if known.is_some_and(|e| e.0 == mac && now.duration_since(e.1) < SHARED_REFRESH) {
            return;
        }
        if self.learned.len() < 65536 || self.learned.contains_key(&ip) {
            self.learned.insert(ip, (mac, now));
        }
        let mut shared = self.shared.write();
        if shared.len() < 65536 || shared.contains_key(&ip) {
            shared.insert(ip, (mac, now));
        }
    }

    fn get(&mut self, ip: u32, now: Instant) -> Option<[u8; 6]> {
        let fresh = |e: &([u8; 6], Instant)| now.duration_since(e.1) < LEARNED_TTL;
        if let Some(e) = self.learned.get(&ip).filter(|e| fresh(e)) {
            return Some(e.0);
        }
        let e = self.shared.read().get(&ip).copied().filter(fresh)?;
        if self.learned.len() < 65536 {
            self.learned.insert(ip, e);
        }
        Some(e.0)
    }

    /// Whether an ARP request for `ip` should go out now.
    fn should_ask(&mut self, ip: u32, now: Instant) -> bool {
        match self.asked.get(&ip) {
            Some(t) if now.duration_since(*t) < ARP_RETRY => false,
            _ => {
                if self.asked.len() > 4096 {
                    self.asked.retain(|_, t| now.duration_since(*t) < ARP_RETRY);
                }
                self.asked.insert(ip, now);
                true
            }
        }
    }
}

/// One side of the gateway: its port, link and neighbours.
struct Side {
    port: Box<dyn Port>,
    link: Link,
    neigh: Neighbours,
    /// Frames for this side produced while receiving (ICMP errors, ARP requests, hairpinned
    /// frames), sent after the batch.
    out: Pending,
    /// `--pcap`: what crosses this interface.
    pcap: Option<PcapWriter>,
}

impl Side {
    fn capture(&mut self, frame: &[u8]) {
        capture(&mut self.pcap, frame);
    }

    fn queue(&mut self, frame: &[u8]) {
        self.out.push(frame, FrameInfo::default());
    }

    fn arp_request(&mut self, target: u32) {
        let mut f = [0u8; 42];
        {
            let mut e = Ethernet::new_unchecked(&mut f[..]);
            e.set_dst(BROADCAST);
            e.set_src(self.link.mac);
            e.set_ethertype(ethertype::ARP);
        }
        Arp::new_unchecked(&mut f[14..]).fill(
            Arp::REQUEST,
            self.link.mac,
            self.link.addr.octets(),
            [0; 6],
            target.to_be_bytes(),
        );
        self.queue(&f);
    }
}

/// Everything one gateway thread needs.
pub struct GatewayWorker {
    worker: Worker,
    inside: Side,
    outside: Side,
    snapshot: SnapshotReader,
    stats: Arc<GatewayStats>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    scratch: Vec<u8>,
    frag_buf: Vec<u8>,
    /// After traffic, keep polling without sleeping for this long (`--busy-poll-us`).
    busy_poll: Duration,
}

/// Engine time at the gateway's epoch. Not zero, so that sessions restored from a snapshot
/// (`--snapshot`) can be given a `last_seen` up to this far in the past.
pub const ENGINE_CLOCK_START: Duration = Duration::from_secs(30 * 86400);

/// Engine time for an instant: [`ENGINE_CLOCK_START`] plus the time since the gateway's epoch
/// (shared with the control plane, which drives expiry with the same clock).
pub fn engine_time(epoch: Instant, at: Instant) -> Time {
    Time::ZERO + ENGINE_CLOCK_START + at.saturating_duration_since(epoch)
}

impl GatewayWorker {
    #[allow(clippy::too_many_arguments)] // assembled once, by the CLI
    pub fn new(
        worker: Worker,
        inside: (Box<dyn Port>, Link),
        outside: (Box<dyn Port>, Link),
        snapshot: SnapshotReader,
        stats: Arc<GatewayStats>,
        epoch: Instant,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let side = |(port, link): (Box<dyn Port>, Link)| Side {
            port,
            link,
            neigh: Neighbours::new(),
            out: Pending::new(),
            pcap: None,
        };
        GatewayWorker {
            worker,
            inside: side(inside),
            outside: side(outside),
            snapshot,
            stats,
            epoch,
            stop,
            scratch: vec![0u8; 2048],
            frag_buf: Vec::with_capacity(2048),
            busy_poll: Duration::ZERO,
        }
    }

    /// Busy polling: after a batch, keep receiving without blocking for up to `d` before the
    /// worker goes to sleep in poll(2). A reply that comes back within `d` (a ping's echo, a TCP
    /// ACK) then finds the worker awake: no wakeup of a sleeping thread (or of an idle CPU, slow
    /// on VMs) on its path. Costs at most `d` of CPU per burst of traffic; zero switches it off.
    pub fn set_busy_poll(&mut self, d: Duration) {
        self.busy_poll = d;
    }

    /// Captures both interfaces into `dir/<interface>-w<worker>.pcap` (`--pcap`).
    pub fn capture_to(&mut self, dir: &std::path::Path, worker: usize) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for side in [&mut self.inside, &mut self.outside] {
            let path = dir.join(format!("{}-w{worker}.pcap", side.link.name));
            side.pcap = Some(PcapWriter::create(&path)?);
        }
        Ok(())
    }

    /// Makes this worker share learned MACs with the other workers holding the same tables
    /// (inside, outside).
    pub fn share_neighbours(&mut self, inside: &SharedNeighbours, outside: &SharedNeighbours) {
        self.inside.neigh.shared = inside.clone();
        self.outside.neigh.shared = outside.clone();
    }

    /// Runs until the stop flag is set.
    pub fn run(&mut self) -> io::Result<()> {
        let mut last_busy = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let n = self.step(Duration::ZERO)?;
            if !self.busy_poll.is_zero() {
                // One clock read per pass (vDSO, ~20 ns), only when busy polling is on.
                let now = Instant::now();
                if n > 0 {
                    last_busy = now;
                    continue;
                }
                if now.saturating_duration_since(last_busy) < self.busy_poll {
                    std::hint::spin_loop();
                    continue;
                }
            }
            if n == 0 {
                for side in [&mut self.inside, &mut self.outside] {
                    if let Some(p) = &mut side.pcap {
                        let _ = p.flush();
                    }
                }
                wait_readable(
                    &[self.inside.port.fd(), self.outside.port.fd()],
                    Duration::from_millis(50),
                )?;
            }
        }
        Ok(())
    }

    /// One batch in each direction. Returns the number of frames received.
    pub fn step(&mut self, timeout: Duration) -> io::Result<usize> {
        let snap = self.snapshot.get().clone();
        let mut n = self.direction(Direction::Outbound, &snap, timeout)?;
        n += self.direction(Direction::Inbound, &snap, timeout)?;
        // Unsolicited SYNs held past their time (RFC 5382 REQ-4): their port-unreachable errors
        // go back out of the outside interface. Called every step, traffic or not (the loop wakes
        // at least every 50 ms), so an error leaves at most a step after its deadline.
        let room = MAX_PENDING_REPLIES.saturating_sub(self.outside.out.len());
        if room > 0 {
            let now = engine_time(self.epoch, Instant::now());
            let out = &mut self.outside;
            self.worker
                .take_unanswered_syns(now, &mut self.scratch, room, |f| out.queue(f));
        }
        for side in [&mut self.inside, &mut self.outside] {
            for (f, info) in side.out.take() {
                capture(&mut side.pcap, f);
                if side.port.tx(f, info).is_err() {
                    GatewayStats::bump(&self.stats.tx_errors);
                } else {
                    GatewayStats::bump(&self.stats.replies_sent);
                }
            }
            if side.port.flush().is_err() {
                GatewayStats::bump(&self.stats.tx_errors);
            }
        }
        Ok(n)
    }

    fn direction(
        &mut self,
        dir: Direction,
        snap: &Snapshot,
        timeout: Duration,
    ) -> io::Result<usize> {
        let (rx, tx) = match dir {
            Direction::Outbound => (&mut self.inside, &mut self.outside),
            Direction::Inbound => (&mut self.outside, &mut self.inside),
        };
        let worker = &self.worker;
        let stats = &*self.stats;
        let scratch = &mut self.scratch;
        let frag_buf = &mut self.frag_buf;
        let now_i = Instant::now();
        let now = engine_time(self.epoch, now_i);
        // Copies, not a clone of the `Link` (its name is a String: no allocation per batch).
        let (rx_mac, rx_ifindex) = (rx.link.mac, rx.link.ifindex);
        let rx_neigh = &mut rx.neigh;
        let rx_out = &mut rx.out;
        let rx_pcap = &mut rx.pcap;
        let engine_cfg = worker.engine().config();
        let n = rx.port.rx_batch(
            timeout,
            &mut |frames: &mut [&mut [u8]], infos: &[FrameInfo]| {
                // 1. Layer 2: ARP, frames not for us; what is left goes to the engine together.
                let mut sel: [&mut [u8]; RX_BATCH] = Default::default();
                let mut sel_info = [FrameInfo::default(); RX_BATCH];
                let mut metas = [FrameMeta::default(); RX_BATCH];
                let mut src = [(0u32, [0u8; 6]); RX_BATCH];
                let mut k = 0;
                for (frame, info) in frames.iter_mut().zip(infos) {
                    capture(rx_pcap, frame);
                    if frame.len() < Ethernet::HEADER_LEN || k == RX_BATCH {
                        continue;
                    }
                    let eth = Ethernet::new_unchecked(&**frame);
                    if eth.ethertype() == ethertype::ARP {
                        if let Ok(a) = Arp::new_checked(eth.payload()) {
                            answer_arp(
                                &a, dir, engine_cfg, snap, rx_mac, rx_neigh, rx_out, stats, now_i,
                            );
                        }
                        continue;
                    }
                    if eth.dst() != rx_mac {
                        continue;
                    }
                    let src_ip = if frame.len() >= 34 {
                        u32::from_be_bytes([frame[26], frame[27], frame[28], frame[29]])
                    } else {
                        0
                    };
                    src[k] = (src_ip, eth.src());
                    sel_info[k] = *info;
                    metas[k] = info.nat_meta();
                    sel[k] = &mut **frame;
                    k += 1;
                }
                // 2. Translation, the batch's table lookups overlapped.
                let mut verdicts = [Verdict::Kernel; RX_BATCH];
                worker.process_batch(
                    dir,
                    &mut sel[..k],
                    &metas[..k],
                    now,
                    scratch,
                    |i, v, reply| {
                        verdicts[i] = v;
                        if let Verdict::Reply(_) = v {
                            rx_out.push(reply, FrameInfo::default());
                        }
                    },
                );
                // 3. Out, in order.
                for (i, frame) in sel[..k].iter_mut().enumerate() {
                    let frame: &mut [u8] = frame;
                    let info = &sel_info[i];
                    match verdicts[i] {
                        Verdict::Forward => {
                            if dir == Direction::Outbound {
                                // (A frame too short for a source address has 0: not learned.)
                                rx_neigh.learn(src[i].0, src[i].1, now_i);
                            }
                            let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
                            let Some(mac) = next_hop_mac(snap, tx, dst, now_i, stats) else {
                                continue;
                            };
                            let mut e = Ethernet::new_unchecked(&mut *frame);
                            e.set_dst(mac);
                            e.set_src(tx.link.mac);
                            send(tx, frame, info, frag_buf, stats);
                        }
                        Verdict::Hairpin => {
                            // Back out of the interface it came from, to the inside host that
                            // owns the public endpoint it was sent to.
                            let dst =
                                u32::from_be_bytes([frame[30], frame[31], frame[32], frame[33]]);
                            match known_mac(snap, rx_ifindex, rx_neigh, Ipv4Addr::from(dst), now_i)
                            {
                                Some(mac) => {
                                    let mut e = Ethernet::new_unchecked(&mut *frame);
                                    e.set_dst(mac);
                                    e.set_src(rx_mac);
                                    rx_out.push(frame, *info);
                                }
                                None => GatewayStats::bump(&stats.no_neighbour),
                            }
                        }
                        Verdict::Reply(_) | Verdict::Kernel | Verdict::Drop(_) | Verdict::Held => {}
                    }
                }
            },
        )?;
        // Fragments that arrived before their first fragment, released (translated) by it in
        // this batch: all travel in `dir`.
        worker.take_released(|_, frame| {
            let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
            if let Some(mac) = next_hop_mac(snap, tx, dst, now_i, stats) {
                let mut e = Ethernet::new_unchecked(&mut *frame);
                e.set_dst(mac);
                e.set_src(tx.link.mac);
                send(tx, frame, &FrameInfo::default(), frag_buf, stats);
            }
        });
        Ok(n)
    }
}

/// An ARP frame received on a side: learns its sender, and on the outside answers requests for
/// pool addresses that no interface holds (the kernel does not answer for those).
#[allow(clippy::too_many_arguments)]
fn answer_arp(
    a: &Arp<&[u8]>,
    dir: Direction,
    cfg: &crate::nat::Config,
    snap: &Snapshot,
    rx_mac: [u8; 6],
    neigh: &mut Neighbours,
    out: &mut Pending,
    stats: &GatewayStats,
    now: Instant,
) {
    neigh.learn(u32::from_be_bytes(a.sender_ip()), a.sender_mac(), now);
    let target = Ipv4Addr::from(a.target_ip());
    if dir == Direction::Inbound
        && a.operation() == Arp::REQUEST
        && cfg.public_addrs.contains(&target)
        && !snap
            .interfaces
            .iter()
            .any(|i| i.addrs.iter().any(|x| x.addr == target))
    {
        let mut r = [0u8; 42];
        {
            let mut e = Ethernet::new_unchecked(&mut r[..]);
            e.set_dst(a.sender_mac());
            e.set_src(rx_mac);
            e.set_ethertype(ethertype::ARP);
        }
        Arp::new_unchecked(&mut r[14..]).fill(
            Arp::REPLY,
            rx_mac,
            a.target_ip(),
            a.sender_mac(),
            a.sender_ip(),
        );
        out.push(&r, FrameInfo::default());
        GatewayStats::bump(&stats.arp_replies);
    }
}

/// The MAC of `ip` on interface `ifindex` if anyone knows it: the kernel's neighbour table (usable
/// entries), else what the workers learned from frames and ARP.
fn known_mac(
    snap: &Snapshot,
    ifindex: u32,
    neigh: &mut Neighbours,
    ip: Ipv4Addr,
    now: Instant,
) -> Option<[u8; 6]> {
    snap.neighbour(ifindex, ip)
        .filter(|n| n.state.is_usable())
        .and_then(|n| n.mac)
        .or_else(|| neigh.get(u32::from(ip), now))
}

/// The MAC of the next hop towards `dst` through `side`, or `None` (counted; an ARP request is
/// queued when rnat does not know it yet). The next hop is found among the routes through
/// `side`'s interface only.
fn next_hop_mac(
    snap: &Snapshot,
    side: &mut Side,
    dst: Ipv4Addr,
    now: Instant,
    stats: &GatewayStats,
) -> Option<[u8; 6]> {
    // Only the routes that leave through this side (RFC 4787 REQ-7): a remote may lie in a prefix
    // the host routes inside, and a translated packet must still leave by the outside.
    let Some(nh) = snap.routes.lookup_via(dst, side.link.ifindex) else {
        GatewayStats::bump(&stats.no_route);
        return None;
    };
    let hop = nh.neighbour_for(dst);
    if let Some(mac) = known_mac(snap, side.link.ifindex, &mut side.neigh, hop, now) {
        return Some(mac);
    }
    GatewayStats::bump(&stats.no_neighbour);
    if side.neigh.should_ask(u32::from(hop), now) {
        side.arp_request(u32::from(hop));
        GatewayStats::bump(&stats.arp_requests);
    }
    None
}

/// Queues a translated frame, fragmenting it when it exceeds the link MTU (the engine already
/// answered DF-set packets with fragmentation-needed; GSO super-frames are segmented by the kernel).
fn send(
    side: &mut Side,
    frame: &mut [u8],
    info: &FrameInfo,
    buf: &mut Vec<u8>,
    stats: &GatewayStats,
) {
    let ip_len = frame.len().saturating_sub(Ethernet::HEADER_LEN);
    if ip_len > side.link.mtu && info.gso_type == 0 {
        if info.csum_partial {
            let _ = crate::wire::offload::complete_partial_checksum(
                frame,
                info.csum_start as usize,
                info.csum_offset as usize,
            );
        }
        let port = &mut side.port;
        let pcap = &mut side.pcap;
        let mut err = false;
        let r = crate::wire::frag::fragment(frame, Ethernet::HEADER_LEN, side.link.mtu, buf, |f| {
            capture(pcap, f);
            err |= port.tx(f, &FrameInfo::default()).is_err();
            GatewayStats::bump(&stats.fragments_sent);
        });
        if r.is_err() || err {
            GatewayStats::bump(&stats.tx_errors);
        }
        return;
    }
    side.capture(frame);
    if side.port.tx(frame, info).is_err() {
        GatewayStats::bump(&stats.tx_errors);
    }
}

/// Records a frame when capturing; a failing capture stops itself rather than the gateway.
fn capture(pcap: &mut Option<PcapWriter>, frame: &[u8]) {
    if let Some(Err(e)) = pcap.as_mut().map(|p| p.record(frame)) {
        tracing::error!("pcap capture stopped: {e}");
        *pcap = None;
    }
}
