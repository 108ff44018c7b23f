//! The XDP program of the AF_XDP datapath: eBPF instructions generated in Rust from the gateway's
//! configuration, loaded with bpf(2) and attached with a `bpf_link` (no external toolchain).
//!
//! # What it redirects
//! The program sends to the XDP socket of the receiving queue exactly the traffic rnat translates
//! and passes everything else to the kernel (`XDP_PASS`): ARP, IPv6, anything not IPv4, and the
//! gateway's own traffic. The split is the one the nftables netdev rules of `control::host`
//! describe (ARCHITECTURE.md invariant 8), with the constants baked into the instructions:
//!
//! - **outside**: IPv4 to a pool address no interface holds (all of it); IPv4 to a public address
//!   that is TCP/UDP with a destination port in rnat's ranges or a forwarded port, an ICMP
//!   echo-reply with an identifier in the ranges, an ICMP error (destination unreachable, time
//!   exceeded, parameter problem) quoting a TCP/UDP packet whose source port is in the ranges (or
//!   forwarded) or an echo request whose identifier is, and non-first fragments (rnat's fragment
//!   tracker owns those: they carry no port);
//! - **inside**: IPv4 to a public address with a TCP/UDP destination port in the ranges or
//!   forwarded (hairpin), and IPv4 from the inside prefixes (any source when none are given) whose
//!   destination is not one of the gateway's own addresses, multicast or limited broadcast.
//!
//! The redirect is `bpf_redirect_map(xskmap, rx_queue_index, XDP_PASS)`: with no socket bound on
//! the queue the frame goes to the kernel, so the program never starves the host.
//!
//! # Lifetime
//! The program is attached with `BPF_LINK_CREATE` (Linux >= 5.9): the link, and with it the
//! program, goes away when its last descriptor closes, which includes `kill -9` of rnat. Nothing
//! is left on the interface for the host-setup undo path to clean.

use super::cvt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// XDP verdicts.
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

/// Which side of the gateway a program serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Inside,
    Outside,
}

/// What the program redirects (see the module docs). Build it with
/// `control::host::HostSetup::xdp_rules`, so that it matches the nftables split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpRules {
    pub role: Role,
    /// Addresses rnat translates to.
    pub public: Vec<Ipv4Addr>,
    /// Public addresses no interface holds: all traffic to them is rnat's (outside).
    pub pool_only: Vec<Ipv4Addr>,
    /// Ports and ICMP identifiers rnat allocates (inclusive ranges).
    pub ranges: Vec<(u16, u16)>,
    /// Static forwards: (IP protocol, public address, public port).
    pub forwards: Vec<(u8, Ipv4Addr, u16)>,
    /// Inside prefixes as (network, mask), host order; empty: any source (inside).
    pub inside_prefixes: Vec<(u32, u32)>,
    /// The gateway's own addresses (inside traffic to them goes to the kernel).
    pub own: Vec<Ipv4Addr>,
}

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode, else generic (skb) mode with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

#[derive(Clone, Copy)]
struct Label(usize);

/// A tiny assembler with forward labels.
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
// Jump operations (BPF_JMP class 0x05, BPF_JMP32 class 0x06, BPF_K source).
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const JLT: u8 = 0xa0;
const JLE: u8 = 0xb0;

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::with_capacity(256),
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }
    fn emit(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        });
    }
    /// dst = *(size *)(src + off); size 1, 2 or 4 bytes.
    fn load(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        let code = match size {
            1 => 0x71,
            2 => 0x69,
            _ => 0x61,
        };
        self.emit(code, dst, src, off, 0);
    }
    fn mov_reg(&mut self, dst: u8, src: u8) {
        self.emit(0xbf, dst, src, 0, 0);
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.emit(0xb7, dst, 0, 0, imm);
    }
    fn add_imm(&mut self, dst: u8, imm: i32) {
        self.emit(0x07, dst, 0, 0, imm);
    }
    fn add_reg(&mut self, dst: u8, src: u8) {
        self.emit(0x0f, dst, src, 0, 0);
    }
    /// 32-bit AND (the upper half is zeroed).
    fn and32(&mut self, dst: u8, imm: u32) {
        self.emit(0x54, dst, 0, 0, imm as i32);
    }
    fn lsh(&mut self, dst: u8, imm: i32) {
        self.emit(0x67, dst, 0, 0, imm);
    }
    /// Reads the register's low `bits` as big-endian (network order) into host order.
    fn be(&mut self, dst: u8, bits: i32) {
        self.emit(0xdc, dst, 0, 0, bits);
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.emit(code, dst, src, 0, imm);
    }
    /// 64-bit compare with an immediate (small values only: the immediate is sign-extended).
    fn jmp(&mut self, op: u8, dst: u8, imm: i32, to: Label) {
        self.jump(0x05 | op, dst, 0, imm, to);
    }
    /// 32-bit compare with an immediate (addresses).
    fn jmp32(&mut self, op: u8, dst: u8, imm: u32, to: Label) {
        self.jump(0x06 | op, dst, 0, imm as i32, to);
    }
    /// if dst > src (registers, 64-bit) goto.
    fn jgt_reg(&mut self, dst: u8, src: u8, to: Label) {
        self.jump(0x2d, dst, src, 0, to);
    }
    fn ja(&mut self, to: Label) {
        self.jump(0x05, 0, 0, 0, to);
    }
    fn exit(&mut self) {
        self.emit(0x95, 0, 0, 0, 0);
    }

    /// Goes to `fail` unless `n` bytes from the packet pointer `base` are inside the frame.
    fn need(&mut self, base: u8, n: i32, fail: Label) {
        self.mov_reg(R0, base);
        self.add_imm(R0, n);
        self.jgt_reg(R0, R3, fail);
    }
    fn in_addrs(&mut self, reg: u8, addrs: &[Ipv4Addr], hit: Label) {
        for a in addrs {
            self.jmp32(JEQ, reg, u32::from(*a), hit);
        }
    }
    fn in_ranges(&mut self, reg: u8, ranges: &[(u16, u16)], hit: Label) {
        for &(lo, hi) in ranges {
            if lo == hi {
                self.jmp(JEQ, reg, i32::from(lo), hit);
                continue;
            }
            let next = self.label();
            self.jmp(JLT, reg, i32::from(lo), next);
            self.jmp(JLE, reg, i32::from(hi), hit);
            self.bind(next);
        }
    }
    /// Forwarded ports of protocol `proto_reg` to address `addr_reg` whose port is in `port`.
    fn forwards(&mut self, f: &[(u8, Ipv4Addr, u16)], proto: u8, addr: u8, port: u8, hit: Label) {
        for &(p, a, pt) in f {
            let skip = self.label();
            self.jmp(JNE, proto, i32::from(p), skip);
            self.jmp32(JNE, addr, u32::from(a), skip);
            self.jmp(JEQ, port, i32::from(pt), hit);
            self.bind(skip);
        }
    }

    fn finish(mut self) -> Vec<Insn> {
        for &(at, l) in &self.fixups {
            let to = self.labels[l.0].expect("unbound label");
            self.insns[at].off = (to as isize - at as isize - 1) as i16;
        }
        self.insns
    }
}

/// What the program does with a frame it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    /// `bpf_redirect_map` into the XSKMAP with this descriptor.
    Map(RawFd),
    /// Return `XDP_REDIRECT` without redirecting (for `BPF_PROG_TEST_RUN` of the classifier).
    Verdict,
}

/// Generates the program for `rules`.
pub fn generate(rules: &XdpRules, redirect: Redirect) -> Vec<Insn> {
    let mut a = Asm::new();
    let pass = a.label();
    let redir = a.label();
    // r6 = ctx; r2 = data; r3 = data_end (struct xdp_md: data@0, data_end@4, rx_queue_index@16).
    a.mov_reg(R6, R1);
    a.load(4, R2, R6, 0);
    a.load(4, R3, R6, 4);
    a.need(R2, 34, pass); // Ethernet + minimal IPv4 header
    a.load(2, R5, R2, 12);
    a.be(R5, 16);
    a.jmp(JNE, R5, 0x0800, pass);
    a.load(1, R5, R2, 14);
    a.and32(R5, 0x0f);
    a.jmp(JLT, R5, 5, pass);
    a.lsh(R5, 2); // IPv4 header length, 20..60
    a.load(4, R7, R2, 30);
    a.be(R7, 32); // destination address
    a.load(4, R8, R2, 26);
    a.be(R8, 32); // source address
    a.load(1, R9, R2, 23); // protocol
    a.load(2, R1, R2, 20);
    a.be(R1, 16);
    a.and32(R1, 0x1fff); // fragment offset
    a.mov_reg(R4, R2);
    a.add_reg(R4, R5);
    a.add_imm(R4, 14); // transport header (bounds checked before each use)

    match rules.role {
        Role::Outside => outside(&mut a, rules, pass, redir),
        Role::Inside => inside(&mut a, rules, pass, redir),
    }

    a.bind(redir);
    match redirect {
        Redirect::Map(fd) => {
            a.load(4, R2, R6, 16); // rx_queue_index
            // ld_imm64 r1, map fd (BPF_PSEUDO_MAP_FD).
            a.emit(0x18, R1, 1, 0, fd);
            a.emit(0, 0, 0, 0, 0);
            a.mov_imm(R3, XDP_PASS as i32); // no socket on this queue: to the kernel
            a.emit(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP);
            a.exit();
        }
        Redirect::Verdict => {
            a.mov_imm(R0, XDP_REDIRECT as i32);
            a.exit();
        }
    }
    a.bind(pass);
    a.mov_imm(R0, XDP_PASS as i32);
    a.exit();
    a.finish()
}

fn outside(a: &mut Asm, r: &XdpRules, pass: Label, redir: Label) {
    let public = a.label();
    let tcp_udp = a.label();
    let icmp = a.label();
    let error = a.label();
    a.in_addrs(R7, &r.pool_only, redir);
    a.in_addrs(R7, &r.public, public);
    a.ja(pass);
    a.bind(public);
    a.jmp(JNE, R1, 0, redir); // non-first fragment
    a.jmp(JEQ, R9, 6, tcp_udp);
    a.jmp(JEQ, R9, 17, tcp_udp);
    a.jmp(JEQ, R9, 1, icmp);
    a.ja(pass);

    a.bind(tcp_udp);
    a.need(R4, 4, pass);
    a.load(2, R5, R4, 2);
    a.be(R5, 16); // destination port
    a.forwards(&r.forwards, R9, R7, R5, redir);
    a.in_ranges(R5, &r.ranges, redir);
    a.ja(pass);

    a.bind(icmp);
    a.need(R4, 8, pass);
    a.load(1, R5, R4, 0); // type
    a.jmp(JEQ, R5, 3, error);
    a.jmp(JEQ, R5, 11, error);
    a.jmp(JEQ, R5, 12, error);
    a.jmp(JNE, R5, 0, pass);
    a.load(2, R5, R4, 4);
    a.be(R5, 16); // echo-reply identifier
    a.in_ranges(R5, &r.ranges, redir);
    a.ja(pass);

    // ICMP error: the quoted header was sent by rnat from a public port.
    a.bind(error);
    let quoted_tu = a.label();
    a.need(R4, 8 + 20, pass);
    a.load(1, R5, R4, 8);
    a.and32(R5, 0x0f);
    a.jmp(JLT, R5, 5, pass);
    a.lsh(R5, 2);
    a.load(1, R1, R4, 8 + 9); // quoted protocol
    a.load(4, R8, R4, 8 + 12);
    a.be(R8, 32); // quoted source address
    a.add_reg(R4, R5);
    a.add_imm(R4, 8); // quoted transport header
    a.need(R4, 8, pass);
    a.jmp(JEQ, R1, 6, quoted_tu);
    a.jmp(JEQ, R1, 17, quoted_tu);
    a.jmp(JNE, R1, 1, pass);
    a.load(1, R5, R4, 0);
    a.jmp(JNE, R5, 8, pass); // a quoted echo request
    a.load(2, R5, R4, 4);
    a.be(R5, 16);
    a.in_ranges(R5, &r.ranges, redir);
    a.ja(pass);
    a.bind(quoted_tu);
    a.load(2, R5, R4, 0);
    a.be(R5, 16); // quoted source port
    a.forwards(&r.forwards, R1, R8, R5, redir);
    a.in_ranges(R5, &r.ranges, redir);
    a.ja(pass);
}

fn inside(a: &mut Asm, r: &XdpRules, pass: Label, redir: Label) {
    let public = a.label();
    let routed = a.label();
    let tcp_udp = a.label();
    a.in_addrs(R7, &r.public, public);
    a.ja(routed);

    // Hairpin: to a public port.
    a.bind(public);
    a.jmp(JNE, R1, 0, routed);
    a.jmp(JEQ, R9, 6, tcp_udp);
    a.jmp(JEQ, R9, 17, tcp_udp);
    a.ja(routed);
    a.bind(tcp_udp);
    a.need(R4, 4, routed);
    a.load(2, R5, R4, 2);
    a.be(R5, 16);
    a.forwards(&r.forwards, R9, R7, R5, redir);
    a.in_ranges(R5, &r.ranges, redir);

    // Routed through the gateway: from the inside prefixes, not to the gateway itself.
    a.bind(routed);
    if !r.inside_prefixes.is_empty() {
        let src_ok = a.label();
        for &(net, mask) in &r.inside_prefixes {
            a.mov_reg(R0, R8);
            a.and32(R0, mask);
            a.jmp32(JEQ, R0, net & mask, src_ok);
        }
        a.ja(pass);
        a.bind(src_ok);
    }
    a.in_addrs(R7, &r.own, pass);
    a.jmp32(JEQ, R7, 0xffff_ffff, pass);
    a.mov_reg(R0, R7);
    a.and32(R0, 0xf000_0000);
    a.jmp32(JEQ, R0, 0xe000_0000, pass);
    a.ja(redir);
}

/// bpf(2).
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `attr` is a valid, initialised `repr(C)` prefix of `union bpf_attr` for `cmd`, of the
    // size passed; the kernel zero-extends shorter attributes. Pointers inside it are valid for
    // the duration of the call (callers keep their buffers alive).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    cvt(r as libc::c_int)
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf(2) and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    for (d, b) in n.iter_mut().zip(s.bytes().take(15)) {
        *d = b;
    }
    n
}

/// Creates an XSKMAP with `entries` slots (one per receive queue).
pub fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries.max(1),
        map_name: name16("rnat_xsks"),
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// Puts the XDP socket `xsk` in slot `queue` of `map`.
pub fn xskmap_set(map: RawFd, queue: u32, xsk: RawFd) -> io::Result<()> {
    let key = queue;
    let value = xsk as u32;
    let mut attr = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Empties slot `queue` of `map`.
pub fn xskmap_clear(map: RawFd, queue: u32) -> io::Result<()> {
    let key = queue;
    let mut attr = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const u32 as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

/// Loads `insns` as an XDP program; a refusal carries the verifier's log.
pub fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16("rnat_xdp"),
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            // Again with the verifier log, for the error message.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
                return Ok(owned(fd));
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(io::Error::new(
                e.kind(),
                format!(
                    "the kernel refused the XDP program: {e}; verifier: {}",
                    tail.join(" | ")
                ),
            ))
        }
    }
}

/// Runs `prog` once on `frame` (`BPF_PROG_TEST_RUN`) and returns its verdict.
pub fn test_run(prog: RawFd, frame: &[u8]) -> io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval)
}

/// Attaches `prog` to `ifindex` with a bpf_link; returns the link and the mode used.
pub fn attach(prog: RawFd, ifindex: u32, mode: XdpMode) -> io::Result<(OwnedFd, XdpMode)> {
    let try_mode = |flags: u32| {
        let mut attr = LinkCreateAttr {
            prog_fd: prog as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags,
        };
        bpf(BPF_LINK_CREATE, &mut attr).map(owned)
    };
    match mode {
        XdpMode::Native => try_mode(XDP_FLAGS_DRV_MODE).map(|l| (l, XdpMode::Native)),
        XdpMode::Generic => try_mode(XDP_FLAGS_SKB_MODE).map(|l| (l, XdpMode::Generic)),
        XdpMode::Auto => match try_mode(XDP_FLAGS_DRV_MODE) {
            Ok(l) => Ok((l, XdpMode::Native)),
            Err(native) => {
                let l = try_mode(XDP_FLAGS_SKB_MODE).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot attach XDP (native: {native}; generic: {e})"),
                    )
                })?;
                tracing::warn!(
                    ifindex,
                    "native XDP refused ({native}); attached in generic (skb) mode, which is slower"
                );
                Ok((l, XdpMode::Generic))
            }
        },
    }
}

/// A loaded, attached program and its XSKMAP. Dropping it closes the link, which detaches it.
#[derive(Debug)]
pub struct XdpProgram {
    // Field order = drop order: the link first (detach), then program and map.
    _link: OwnedFd,
    prog: OwnedFd,
    map: OwnedFd,
    ifindex: u32,
    mode: XdpMode,
}

impl XdpProgram {
    /// Generates, loads and attaches the program for `rules` on `ifindex`, with `queues` slots.
    pub fn attach(
        ifindex: u32,
        rules: &XdpRules,
        queues: u32,
        mode: XdpMode,
    ) -> io::Result<XdpProgram> {
        let map = create_xskmap(queues)?;
        let prog = load(&generate(rules, Redirect::Map(map.as_raw_fd())))?;
        let (link, mode) = attach(prog.as_raw_fd(), ifindex, mode)?;
        Ok(XdpProgram {
            _link: link,
            prog,
            map,
            ifindex,
            mode,
        })
    }

    pub fn map_fd(&self) -> RawFd {
        self.map.as_raw_fd()
    }

    pub fn prog_fd(&self) -> RawFd {
        self.prog.as_raw_fd()
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode it was attached in (never `Auto`).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_to_relative_offsets() {
        let rules = XdpRules {
            role: Role::Outside,
            public: vec![Ipv4Addr::new(203, 0, 113, 1)],
            pool_only: vec![],
            ranges: vec![(1024, 32767)],
            forwards: vec![(6, Ipv4Addr::new(203, 0, 113, 1), 8080)],
            inside_prefixes: vec![],
            own: vec![],
        };
        let p = generate(&rules, Redirect::Verdict);
        // Every jump lands inside the program, on an instruction.
        for (i, insn) in p.iter().enumerate() {
            let class = insn.code & 0x07;
            let op = insn.code & 0xf0;
            if (class == 0x05 || class == 0x06) && op != 0x80 && op != 0x90 {
                let to = i as isize + 1 + insn.off as isize;
                assert!(to >= 0 && (to as usize) < p.len(), "insn {i} jumps to {to}");
            }
        }
        assert_eq!(p.last().unwrap().code, 0x95);
    }
}
