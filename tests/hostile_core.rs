//! Hostile input at the core (issue 7): malformed frames, lying headers, garbage quotes, odd
//! options, table and port exhaustion, floods from one subscriber, martian addresses.
//!
//! Every malformed frame must be a counted drop with the right reason (`Engine::stats()`), the
//! engine must not panic, and good traffic must keep flowing after each one. Tests marked
//! `#[ignore = "bug: ..."]` show a defect found here; they fail until it is fixed.

mod frames;

use frames::*;
use rnat::nat::Direction::{self, Inbound, Outbound};
use rnat::nat::{Config, DropReason, Engine, Filtering, FrameMeta, Prefix, Time, Verdict, Worker};
use std::net::Ipv4Addr;

fn cfg() -> Config {
    Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.1.0/24".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        max_sessions: 4096,
        shards: 8,
        ..Config::default()
    }
}

struct Nat {
    w: Worker,
    scratch: Vec<u8>,
    now: Time,
    next_port: u16,
}

impl Nat {
    fn new(c: Config) -> Nat {
        Nat {
            w: Engine::new(c).unwrap().worker(),
            scratch: vec![0; 2048],
            now: Time::from_secs(1),
            next_port: 20000,
        }
    }

    fn run(&mut self, dir: Direction, f: &mut [u8]) -> Verdict {
        self.w
            .process(dir, f, FrameMeta::default(), self.now, &mut self.scratch)
    }

    fn dropped(&self, r: DropReason) -> u64 {
        self.w.engine().stats().dropped(r)
    }

    /// A new UDP flow from H1 and its reply both get through, checksums valid.
    fn good_traffic_flows(&mut self) {
        self.next_port += 1;
        let p = self.next_port;
        let mut f = udp(H1, p, SRV, 53, b"good");
        assert_eq!(
            self.run(Outbound, &mut f),
            Verdict::Forward,
            "good outbound"
        );
        let h = check(&f);
        assert_eq!(h.src, PUB);
        let mut r = udp(SRV, 53, PUB, h.sport, b"reply");
        assert_eq!(self.run(Inbound, &mut r), Verdict::Forward, "good inbound");
        let b = check(&r);
        assert_eq!((b.dst, b.dport), (H1, p));
    }

    /// `f` is dropped for `reason`, counted once, and good traffic still flows.
    #[track_caller]
    fn expect_drop(&mut self, what: &str, dir: Direction, mut f: Vec<u8>, reason: DropReason) {
        let before = self.dropped(reason);
        let v = self.run(dir, &mut f);
        assert_eq!(v, Verdict::Drop(reason), "{what}");
        assert_eq!(self.dropped(reason), before + 1, "{what}: counted once");
        self.good_traffic_flows();
    }
}

/// Rewrites the IPv4 header checksum after an edit.
fn refix(mut f: Vec<u8>) -> Vec<u8> {
    let hl = ((f[14] & 0x0f) as usize) * 4;
    f[24] = 0;
    f[25] = 0;
    let c = rnat::wire::checksum::checksum(&f[14..14 + hl.min(f.len() - 14)]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

fn set_total_len(mut f: Vec<u8>, n: u16) -> Vec<u8> {
    f[16..18].copy_from_slice(&n.to_be_bytes());
    refix(f)
}

/// Recomputes the ICMP checksum of an ICMP frame with a 20-byte IP header.
fn refix_icmp(mut f: Vec<u8>) -> Vec<u8> {
    f[36] = 0;
    f[37] = 0;
    let end = 14 + u16::from_be_bytes([f[16], f[17]]) as usize;
    let c = rnat::wire::checksum::checksum(&f[34..end]);
    f[36..38].copy_from_slice(&c.to_be_bytes());
    f
}

/// `f` with IPv4 options inserted (a multiple of 4 bytes), checksums fixed by etherparse's rules.
fn with_options(f: &[u8], opts: &[u8]) -> Vec<u8> {
    let mut v = f[..34].to_vec();
    v.extend_from_slice(opts);
    v.extend_from_slice(&f[34..]);
    v[14] = 0x40 | ((20 + opts.len()) / 4) as u8;
    let tl = u16::from_be_bytes([v[16], v[17]]) + opts.len() as u16;
    v[16..18].copy_from_slice(&tl.to_be_bytes());
    refix(v)
}

// ------------------------------------------------------------------ truncated and lying headers

#[test]
fn truncated_frames_are_counted_malformed() {
    let mut n = Nat::new(cfg());
    let full = udp(H1, 40000, SRV, 53, b"payload");
    // IPv4 EtherType but fewer than 20 bytes of header, or shorter than the total length.
    for cut in [14, 15, 24, 33, 34, 38, full.len() - 1] {
        n.expect_drop(
            &format!("outbound cut at {cut}"),
            Outbound,
            full[..cut].to_vec(),
            DropReason::Malformed,
        );
    }
    let back = udp(SRV, 53, PUB, 40000, b"payload");
    for cut in [20, 34, back.len() - 1] {
        n.expect_drop(
            &format!("inbound cut at {cut}"),
            Inbound,
            back[..cut].to_vec(),
            DropReason::Malformed,
        );
    }
    // Not even an Ethernet header: left to the kernel (counted there), not translated.
    let k = n.w.engine().stats().kernel;
    for cut in [0, 1, 13] {
        assert_eq!(n.run(Outbound, &mut full[..cut].to_vec()), Verdict::Kernel);
    }
    assert_eq!(n.w.engine().stats().kernel, k + 3);
    n.good_traffic_flows();
}

#[test]
fn ihl_below_five_is_malformed() {
    let mut n = Nat::new(cfg());
    for ihl in 0..5u8 {
        let mut f = udp(H1, 40000, SRV, 53, b"x");
        f[14] = 0x40 | ihl;
        n.expect_drop(&format!("IHL {ihl}"), Outbound, f, DropReason::Malformed);
        let mut f = udp(SRV, 53, PUB, 40000, b"x");
        f[14] = 0x40 | ihl;
        n.expect_drop(&format!("IHL {ihl} in"), Inbound, f, DropReason::Malformed);
    }
    // Version 6 in an IPv4 EtherType.
    let mut f = udp(H1, 40000, SRV, 53, b"x");
    f[14] = 0x65;
    n.expect_drop("version 6", Outbound, f, DropReason::Malformed);
    // IHL 15 (60-byte header) in a 20-byte header packet: total length below IHL.
    let mut f = udp(H1, 40000, SRV, 53, b"");
    f[14] = 0x4f;
    n.expect_drop("IHL 15 > total", Outbound, f, DropReason::Malformed);
}

#[test]
fn lying_total_lengths_are_malformed() {
    let mut n = Nat::new(cfg());
    let f = udp(H1, 40000, SRV, 53, b"0123456789");
    let len = (f.len() - 14) as u16;
    for (what, tl) in [
        ("longer than the frame", len + 1),
        ("64 KiB", 0xffff),
        ("below the header", 19),
        ("zero", 0),
        ("UDP header cut", 24),
    ] {
        n.expect_drop(
            what,
            Outbound,
            set_total_len(f.clone(), tl),
            DropReason::Malformed,
        );
    }
    // UDP length field past the IP total length.
    let mut g = f.clone();
    g[38..40].copy_from_slice(&(len + 9).to_be_bytes());
    n.expect_drop("UDP length lies", Outbound, g, DropReason::Malformed);
    let mut g = f.clone();
    g[38..40].copy_from_slice(&7u16.to_be_bytes());
    n.expect_drop("UDP length below 8", Outbound, g, DropReason::Malformed);
    // Shorter total length than the frame: the rest is Ethernet padding, translated and kept.
    let mut p = f.clone();
    p.extend_from_slice(&[0xaa; 12]);
    assert_eq!(n.run(Outbound, &mut p), Verdict::Forward);
    assert_eq!(&p[p.len() - 12..], &[0xaa; 12], "padding untouched");
    check(&p[..p.len() - 12]);
}

#[test]
fn bad_ip_checksums_are_counted_both_ways() {
    let mut n = Nat::new(cfg());
    n.good_traffic_flows();
    let mut f = udp(H1, 40000, SRV, 53, b"x");
    f[24] ^= 0x5a;
    n.expect_drop("outbound", Outbound, f, DropReason::BadChecksum);
    let mut f = udp(SRV, 53, PUB, 20001, b"x");
    f[25] ^= 0x01;
    n.expect_drop("inbound", Inbound, f, DropReason::BadChecksum);
    // With options: the checksum covers them.
    let mut f = with_options(&udp(H1, 40000, SRV, 53, b"x"), &[1, 1, 1, 0]);
    f[35] = 2;
    n.expect_drop("options changed", Outbound, f, DropReason::BadChecksum);
}

// ------------------------------------------------------------------ fragments

#[test]
fn garbage_fragments_never_translate_and_never_panic() {
    let mut n = Nat::new(cfg());
    // A first fragment too short for its transport header.
    let mut f = udp(H1, 40000, SRV, 53, b"");
    f.truncate(14 + 24);
    f[20] = 0x20; // MF, offset 0
    let f = set_total_len(f, 24);
    n.expect_drop(
        "first fragment, 4 bytes of UDP",
        Outbound,
        f,
        DropReason::Malformed,
    );
    let mut t = tcp(H1, 51000, SRV, 80, SYN, b"");
    t.truncate(14 + 20 + 12);
    t[20] = 0x20;
    let t = set_total_len(t, 32);
    n.expect_drop(
        "first fragment, 12 bytes of TCP",
        Outbound,
        t,
        DropReason::Malformed,
    );
    // Non-first fragments without a first fragment, at the largest offset (ending past 64 KiB),
    // or with MF and offset 0 but no transport header: held, never forwarded.
    for word in [0x1fffu16, 0x3fff, 0x0001, 0x2001] {
        for dir in [Outbound, Inbound] {
            let mut f = match dir {
                Outbound => udp(H1, 40100, SRV, 53, &[1; 100]),
                Inbound => udp(SRV, 53, PUB, 40100, &[1; 100]),
            };
            f[18..20].copy_from_slice(&(0x4000 | word).to_be_bytes()); // a fresh identification
            f[20..22].copy_from_slice(&word.to_be_bytes());
            let mut f = refix(f);
            let v = n.run(dir, &mut f);
            assert!(
                matches!(
                    v,
                    Verdict::Held
                        | Verdict::Drop(DropReason::Fragment)
                        | Verdict::Drop(DropReason::FragmentLimit)
                        | Verdict::Drop(DropReason::Malformed)
                ),
                "{dir:?} fragment word {word:#x}: {v:?}"
            );
            n.good_traffic_flows();
        }
    }
    // They time out and are counted; nothing leaks out later.
    n.now = Time::from_secs(60);
    let mut released = 0;
    n.w.take_released(|_, _| released += 1);
    assert_eq!(released, 0, "no first fragment ever came");
    n.good_traffic_flows();
}

// ------------------------------------------------------------------ TCP

#[test]
fn tcp_data_offsets_out_of_range_are_malformed() {
    let mut n = Nat::new(cfg());
    for doff in [0u8, 1, 4, 6, 15] {
        let mut f = tcp(H1, 51000, SRV, 80, SYN, b"");
        f[46] = doff << 4;
        // Below 5, or past the end of a 20-byte header.
        n.expect_drop(
            &format!("data offset {doff}"),
            Outbound,
            f,
            DropReason::Malformed,
        );
    }
    let mut f = tcp(SRV, 80, PUB, 51000, ACK, b"");
    f[46] = 0xf0;
    n.expect_drop("inbound data offset 15", Inbound, f, DropReason::Malformed);
}

#[test]
fn odd_options_are_carried_untouched() {
    // rnat does not interpret IPv4 or TCP options (a router forwards them): any bytes there are
    // kept as they are and the checksums stay right.
    let mut n = Nat::new(cfg());
    let opts: [&[u8]; 5] = [
        &[0, 0xff, 0xff, 0xff],                    // end of list, then garbage
        &[7, 0, 0, 0],                             // record route, length 0
        &[7, 40, 4, 0],                            // length past the header
        &[0x44, 8, 200, 0, 0, 0, 0, 0],            // timestamp, pointer past its length
        &[0x83, 7, 4, 10, 0, 0, 1, 0, 1, 1, 1, 1], // loose source route
    ];
    for o in opts {
        let mut f = with_options(&udp(H1, 40000, SRV, 53, b"x"), o);
        assert_eq!(n.run(Outbound, &mut f), Verdict::Forward, "options {o:?}");
        check(&f);
        assert_eq!(&f[34..34 + o.len()], o, "options kept");
    }
    // TCP options: zero-length option, option running past the data offset.
    let mut t = tcp(H1, 51000, SRV, 80, SYN, &[2, 0, 8, 250, 1, 1, 1, 1]);
    t[46] = 0x70; // 28-byte header: the "payload" is options
    rnat::wire::offload::fill_l4_checksum(&mut t).unwrap();
    let mut t2 = t.clone();
    assert_eq!(n.run(Outbound, &mut t2), Verdict::Forward);
    check(&t2);
    n.good_traffic_flows();
}

// ------------------------------------------------------------------ ICMP errors with garbage

#[test]
fn icmp_errors_quoting_garbage_are_dropped_with_reasons() {
    let mut n = Nat::new(cfg());
    let mut out = udp(H1, 40000, SRV, 53, b"query");
    assert_eq!(n.run(Outbound, &mut out), Verdict::Forward);
    let sent = out.clone();
    let good_quote = quote_of(&sent, 8);
    // The well-formed error gets through (baseline).
    let mut e = icmp_error(SRV, PUB, 3, 3, [0; 4], &good_quote);
    assert_eq!(n.run(Inbound, &mut e), Verdict::Forward, "valid error");

    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        (
            "quote shorter than an IP header",
            icmp_error(SRV, PUB, 3, 3, [0; 4], &good_quote[..12]),
            DropReason::Malformed,
        ),
        (
            "quote without ports",
            icmp_error(SRV, PUB, 3, 3, [0; 4], &good_quote[..22]),
            DropReason::Malformed,
        ),
        (
            "quoted version 6",
            icmp_error(SRV, PUB, 3, 3, [0; 4], &{
                let mut q = good_quote.clone();
                q[0] = 0x65;
                q
            }),
            DropReason::Malformed,
        ),
        (
            "quoted IHL 15",
            icmp_error(SRV, PUB, 3, 3, [0; 4], &{
                let mut q = good_quote.clone();
                q[0] = 0x4f;
                q
            }),
            DropReason::Malformed,
        ),
        (
            "quoted header checksum wrong",
            icmp_error(SRV, PUB, 3, 3, [0; 4], &{
                let mut q = good_quote.clone();
                q[10] ^= 0xff;
                q
            }),
            DropReason::BadChecksum,
        ),
        (
            "ICMP checksum wrong",
            {
                let mut f = icmp_error(SRV, PUB, 3, 3, [0; 4], &good_quote);
                f[36] ^= 0xff;
                f
            },
            DropReason::BadChecksum,
        ),
        (
            "quoting a non-first fragment",
            icmp_error(SRV, PUB, 3, 3, [0; 4], &{
                let mut q = good_quote.clone();
                q[7] = 1;
                let c = rnat::wire::checksum::update16(
                    u16::from_be_bytes([q[10], q[11]]),
                    u16::from_be_bytes([q[6], 0]),
                    u16::from_be_bytes([q[6], 1]),
                );
                q[10..12].copy_from_slice(&c.to_be_bytes());
                q
            }),
            DropReason::Malformed,
        ),
        (
            "quoting another public port",
            icmp_error(SRV, PUB, 3, 3, [0; 4], &{
                let mut q = good_quote.clone();
                q[20..22].copy_from_slice(&33333u16.to_be_bytes());
                q
            }),
            DropReason::NoMapping,
        ),
        (
            "quoting a packet from another address",
            icmp_error(
                SRV,
                PUB,
                3,
                3,
                [0; 4],
                &quote_of(&udp([203, 0, 113, 9], 40000, SRV, 53, b"q"), 8),
            ),
            DropReason::NoMapping,
        ),
        (
            "quoting a session that does not exist",
            icmp_error(
                SRV,
                PUB,
                3,
                3,
                [0; 4],
                &quote_of(&udp(PUB, 40000, SRV2, 53, b"q"), 8),
            ),
            DropReason::Filtered,
        ),
        (
            "quoting an unknown protocol",
            icmp_error(SRV, PUB, 3, 3, [0; 4], &{
                let mut q = good_quote.clone();
                q[9] = 47;
                let c = rnat::wire::checksum::update16(
                    u16::from_be_bytes([q[10], q[11]]),
                    u16::from_be_bytes([q[8], 17]),
                    u16::from_be_bytes([q[8], 47]),
                );
                q[10..12].copy_from_slice(&c.to_be_bytes());
                q
            }),
            DropReason::UnsupportedProtocol,
        ),
    ];
    for (what, f, r) in cases {
        n.expect_drop(what, Inbound, f, r);
    }
    // An ICMP message whose total length cuts the quote (lying IP total length).
    let f = icmp_error(SRV, PUB, 3, 3, [0; 4], &good_quote);
    let f = refix_icmp(set_total_len(f, 20 + 8 + 10));
    let f = refix(f);
    let mut g = f.clone();
    let v = n.run(Inbound, &mut g);
    assert!(
        matches!(
            v,
            Verdict::Drop(DropReason::Malformed | DropReason::BadChecksum)
        ),
        "cut quote: {v:?}"
    );
    n.good_traffic_flows();
    // Outbound: an inside host reporting on a packet it never received.
    let lie = icmp_error(
        H1,
        SRV,
        3,
        3,
        [0; 4],
        &quote_of(&udp(SRV, 53, H2, 40000, b"q"), 8),
    );
    n.expect_drop(
        "outbound error about another host",
        Outbound,
        lie,
        DropReason::Spoofed,
    );
}

// ------------------------------------------------------------------ exhaustion

/// Config with one shard, so the table's capacity is known: `max_sessions` + 64 slack.
fn small(max_sessions: usize) -> Config {
    Config {
        max_sessions,
        shards: 1,
        ..cfg()
    }
}

/// Opens new UDP flows from `host` until one is refused; returns how many were accepted.
fn fill(n: &mut Nat, host: [u8; 4], limit: u16) -> (u16, Verdict) {
    for i in 0..limit {
        let mut f = udp(host, 10000 + i, SRV, 53, b"flood");
        match n.run(Outbound, &mut f) {
            Verdict::Forward => {}
            v => return (i, v),
        }
    }
    (limit, Verdict::Forward)
}

#[test]
fn table_full_keeps_existing_flows_and_refuses_new_ones() {
    let mut n = Nat::new(small(32));
    n.good_traffic_flows();
    let before = n.dropped(DropReason::TableFull);
    // One host may take half the table (fair share); a second one fills the rest.
    let (half, _) = fill(&mut n, H2, 1000);
    assert_eq!(half, 16);
    let (accepted, v) = fill(&mut n, [192, 168, 1, 50], 1000);
    assert!(accepted > 0 && accepted < 16, "table never filled");
    // The refusal: ICMP admin-prohibited back to the sender (rate-limited), counted as table_full.
    assert!(
        matches!(v, Verdict::Reply(_) | Verdict::Drop(DropReason::TableFull)),
        "{v:?}"
    );
    assert_eq!(n.dropped(DropReason::TableFull), before + 1);
    // More new flows: refused, counted each time.
    for i in 0..10 {
        let mut f = udp(H1, 30000 + i, SRV, 53, b"new");
        assert_ne!(
            n.run(Outbound, &mut f),
            Verdict::Forward,
            "new flow in a full table"
        );
    }
    assert_eq!(n.dropped(DropReason::TableFull), before + 11);
    // Existing flows continue, both ways.
    let mut f = udp(H1, 20001, SRV, 53, b"again");
    assert_eq!(
        n.run(Outbound, &mut f),
        Verdict::Forward,
        "existing flow out"
    );
    let mut r = udp(SRV, 53, PUB, check(&f).sport, b"back");
    assert_eq!(n.run(Inbound, &mut r), Verdict::Forward, "existing flow in");
    let mut f = udp(H2, 10000, SRV, 53, b"flood");
    assert_eq!(
        n.run(Outbound, &mut f),
        Verdict::Forward,
        "first flood flow still live"
    );
    // Once the flood's sessions time out and are swept, new flows get in again.
    n.now = Time::from_secs(1000);
    n.w.engine().expire(n.now);
    n.good_traffic_flows();
}

#[test]
fn port_exhaustion_keeps_existing_flows_and_refuses_new_ones() {
    let mut n = Nat::new(Config {
        port_ranges: vec![rnat::nat::PortRange::new(40000, 40015)],
        ..cfg()
    });
    let (accepted, v) = fill(&mut n, H1, 100);
    assert_eq!(accepted, 16, "one public port per flow: {v:?}");
    assert_eq!(n.dropped(DropReason::NoPorts), 1);
    let mut f = udp(H1, 10003, SRV, 53, b"existing");
    assert_eq!(n.run(Outbound, &mut f), Verdict::Forward);
}

/// `--max-sessions` is documented as the upper bound on live sessions (`Config::max_sessions`:
/// "Upper bound on live sessions"), but each shard gets its share plus a slack of at least 64
/// (table.rs `Table::new`), so the engine accepts up to `shards * (max/shards + max(64, ...))`:
/// with one shard and max_sessions 32, 96 sessions; with the default 64 shards and
/// `--max-sessions 1000`, 5120.
#[test]
fn max_sessions_is_a_hard_bound() {
    let mut n = Nat::new(small(32));
    let (accepted, _) = fill(&mut n, H1, 1000);
    assert!(
        accepted <= 32,
        "max_sessions 32, but {accepted} sessions were accepted"
    );
}

#[test]
fn flood_from_one_host_does_not_starve_others_by_default() {
    let mut n = Nat::new(small(32));
    fill(&mut n, H2, 1000);
    let mut f = udp(H1, 5555, SRV, 53, b"victim");
    assert_eq!(
        n.run(Outbound, &mut f),
        Verdict::Forward,
        "H1 starved by H2's flood"
    );
}

#[test]
fn quotas_keep_a_flooding_host_from_starving_others() {
    let mut n = Nat::new(Config {
        max_sessions_per_subscriber: 16,
        max_ports_per_subscriber: 16,
        ..small(32)
    });
    let before = n.dropped(DropReason::Quota);
    let (accepted, v) = fill(&mut n, H2, 1000);
    assert_eq!(accepted, 16, "quota of 16: {v:?}");
    assert!(n.dropped(DropReason::Quota) > before, "counted as quota");
    for i in 0..5 {
        let mut f = udp(H1, 6000 + i, SRV, 53, b"victim");
        assert_eq!(n.run(Outbound, &mut f), Verdict::Forward, "H1 still served");
    }
    n.good_traffic_flows();
}

// ------------------------------------------------------------------ martian and spoofed addresses

#[test]
fn outbound_spoofed_sources_are_dropped() {
    let mut n = Nat::new(cfg());
    for src in [
        [10, 9, 9, 9],
        [192, 168, 2, 2],
        SRV,
        [0, 0, 0, 0],
        [203, 0, 113, 77],
    ] {
        n.expect_drop(
            &format!("source {src:?}"),
            Outbound,
            udp(src, 40000, SRV2, 53, b"spoof"),
            DropReason::Spoofed,
        );
    }
}

#[test]
fn inbound_to_private_or_unknown_addresses_is_never_translated() {
    // Routed straight to an inside address, or to an address that is not ours: the kernel's
    // business (its nftables drop or forwarding rules), never a translation.
    let mut n = Nat::new(cfg());
    n.good_traffic_flows();
    for dst in [H1, H2, GW_IN, [203, 0, 113, 2], [10, 0, 0, 1]] {
        let mut f = udp(SRV, 53, dst, 20001, b"direct");
        let v = n.run(Inbound, &mut f);
        assert_eq!(v, Verdict::Kernel, "to {dst:?}");
    }
}

/// An outside packet whose source is an inside address (or the gateway's own, loopback,
/// broadcast, multicast, 0.0.0.0) reaches an inside host whenever filtering lets its source
/// through: with endpoint-independent filtering, always. RFC 2827/3704 ingress filtering and
/// RFC 1812 5.3.7 say a router drops such martians; rnat translates them like any packet.
#[test]
fn inbound_martian_sources_are_dropped() {
    let mut n = Nat::new(Config {
        filtering_udp: Filtering::EndpointIndependent,
        ..cfg()
    });
    let mut f = udp(H1, 40000, SRV, 53, b"open");
    assert_eq!(n.run(Outbound, &mut f), Verdict::Forward);
    let mut bad = vec![];
    for src in [
        H2,
        GW_IN,
        PUB,
        [127, 0, 0, 1],
        [0, 0, 0, 0],
        [255, 255, 255, 255],
        [224, 0, 0, 1],
    ] {
        let mut f = udp(src, 53, PUB, 40000, b"martian");
        let v = n.run(Inbound, &mut f);
        if v == Verdict::Forward {
            bad.push(Ipv4Addr::from(src));
        }
    }
    assert!(
        bad.is_empty(),
        "delivered inside from martian sources: {bad:?}"
    );
}

/// Outbound packets to an inside, loopback or unspecified destination are translated (a mapping
/// and a session are created) although they can never leave through the outside: the gateway
/// then finds no outside route and drops them, but the table entry and the public port stay.
#[test]
fn outbound_to_martian_destinations_is_not_translated() {
    let mut n = Nat::new(cfg());
    let mut bad = vec![];
    for dst in [H2, [127, 0, 0, 1], [0, 0, 0, 0], [192, 168, 1, 255]] {
        let mut f = udp(H1, 40000, dst, 53, b"x");
        if n.run(Outbound, &mut f) == Verdict::Forward {
            bad.push(Ipv4Addr::from(dst));
        }
    }
    assert!(bad.is_empty(), "translated towards {bad:?}");
    assert_eq!(n.w.engine().mapping_count(), 0);
}
