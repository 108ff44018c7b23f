//! Explicit port mappings (RFC 6888 REQ-9: what PCP and NAT-PMP ask for) in the core: created,
//! renewed and deleted through the engine API, checked with byte-level frames through the
//! engine, expired by `Engine::expire` on a virtual clock.

mod frames;

use frames::*;
use rnat::nat::Direction::{Inbound, Outbound};
use rnat::nat::{
    Config, Engine, FrameMeta, MapError, MapRequest, Prefix, Proto, Time, Verdict, Worker,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

fn engine(ports_per_subscriber: u32) -> Arc<Engine> {
    Engine::new(Config {
        public_addrs: vec![Ipv4Addr::from(PUB)],
        inside_prefixes: vec!["192.168.1.0/24".parse::<Prefix>().unwrap()],
        inside_addr: Some(Ipv4Addr::from(GW_IN)),
        max_sessions: 4096,
        shards: 4,
        max_ports_per_subscriber: ports_per_subscriber,
        port_cooldown: Duration::from_secs(120),
        ..Config::default()
    })
    .unwrap()
}

fn run(w: &Worker, dir: rnat::nat::Direction, f: &mut [u8], at: u64) -> Verdict {
    let mut scratch = vec![0u8; 2048];
    w.process(
        dir,
        f,
        FrameMeta::default(),
        Time::from_secs(at),
        &mut scratch,
    )
}

fn req(proto: Proto, host: [u8; 4], port: u16, suggested: u16, lifetime: u64) -> MapRequest {
    MapRequest {
        proto,
        inside: SocketAddrV4::new(host.into(), port),
        suggested_port: suggested,
        suggested_addr: None,
        lifetime: Duration::from_secs(lifetime),
        prefer_failure: false,
        nonce: None,
    }
}

fn at(s: u64) -> Time {
    Time::from_secs(s)
}

#[test]
fn rfc6888_req9_map_opens_an_inbound_port_to_any_remote() {
    let e = engine(0);
    let w = e.worker();
    let g = e.map(&req(Proto::Tcp, H1, 8080, 0, 600), at(1)).unwrap();
    assert_eq!(*g.public.ip(), Ipv4Addr::from(PUB));
    assert_eq!(
        g.public.port(),
        8080,
        "the inside port is preserved when free"
    );
    assert_eq!(g.lifetime, Duration::from_secs(600));
    // Default filtering is address- and port-dependent; the explicit mapping is open to anyone.
    for (remote, sport) in [(SRV, 40000u16), (SRV2, 50000)] {
        let mut syn = tcp(remote, sport, PUB, 8080, SYN, b"");
        assert_eq!(run(&w, Inbound, &mut syn, 2), Verdict::Forward);
        let h = check(&syn);
        assert_eq!((h.src, h.dst, h.dport), (remote, H1, 8080));
        let mut synack = tcp(H1, 8080, remote, sport, SYN | ACK, b"");
        assert_eq!(run(&w, Outbound, &mut synack, 2), Verdict::Forward);
        let h = check(&synack);
        assert_eq!((h.src, h.sport), (PUB, 8080));
    }
    // UDP on the same port is not mapped.
    let mut u = udp(SRV, 1, PUB, 8080, b"x");
    assert!(matches!(run(&w, Inbound, &mut u, 2), Verdict::Drop(_)));
    assert_eq!(e.explicit_mappings(at(2)).len(), 1);
    assert_eq!(e.explicit_mappings(at(2))[0].sessions, 2);
}

#[test]
fn rfc6888_req9_renew_keeps_the_port_and_a_dynamic_mapping_is_reused() {
    let e = engine(0);
    let w = e.worker();
    let first = e.map(&req(Proto::Udp, H1, 5000, 0, 60), at(1)).unwrap();
    let again = e
        .map(&req(Proto::Udp, H1, 5000, 7777, 120), at(30))
        .unwrap();
    assert_eq!(again.public, first.public, "renewal: same port");
    assert_eq!(
        e.explicit_mappings(at(30))[0].expires_in,
        Duration::from_secs(120)
    );
    // An endpoint that already has a dynamic mapping gets that mapping's port (RFC 4787 REQ-1).
    let mut out = udp(H2, 6000, SRV, 53, b"q");
    let mut taken = udp(H1, 6000, SRV, 53, b"q");
    assert_eq!(run(&w, Outbound, &mut taken, 1), Verdict::Forward);
    assert_eq!(run(&w, Outbound, &mut out, 1), Verdict::Forward);
    let dynamic = check(&out).sport;
    assert_ne!(
        dynamic, 6000,
        "h1 holds public port 6000, so h2 got another"
    );
    let g = e.map(&req(Proto::Udp, H2, 6000, 0, 1000), at(2)).unwrap();
    assert_eq!(g.public.port(), dynamic);
    // Now open to everyone (not only to SRV), and kept after its session ends.
    let mut from_other = udp(SRV2, 9, PUB, dynamic, b"hi");
    assert_eq!(run(&w, Inbound, &mut from_other, 3), Verdict::Forward);
    assert_eq!(check(&from_other).dst, H2);
    e.expire(at(3 + 400));
    let mut later = udp(SRV2, 10, PUB, dynamic, b"hi");
    assert_eq!(
        run(&w, Inbound, &mut later, 404),
        Verdict::Forward,
        "the mapping lives for its lifetime, not its sessions'"
    );
}

#[test]
fn rfc6888_req9_suggested_port_honoured_or_refused() {
    let e = engine(0);
    let w = e.worker();
    let g = e.map(&req(Proto::Tcp, H1, 22, 2222, 60), at(1)).unwrap();
    assert_eq!(
        g.public.port(),
        2222,
        "a free suggested port in the ranges is honoured"
    );
    // Suggested port taken by h1: h2 gets another one in the ranges ...
    let g2 = e.map(&req(Proto::Tcp, H2, 22, 2222, 60), at(1)).unwrap();
    assert_ne!(g2.public.port(), 2222);
    assert!(g2.public.port() >= 1024);
    // ... or, with PREFER_FAILURE, nothing.
    let mut r = req(Proto::Tcp, [192, 168, 1, 4], 22, 2222, 60);
    r.prefer_failure = true;
    assert_eq!(e.map(&r, at(1)), Err(MapError::CannotProvideExternal));
    // A suggested port outside rnat's ranges (80 is the kernel's) is not given.
    let g3 = e
        .map(&req(Proto::Tcp, [192, 168, 1, 5], 80, 80, 60), at(1))
        .unwrap();
    assert_ne!(g3.public.port(), 80);
    // Another public address than the subscriber's paired one cannot be provided.
    let mut r = req(Proto::Tcp, [192, 168, 1, 6], 22, 0, 60);
    r.suggested_addr = Some(Ipv4Addr::new(203, 0, 113, 99));
    r.prefer_failure = true;
    assert_eq!(e.map(&r, at(1)), Err(MapError::CannotProvideExternal));
    r.prefer_failure = false;
    assert_eq!(e.map(&r, at(1)).unwrap().public.ip(), &Ipv4Addr::from(PUB));
    // The mapping really translates.
    let mut syn = tcp(SRV, 4000, PUB, g2.public.port(), SYN, b"");
    assert_eq!(run(&w, Inbound, &mut syn, 2), Verdict::Forward);
    assert_eq!((check(&syn).dst, check(&syn).dport), (H2, 22));
}

#[test]
fn rfc6888_req9_quota_and_authorization() {
    let e = engine(2);
    e.map(&req(Proto::Udp, H1, 1001, 0, 60), at(1)).unwrap();
    e.map(&req(Proto::Udp, H1, 1002, 0, 60), at(1)).unwrap();
    assert_eq!(
        e.map(&req(Proto::Udp, H1, 1003, 0, 60), at(1)),
        Err(MapError::Quota),
        "the per-subscriber port quota counts explicit mappings"
    );
    // The quota also holds for traffic: h1 has no port left for a new flow.
    let w = e.worker();
    let mut f = udp(H1, 1004, SRV, 53, b"x");
    assert!(matches!(
        run(&w, Outbound, &mut f, 1),
        Verdict::Reply(_) | Verdict::Drop(_)
    ));
    // Deleting gives the port back to the quota.
    e.map(&req(Proto::Udp, H1, 1001, 0, 0), at(2)).unwrap();
    e.map(&req(Proto::Udp, H1, 1003, 0, 60), at(2)).unwrap();
    // Not an inside host, the gateway itself, ICMP, port 0.
    for (r, want) in [
        (
            req(Proto::Udp, [10, 0, 0, 1], 1, 0, 60),
            MapError::NotAuthorized,
        ),
        (req(Proto::Udp, GW_IN, 1, 0, 60), MapError::NotAuthorized),
        (req(Proto::Udp, H2, 0, 0, 60), MapError::NotAuthorized),
        (
            req(Proto::Icmp, H2, 1, 0, 60),
            MapError::UnsupportedProtocol,
        ),
    ] {
        assert_eq!(e.map(&r, at(3)), Err(want), "{r:?}");
    }
}

#[test]
fn rfc6888_req9_nonce_protects_a_mapping() {
    let e = engine(0);
    let mut r = req(Proto::Udp, H1, 3000, 0, 60);
    r.nonce = Some([1; 12]);
    e.map(&r, at(1)).unwrap();
    let mut other = r;
    other.nonce = Some([2; 12]);
    assert_eq!(e.map(&other, at(2)), Err(MapError::NotAuthorized));
    other.lifetime = Duration::ZERO;
    assert_eq!(e.map(&other, at(2)), Err(MapError::NotAuthorized));
    r.lifetime = Duration::ZERO;
    assert_eq!(e.map(&r, at(2)).unwrap().lifetime, Duration::ZERO);
    assert_eq!(e.explicit_count(), 0);
}

#[test]
fn rfc6888_req9_lifetime_expires_on_the_virtual_clock() {
    let e = engine(0);
    let w = e.worker();
    let g = e.map(&req(Proto::Udp, H1, 4000, 0, 100), at(10)).unwrap();
    let port = g.public.port();
    e.expire(at(109));
    assert_eq!(e.explicit_count(), 1);
    let mut q = udp(SRV, 7, PUB, port, b"x");
    assert_eq!(run(&w, Inbound, &mut q, 109), Verdict::Forward);
    // The session ends at its own idle timeout; the mapping lives until second 110.
    e.expire(at(110));
    assert_eq!(e.explicit_count(), 0);
    assert_eq!(
        e.mapping_count(),
        1,
        "still has a live session: ordinary now"
    );
    // Ordinary again: filtered for a stranger (address- and port-dependent by default).
    let mut stranger = udp(SRV2, 7, PUB, port, b"x");
    assert!(matches!(
        run(&w, Inbound, &mut stranger, 111),
        Verdict::Drop(_)
    ));
    e.expire(at(109 + 400));
    assert_eq!(e.mapping_count(), 0, "gone with its last session");
    // A mapping without sessions ends at once, and its port rests for the cool-down.
    let g = e.map(&req(Proto::Udp, H2, 4001, 0, 5), at(1000)).unwrap();
    e.expire(at(1005));
    assert_eq!((e.explicit_count(), e.mapping_count()), (0, 0));
    let mut late = udp(SRV, 7, PUB, g.public.port(), b"x");
    assert!(matches!(
        run(&w, Inbound, &mut late, 1006),
        Verdict::Drop(_)
    ));
    let again = e.map(
        &req(Proto::Udp, [192, 168, 1, 9], 1, g.public.port(), 5),
        at(1006),
    );
    assert_ne!(
        again.unwrap().public.port(),
        g.public.port(),
        "cooling down"
    );
}

#[test]
fn rfc6888_req9_lifetime_zero_deletes() {
    let e = engine(0);
    let w = e.worker();
    let g = e.map(&req(Proto::Tcp, H1, 8443, 0, 600), at(1)).unwrap();
    let d = e.map(&req(Proto::Tcp, H1, 8443, 0, 0), at(2)).unwrap();
    assert_eq!((d.public, d.lifetime), (g.public, Duration::ZERO));
    assert_eq!((e.explicit_count(), e.mapping_count()), (0, 0));
    let mut syn = tcp(SRV, 4000, PUB, g.public.port(), SYN, b"");
    assert!(matches!(run(&w, Inbound, &mut syn, 3), Verdict::Drop(_)));
    // Deleting what does not exist succeeds; "all ports" deletes every mapping of the host.
    assert!(e.map(&req(Proto::Tcp, H1, 8443, 0, 0), at(3)).is_ok());
    for p in [1000, 1001, 1002] {
        e.map(&req(Proto::Tcp, H1, p, 0, 60), at(3)).unwrap();
    }
    e.map(&req(Proto::Udp, H1, 1000, 0, 60), at(3)).unwrap();
    assert_eq!(e.unmap_all(Proto::Tcp, Ipv4Addr::from(H1), at(4)), 3);
    assert_eq!(e.explicit_count(), 1, "the UDP one stays");
}

#[test]
fn rfc6888_req9_static_forward_is_not_ours() {
    let mut cfg = engine(0).config().clone();
    cfg.forwards = vec!["tcp:8080=192.168.1.2:80".parse().unwrap()];
    let e = Engine::new(cfg).unwrap();
    let g = e.map(&req(Proto::Tcp, H1, 80, 0, 60), at(1)).unwrap();
    assert_eq!(g.public.port(), 8080, "the forward's port is reported");
    assert_eq!(e.explicit_count(), 0);
    assert_eq!(
        e.map(&req(Proto::Tcp, H1, 80, 0, 0), at(1)),
        Err(MapError::NotAuthorized)
    );
    assert_eq!(e.mapping_count(), 1);
}

#[test]
fn rfc6888_req9_explicit_mapping_is_reachable_by_hairpin() {
    let e = engine(0);
    let w = e.worker();
    let g = e.map(&req(Proto::Udp, H1, 9000, 0, 60), at(1)).unwrap();
    let mut f = udp(H2, 33000, PUB, g.public.port(), b"hairpin");
    assert_eq!(run(&w, Outbound, &mut f, 2), Verdict::Hairpin);
    let h = check(&f);
    assert_eq!((h.src, h.dst, h.dport), (PUB, H1, 9000));
}

#[test]
fn rfc6887_peer_creates_and_refreshes_a_session() {
    let e = engine(0);
    let w = e.worker();
    let inside = SocketAddrV4::new(H1.into(), 7000);
    let remote = SocketAddrV4::new(SRV.into(), 443);
    let (public, life) = w.peer(Proto::Udp, inside, remote, at(1)).unwrap();
    assert_eq!(life, Duration::from_secs(300), "the UDP idle timeout");
    assert_eq!(e.session_count(), 1);
    // The remote's traffic comes in through it (filtering allows this peer).
    let mut back = udp(SRV, 443, PUB, public.port(), b"x");
    assert_eq!(run(&w, Inbound, &mut back, 2), Verdict::Forward);
    assert_eq!(check(&back).dst, H1);
    // Refreshing it keeps it alive past its first timeout.
    w.peer(Proto::Udp, inside, remote, at(250)).unwrap();
    e.expire(at(400));
    assert_eq!(e.session_count(), 1);
    // The same endpoint's outbound traffic uses the same public port.
    let mut out = udp(H1, 7000, SRV2, 53, b"q");
    assert_eq!(run(&w, Outbound, &mut out, 401), Verdict::Forward);
    assert_eq!(check(&out).sport, public.port());
    // Refused: a martian remote, a remote port 0, a non-inside host.
    let bad = [
        (inside, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1)),
        (inside, SocketAddrV4::new(SRV.into(), 0)),
        (SocketAddrV4::new([10, 9, 9, 9].into(), 1), remote),
    ];
    for (i, r) in bad {
        assert_eq!(
            w.peer(Proto::Udp, i, r, at(402)),
            Err(MapError::NotAuthorized)
        );
    }
}

#[test]
fn rfc6888_req9_sessions_of_an_explicit_mapping_survive_a_snapshot() {
    let e = engine(0);
    let w = e.worker();
    let g = e.map(&req(Proto::Udp, H1, 5353, 0, 600), at(1)).unwrap();
    let mut q = udp(SRV, 7, PUB, g.public.port(), b"x");
    assert_eq!(run(&w, Inbound, &mut q, 2), Verdict::Forward);
    let snap = e.snapshot(at(3));
    let fresh = engine(0);
    let rep = fresh.restore(&snap, at(3)).unwrap();
    assert_eq!(rep.sessions, 1, "{rep:?}");
    // The session comes back on the same public port; the explicit mapping itself is for the
    // client to re-create (PCP epoch), and re-creating it gives the same port.
    assert_eq!(fresh.explicit_count(), 0);
    let again = fresh
        .map(&req(Proto::Udp, H1, 5353, 0, 600), at(4))
        .unwrap();
    assert_eq!(again.public, g.public);
}
