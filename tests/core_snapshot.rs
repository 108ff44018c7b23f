//! Snapshots of the translation table (issue 7, "sessions survive restarts"): a table written by
//! one engine and restored into a fresh one keeps translating the same flows to the same public
//! ports and back to the same inside endpoints; expired records are dropped; corrupt, truncated,
//! foreign and future-version files are refused with an error, never a panic.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::snapshot::{self, VERSION};
use rnat::nat::{
    Config, Engine, FrameMeta, Prefix, SnapshotError, Time, Timeouts, Verdict, Worker,
};
use std::net::Ipv4Addr;
use std::time::Duration;

fn cfg(seed: u64) -> Config {
    Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        port_ranges: vec![rnat::nat::PortRange::new(1, 65535)],
        inside_prefixes: vec!["192.168.1.0/24".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        max_sessions: 4096,
        shards: 4,
        seed,
        timeouts: Timeouts {
            udp: Duration::from_secs(300),
            icmp: Duration::from_secs(60),
            ..Timeouts::default()
        },
        ..Config::default()
    }
}

fn run(w: &Worker, dir: rnat::nat::Direction, f: &mut [u8], at: Time) -> Verdict {
    let mut scratch = vec![0u8; 2048];
    w.process(dir, f, FrameMeta::default(), at, &mut scratch)
}

/// The flows of the round trip: (inside, inside port, protocol), to SRV.
const FLOWS: &[([u8; 4], u16, &str)] = &[
    (H1, 40000, "udp"),
    (H1, 40001, "tcp"),
    (H2, 40000, "udp"),
    (H2, 5555, "icmp"),
    (H1, 1000, "udp"),
];

fn outbound(src: [u8; 4], sport: u16, proto: &str, flags: u8) -> Vec<u8> {
    match proto {
        "udp" => udp(src, sport, SRV, 53, b"q"),
        "tcp" => tcp(src, sport, SRV, 443, flags, b""),
        "icmp" => echo_request(src, SRV, sport, 1),
        _ => unreachable!(),
    }
}

/// Translates each flow outbound (TCP through a full handshake); returns the public endpoints.
fn traffic(w: &Worker, at: Time) -> Vec<Hdr> {
    FLOWS
        .iter()
        .map(|&(src, sport, proto)| {
            let mut f = outbound(src, sport, proto, SYN);
            assert_eq!(run(w, Outbound, &mut f, at), Verdict::Forward);
            let h = check(&f);
            if proto == "tcp" {
                let mut sa = tcp(SRV, 443, h.src, h.sport, SYN | ACK, b"");
                assert_eq!(run(w, Inbound, &mut sa, at), Verdict::Forward);
                let mut ack = tcp(src, sport, SRV, 443, ACK, b"");
                assert_eq!(run(w, Outbound, &mut ack, at), Verdict::Forward);
            }
            h
        })
        .collect()
}

#[test]
fn round_trip_keeps_public_ports_and_inside_endpoints() {
    let a = Engine::new(cfg(1)).unwrap();
    let wa = a.worker();
    let t0 = Time::from_secs(1000);
    let public = traffic(&wa, t0);
    let snap = a.snapshot(t0 + Duration::from_secs(5));
    assert_eq!(snapshot::seed(&snap), Ok(1));

    // A new process: another seed, its clock starting afresh.
    let b = Engine::new(cfg(99)).unwrap();
    let now = Time::from_secs(400);
    let rep = b.restore(&snap, now).unwrap();
    assert_eq!(rep.records, FLOWS.len());
    assert_eq!(
        (rep.sessions, rep.mappings, rep.dropped()),
        (5, 5, 0),
        "{rep:?}"
    );
    assert_eq!(b.session_count(), 5);

    // The sessions came back with their state and idle age.
    let sessions = b.sessions(now);
    let tcp_s = sessions.iter().find(|s| s.proto.name() == "tcp").unwrap();
    assert_eq!(tcp_s.state, "ESTABLISHED");
    assert_eq!(tcp_s.idle, Duration::from_secs(5));
    assert!(sessions.iter().all(|s| s.idle == Duration::from_secs(5)));

    let wb = b.worker();
    for (&(src, sport, proto), h) in FLOWS.iter().zip(&public) {
        // Replies from the remote reach the same inside endpoint (no new session needed: APDF
        // filtering would drop an unsolicited packet).
        let mut r = reply_to(h, proto, b"r");
        assert_eq!(run(&wb, Inbound, &mut r, now), Verdict::Forward, "{proto}");
        let back = check(&r);
        assert_eq!((back.dst, back.dport), (src, sport), "{proto}");
        // Outbound keeps the same public port.
        let mut f = outbound(src, sport, proto, ACK);
        assert_eq!(run(&wb, Outbound, &mut f, now), Verdict::Forward);
        let out = check(&f);
        assert_eq!((out.src, out.sport), (h.src, h.sport), "{proto}");
    }
    // Still five sessions: nothing was created anew.
    assert_eq!(b.session_count(), 5);
    // A new flow of h1 to another destination uses h1's restored mapping (endpoint-independent).
    let mut f = udp(H1, 40000, SRV2, 53, b"q");
    assert_eq!(run(&wb, Outbound, &mut f, now), Verdict::Forward);
    assert_eq!(check(&f).sport, public[0].sport);
    // A restored port is owned: another inside host never gets it.
    let mut f = udp(H2, public[0].sport, SRV, 53, b"q");
    assert_eq!(run(&wb, Outbound, &mut f, now), Verdict::Forward);
    assert_ne!(check(&f).sport, public[0].sport);
}

#[test]
fn restore_into_the_same_table_counts_conflicts() {
    let a = Engine::new(cfg(1)).unwrap();
    traffic(&a.worker(), Time::from_secs(10));
    let snap = a.snapshot(Time::from_secs(10));
    let rep = a.restore(&snap, Time::from_secs(10)).unwrap();
    assert_eq!((rep.sessions, rep.conflicts), (0, FLOWS.len()), "{rep:?}");
    assert_eq!(a.session_count(), FLOWS.len());
}

#[test]
fn records_expired_meanwhile_are_dropped() {
    let a = Engine::new(cfg(1)).unwrap();
    let w = a.worker();
    // ICMP (60 s) idle for 100 s by the snapshot; UDP (300 s) idle for 100 s; TCP established.
    let mut ping = echo_request(H1, SRV, 7, 1);
    assert_eq!(
        run(&w, Outbound, &mut ping, Time::from_secs(0)),
        Verdict::Forward
    );
    let mut u = udp(H1, 40000, SRV, 53, b"q");
    assert_eq!(
        run(&w, Outbound, &mut u, Time::from_secs(70)),
        Verdict::Forward
    );
    let mut u2 = udp(H2, 40000, SRV, 53, b"q");
    assert_eq!(
        run(&w, Outbound, &mut u2, Time::from_secs(100)),
        Verdict::Forward
    );
    // The ICMP session expired at 60 s: not in a snapshot taken at 100 s.
    let snap = a.snapshot(Time::from_secs(100));
    assert_eq!(snapshot::seed(&snap), Ok(1));
    let b = Engine::new(cfg(2)).unwrap();
    let rep = b.restore(&snap, Time::from_secs(1000)).unwrap();
    assert_eq!(rep.records, 2);
    assert_eq!(rep.sessions, 2);

    // Restored into an engine with a shorter UDP timeout: the session idle for 30 s survives,
    // the one idle for 0 s too; with 20 s, only the fresh one.
    let short = |udp_s| {
        let mut c = cfg(3);
        c.timeouts.udp = Duration::from_secs(udp_s);
        Engine::new(c).unwrap()
    };
    let rep = short(20).restore(&snap, Time::from_secs(5)).unwrap();
    assert_eq!((rep.sessions, rep.expired), (1, 1), "{rep:?}");
    let rep = short(30).restore(&snap, Time::from_secs(5)).unwrap();
    assert_eq!(
        (rep.sessions, rep.expired),
        (1, 1),
        "idle 30 s of 30 s is expired: {rep:?}"
    );
    let rep = short(31).restore(&snap, Time::from_secs(5)).unwrap();
    assert_eq!((rep.sessions, rep.expired), (2, 0), "{rep:?}");

    // The restored session keeps its age: with 300 s and 30 s idle, it ends 270 s later.
    let c = Engine::new(cfg(4)).unwrap();
    let t = Time::from_secs(10_000);
    c.restore(&snap, t).unwrap();
    assert_eq!(c.expire(t + Duration::from_secs(269)), 0);
    assert_eq!(c.expire(t + Duration::from_secs(270)), 1);
    assert_eq!(c.session_count(), 1);
    assert_eq!(c.expire(t + Duration::from_secs(300)), 1);
    assert_eq!((c.session_count(), c.mapping_count()), (0, 0));
}

#[test]
fn records_the_configuration_no_longer_allows_are_dropped() {
    let a = Engine::new(cfg(1)).unwrap();
    traffic(&a.worker(), Time::from_secs(1));
    let snap = a.snapshot(Time::from_secs(1));
    // Another public address: nothing fits.
    let mut c = cfg(2);
    c.public_addrs = vec![Ipv4Addr::new(203, 0, 113, 9)];
    let rep = Engine::new(c)
        .unwrap()
        .restore(&snap, Time::from_secs(1))
        .unwrap();
    assert_eq!((rep.sessions, rep.invalid), (0, FLOWS.len()), "{rep:?}");
    // Only h2 is still an inside source.
    let mut c = cfg(2);
    c.inside_prefixes = vec!["192.168.1.3/32".parse().unwrap()];
    let rep = Engine::new(c)
        .unwrap()
        .restore(&snap, Time::from_secs(1))
        .unwrap();
    assert_eq!((rep.sessions, rep.invalid), (2, 3), "{rep:?}");
    // Port 1000 (kept from inside port 1000, class 0-1023) outside the new ranges.
    let mut c = cfg(2);
    c.port_ranges = vec![rnat::nat::PortRange::new(1024, 65535)];
    let rep = Engine::new(c)
        .unwrap()
        .restore(&snap, Time::from_secs(1))
        .unwrap();
    assert_eq!((rep.sessions, rep.invalid), (4, 1), "{rep:?}");
}

#[test]
fn empty_table_round_trips() {
    let a = Engine::new(cfg(7)).unwrap();
    let snap = a.snapshot(Time::ZERO);
    assert_eq!(snap.len(), 28);
    let rep = Engine::new(cfg(8))
        .unwrap()
        .restore(&snap, Time::ZERO)
        .unwrap();
    assert_eq!(rep, Default::default());
}

fn sample() -> Vec<u8> {
    let a = Engine::new(cfg(1)).unwrap();
    traffic(&a.worker(), Time::from_secs(1));
    a.snapshot(Time::from_secs(2))
}

#[test]
fn truncated_at_every_length_is_refused() {
    let snap = sample();
    let b = Engine::new(cfg(2)).unwrap();
    for n in 0..snap.len() {
        let e = b.restore(&snap[..n], Time::from_secs(3));
        assert!(e.is_err(), "accepted {n} of {} bytes", snap.len());
        assert!(snapshot::seed(&snap[..n]).is_err());
    }
    assert_eq!(b.session_count(), 0);
    // And with junk after the end.
    let mut long = snap.clone();
    long.push(0);
    assert!(matches!(
        b.restore(&long, Time::from_secs(3)),
        Err(SnapshotError::Length { .. })
    ));
}

#[test]
fn flipped_bytes_are_refused() {
    let snap = sample();
    let b = Engine::new(cfg(2)).unwrap();
    for i in 0..snap.len() {
        for bit in [0x01u8, 0x80, 0xff] {
            let mut bad = snap.clone();
            bad[i] ^= bit;
            let e = b.restore(&bad, Time::from_secs(3));
            assert!(e.is_err(), "byte {i} ^ {bit:#x} accepted");
        }
    }
    assert_eq!(b.session_count(), 0);
    assert!(b.restore(&snap, Time::from_secs(3)).is_ok());
}

#[test]
fn foreign_and_garbage_files_are_refused() {
    let b = Engine::new(cfg(2)).unwrap();
    let now = Time::from_secs(1);
    assert_eq!(
        b.restore(b"", now),
        Err(SnapshotError::Truncated { len: 0, need: 28 })
    );
    assert_eq!(
        b.restore(b"{\"sessions\": []}\n", now),
        Err(SnapshotError::NotASnapshot)
    );
    assert_eq!(
        b.restore(&[0u8; 4096], now),
        Err(SnapshotError::NotASnapshot)
    );
    // Garbage after a correct magic: any length, any content, never a panic.
    let mut x: u64 = 0x1234_5678;
    for len in 0..600 {
        let mut v = b"RNATSNAP".to_vec();
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as u8);
        }
        assert!(b.restore(&v, now).is_err());
    }
    // A header claiming 2^32-1 records in a short file.
    let mut v = sample();
    v[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        b.restore(&v, now),
        Err(SnapshotError::Truncated { .. })
    ));
    assert_eq!(b.session_count(), 0);
}

/// Rewrites the checksum after editing, to reach the checks behind it.
fn reseal(v: &mut [u8]) {
    let n = v.len() - 4;
    let c = snapshot::crc32(&v[..n]);
    v[n..].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn version_mismatch_is_refused() {
    let b = Engine::new(cfg(2)).unwrap();
    let mut v = sample();
    v[8..10].copy_from_slice(&(VERSION + 1).to_be_bytes());
    reseal(&mut v);
    let e = b.restore(&v, Time::from_secs(1)).unwrap_err();
    assert_eq!(
        e,
        SnapshotError::Version {
            found: VERSION + 1,
            supported: VERSION
        }
    );
    assert!(e.to_string().contains("version 2"), "{e}");
    // Another record length is refused too, even with the right version.
    let mut v = sample();
    v[10..12].copy_from_slice(&47u16.to_be_bytes());
    reseal(&mut v);
    assert!(matches!(
        b.restore(&v, Time::from_secs(1)),
        Err(SnapshotError::RecordLength { found: 47 })
    ));
}

#[test]
fn well_sealed_but_invalid_records_are_refused_as_a_whole() {
    let b = Engine::new(cfg(2)).unwrap();
    let v = sample();
    // protocol 99; a UDP record with a TCP state; unknown flags — in the last record, so the
    // records before it would be valid: nothing may be restored.
    let last = v.len() - 4 - 46;
    for (off, val) in [(0, 99u8), (1, 3), (2, 0x80), (3, 0x40)] {
        let mut bad = v.clone();
        bad[last + off] = val;
        if off == 1 && bad[last] != 17 {
            bad[last] = 17;
        }
        reseal(&mut bad);
        let e = b.restore(&bad, Time::from_secs(1)).unwrap_err();
        assert!(
            matches!(e, SnapshotError::BadRecord { index: 4, .. }),
            "{e:?}"
        );
    }
    assert_eq!(b.session_count(), 0);
}

#[test]
fn sessions_of_a_forward_come_back_on_the_forward() {
    let with_fwd = |seed| {
        let mut c = cfg(seed);
        c.forwards = vec!["udp:5000=192.168.1.10:5000".parse().unwrap()];
        c
    };
    let a = Engine::new(with_fwd(1)).unwrap();
    let w = a.worker();
    let mut q = udp(SRV, 9, PUB, 5000, b"x");
    assert_eq!(
        run(&w, Inbound, &mut q, Time::from_secs(1)),
        Verdict::Forward
    );
    let snap = a.snapshot(Time::from_secs(1));
    let b = Engine::new(with_fwd(2)).unwrap();
    let rep = b.restore(&snap, Time::from_secs(1)).unwrap();
    assert_eq!((rep.sessions, rep.mappings), (1, 0), "{rep:?}");
    assert!(b.sessions(Time::from_secs(1))[0].inbound_created);
    // Without the forward in the new configuration, the record is invalid.
    let rep = Engine::new(cfg(3))
        .unwrap()
        .restore(&snap, Time::from_secs(1))
        .unwrap();
    assert_eq!(rep.invalid, 1, "{rep:?}");
}
