//! Seeing into the NAT: what the running gateway reports about itself, all served by the tokio
//! control loop and never by the packet path.
//!
//! - this file: [`Observer`] (the engine and gateway counters as the control plane reads them) and
//!   the reports it builds: [`SessionRow`] and [`StatsReport`], their table and Prometheus forms;
//! - [`socket`]: the control socket (`rnat sessions|stats|flush|top` talk to it);
//! - [`metrics`]: the Prometheus HTTP endpoint (`--metrics-listen`);
//! - [`maplog`]: the mapping log (`--log-mappings`);
//! - [`top`]: the `rnat top` client view.

pub mod maplog;
pub mod metrics;
pub mod pcap;
pub mod socket;
pub mod top;

use crate::gateway::{GatewayStats, engine_time};
use crate::nat::{DropReason, Engine, Proto, SessionInfo, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What the control plane reads to report on the gateway.
#[derive(Clone)]
pub struct Observer {
    pub engine: Arc<Engine>,
    pub gateway: Arc<GatewayStats>,
    /// The engine's clock epoch.
    pub epoch: Instant,
    /// The PCP/NAT-PMP server's counters, when it runs.
    pub pcp: Option<Arc<crate::control::pcp::PcpStats>>,
}

/// One session, as `rnat sessions --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub proto: String,
    pub inside: SocketAddrV4,
    pub public: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: String,
    pub idle_s: u64,
    pub expires_in_s: u64,
    pub pkts_out: u64,
    pub pkts_in: u64,
    pub bytes: u64,
    pub inbound_created: bool,
}

impl From<&SessionInfo> for SessionRow {
    fn from(s: &SessionInfo) -> Self {
        SessionRow {
            proto: s.proto.name().to_string(),
            inside: s.inside,
            public: s.public,
            remote: s.remote,
            state: s.state.to_string(),
            idle_s: s.idle.as_secs(),
            expires_in_s: s.expires_in.as_secs(),
            pkts_out: s.pkts_out as u64,
            pkts_in: s.pkts_in as u64,
            bytes: s.bytes,
            inbound_created: s.inbound_created,
        }
    }
}

/// Which sessions to show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFilter {
    /// "tcp", "udp" or "icmp".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Matches the inside, public or remote address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<Ipv4Addr>,
}

impl SessionFilter {
    pub fn matches(&self, s: &SessionInfo) -> bool {
        self.proto.as_deref().is_none_or(|p| p == s.proto.name())
            && self
                .addr
                .is_none_or(|a| *s.inside.ip() == a || *s.public.ip() == a || *s.remote.ip() == a)
    }
}

/// Packets or bytes, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerDirection {
    /// Inside to outside.
    pub outbound: u64,
    /// Outside to inside.
    pub inbound: u64,
}

/// Public ports of one protocol on one public address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortUse {
    /// Public ports (ICMP identifiers) held by a live mapping.
    pub used: u64,
    /// Ports in rnat's ranges.
    pub capacity: u64,
}

/// The layer-2 counters of the gateway loop ([`GatewayStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayCounters {
    pub no_route: u64,
    pub no_neighbour: u64,
    pub arp_requests: u64,
    pub fragments_sent: u64,
    pub tx_errors: u64,
    pub replies_sent: u64,
}

/// What became of unsolicited inbound SYNs (RFC 5382 REQ-4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynCounters {
    /// Held for the hold time.
    pub held: u64,
    /// Answered with ICMP port-unreachable after it.
    pub rejected: u64,
    /// Dropped silently because an outbound SYN for the connection was translated.
    pub cancelled: u64,
    /// Forgotten after it (policy `drop`, or the ICMP rate limit).
    pub forgotten: u64,
    /// Not held: the store was full.
    pub store_full: u64,
    /// Held now.
    pub holding: u64,
}

/// Port blocks (`--port-block-size`, RFC 6888 REQ-14).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockReport {
    /// Ports per block.
    pub size: u16,
    /// Blocks held now.
    pub in_use: u64,
    /// Subscribers holding at least one block.
    pub subscribers: u64,
    /// Ports of the held blocks in use by mappings (all protocols).
    pub ports_in_use: u64,
    /// The blocks: "INSIDE PUBLIC:FIRST-LAST".
    pub blocks: Vec<String>,
}

/// Everything `rnat stats` and the metrics endpoint report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    pub uptime_s: u64,
    /// Translated packets.
    pub packets: PerDirection,
    /// Translated bytes.
    pub bytes: PerDirection,
    /// Frames left to the host kernel (not NAT traffic).
    pub kernel: u64,
    /// ICMP errors rnat generated (time exceeded, fragmentation needed).
    pub icmp_generated: u64,
    pub mappings_created: u64,
    pub sessions_created: u64,
    /// Unsolicited inbound SYNs (RFC 5382 REQ-4).
    #[serde(default)]
    pub unsolicited_syn: SynCounters,
    /// Drops by reason (every reason listed, zeros included).
    pub drops: BTreeMap<String, u64>,
    /// Live sessions.
    pub sessions: u64,
    /// Live mappings.
    pub mappings: u64,
    /// Live sessions by protocol, then state.
    pub sessions_by_state: BTreeMap<String, BTreeMap<String, u64>>,
    /// Public ports by public address, then protocol.
    pub ports: BTreeMap<String, BTreeMap<String, PortUse>>,
    pub gateway: GatewayCounters,
    /// The PCP/NAT-PMP server, when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcp: Option<crate::control::pcp::PcpReport>,
    /// Port blocks, in block mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_blocks: Option<BlockReport>,
}

const PROTOS: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Icmp];

impl Observer {
    pub fn new(engine: Arc<Engine>, gateway: Arc<GatewayStats>, epoch: Instant) -> Self {
        Observer {
            engine,
            gateway,
            epoch,
            pcp: None,
        }
    }

    /// Reports the PCP server's counters too.
    pub fn with_pcp(mut self, stats: Arc<crate::control::pcp::PcpStats>) -> Self {
        self.pcp = Some(stats);
        self
    }

    /// The engine's current time.
    pub fn now(&self) -> Time {
        engine_time(self.epoch, Instant::now())
    }

    /// The sessions matching `f`, sorted by protocol, inside and remote endpoint. Explicit
    /// (PCP/NAT-PMP) mappings are listed too, as rows with state `PCP`, remote `0.0.0.0:0` and
    /// the mapping's remaining lifetime.
    pub fn sessions(&self, f: &SessionFilter) -> Vec<SessionRow> {
        let now = self.now();
        let explicit = self
            .engine
            .explicit_mappings(now)
            .into_iter()
            .map(|m| SessionInfo {
                proto: m.proto,
                inside: m.inside,
                public: m.public,
                remote: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                state: "PCP",
                idle: std::time::Duration::ZERO,
                expires_in: m.expires_in,
                pkts_out: 0,
                pkts_in: 0,
                bytes: 0,
                inbound_created: false,
            });
        let mut v: Vec<SessionInfo> = self
            .engine
            .sessions(now)
            .into_iter()
            .chain(explicit)
            .filter(|s| f.matches(s))
            .collect();
        v.sort_by_key(|s| (s.proto as u8, s.inside, s.remote));
        v.iter().map(SessionRow::from).collect()
    }

    /// Removes the sessions of one inside address (all with `None`); returns how many.
    pub fn flush(&self, inside: Option<Ipv4Addr>) -> usize {
        self.engine.flush(inside, self.now())
    }

    pub fn stats(&self) -> StatsReport {
        let s = self.engine.stats();
        let cfg = self.engine.config();
        let sessions = self.engine.sessions(self.now());
        let mut by_state: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut mappings = std::collections::HashSet::new();
        for x in &sessions {
            *by_state
                .entry(x.proto.name().into())
                .or_default()
                .entry(x.state.into())
                .or_default() += 1;
            mappings.insert((x.proto as u8, x.public));
        }
        let explicit = self.engine.explicit_mappings(self.now());
        for m in &explicit {
            mappings.insert((m.proto as u8, m.public));
        }
        let capacity: u64 = cfg.port_ranges.iter().map(|r| r.len() as u64).sum();
        let mut ports: BTreeMap<String, BTreeMap<String, PortUse>> = BTreeMap::new();
        for a in &cfg.public_addrs {
            let e = ports.entry(a.to_string()).or_default();
            for p in PROTOS {
                e.insert(p.name().into(), PortUse { used: 0, capacity });
            }
        }
        for (p, public) in &mappings {
            let name = PROTOS[*p as usize].name();
            if let Some(u) = ports
                .get_mut(&public.ip().to_string())
                .and_then(|m| m.get_mut(name))
            {
                u.used += 1;
            }
        }
        let g = &self.gateway;
        let ld = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        StatsReport {
            uptime_s: self.epoch.elapsed().as_secs(),
            packets: PerDirection {
                outbound: s.pkts_out,
                inbound: s.pkts_in,
            },
            bytes: PerDirection {
                outbound: s.bytes_out,
                inbound: s.bytes_in,
            },
            kernel: s.kernel,
            icmp_generated: s.icmp_generated,
            mappings_created: s.mappings_created,
            sessions_created: s.sessions_created,
            unsolicited_syn: SynCounters {
                held: s.syn_held,
                rejected: s.syn_rejected,
                cancelled: s.syn_cancelled,
                forgotten: s.syn_forgotten,
                store_full: s.syn_hold_full,
                holding: self.engine.held_syns() as u64,
            },
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), s.dropped(*r)))
                .collect(),
            sessions: sessions.len() as u64,
            mappings: mappings.len() as u64,
            sessions_by_state: by_state,
            ports,
            gateway: GatewayCounters {
                no_route: ld(&g.no_route),
                no_neighbour: ld(&g.no_neighbour),
                arp_requests: ld(&g.arp_requests),
                fragments_sent: ld(&g.fragments_sent),
                tx_errors: ld(&g.tx_errors),
                replies_sent: ld(&g.replies_sent),
            },
            pcp: self.pcp.as_ref().map(|p| p.report(explicit.len() as u64)),
            port_blocks: (cfg.port_block_size != 0).then(|| {
                let b = self.engine.port_blocks();
                let subs: std::collections::HashSet<Ipv4Addr> =
                    b.iter().map(|x| x.inside).collect();
                BlockReport {
                    size: cfg.port_block_size,
                    in_use: b.len() as u64,
                    subscribers: subs.len() as u64,
                    ports_in_use: b.iter().map(|x| x.in_use as u64).sum(),
                    blocks: b
                        .iter()
                        .map(|x| {
                            format!(
                                "{} {}:{}-{}",
                                x.inside,
                                x.public,
                                x.first_port,
                                x.last_port()
                            )
                        })
                        .collect(),
                }
            }),
        }
    }
}

/// The session table as text, one session a line.
pub fn format_sessions(rows: &[SessionRow]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<5} {:<21}    {:<21}    {:<21} {:<12} {:>6} {:>8} {:>8} {:>10}",
        "PROTO", "INSIDE", "PUBLIC", "REMOTE", "STATE", "IDLE", "PKTS_OUT", "PKTS_IN", "BYTES"
    );
    for s in rows {
        let _ = writeln!(
            o,
            "{:<5} {:<21} -> {:<21} <> {:<21} {:<12} {:>5}s {:>8} {:>8} {:>10}",
            s.proto,
            s.inside.to_string(),
            s.public.to_string(),
            s.remote.to_string(),
            s.state,
            s.idle_s,
            s.pkts_out,
            s.pkts_in,
            s.bytes
        );
    }
    let _ = writeln!(o, "({} sessions)", rows.len());
    o
}

/// `rnat stats` as text.
pub fn format_stats(r: &StatsReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "uptime            {} s", r.uptime_s);
    let _ = writeln!(
        o,
        "packets           out {}  in {}",
        r.packets.outbound, r.packets.inbound
    );
    let _ = writeln!(
        o,
        "bytes             out {}  in {}",
        r.bytes.outbound, r.bytes.inbound
    );
    let _ = writeln!(o, "to the kernel     {}", r.kernel);
    let _ = writeln!(o, "icmp generated    {}", r.icmp_generated);
    let _ = writeln!(
        o,
        "created           {} mappings, {} sessions",
        r.mappings_created, r.sessions_created
    );
    let u = &r.unsolicited_syn;
    let _ = writeln!(
        o,
        "unsolicited syn   held {}, rejected {}, cancelled {}, forgotten {}, store_full {}, \
         holding {}",
        u.held, u.rejected, u.cancelled, u.forgotten, u.store_full, u.holding
    );
    let _ = writeln!(
        o,
        "live              {} mappings, {} sessions",
        r.mappings, r.sessions
    );
    for (p, states) in &r.sessions_by_state {
        let list: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let _ = writeln!(o, "  {p:<4}            {}", list.join(", "));
    }
    let _ = writeln!(o, "public ports used");
    for (a, protos) in &r.ports {
        let list: Vec<String> = protos
            .iter()
            .map(|(p, u)| format!("{p} {}/{}", u.used, u.capacity))
            .collect();
        let _ = writeln!(o, "  {a:<15} {}", list.join(", "));
    }
    let drops: Vec<String> = r
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let total: u64 = r.drops.values().sum();
    let _ = writeln!(
        o,
        "drops             {total}{}{}",
        if drops.is_empty() { "" } else { ": " },
        drops.join(", ")
    );
    if let Some(p) = &r.pcp {
        let nz = |m: &BTreeMap<String, u64>| {
            let v: Vec<String> = m
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            if v.is_empty() {
                "-".into()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(
            o,
            "pcp               {} mappings; requests: {}; pcp results: {}; nat-pmp results: {}; \
             ignored {}",
            p.mappings,
            nz(&p.requests),
            nz(&p.pcp_results),
            nz(&p.natpmp_results),
            p.ignored
        );
    }
    if let Some(b) = &r.port_blocks {
        let _ = writeln!(
            o,
            "port blocks       {} in use ({} ports each) by {} subscribers, {} ports mapped",
            b.in_use, b.size, b.subscribers, b.ports_in_use
        );
        for x in &b.blocks {
            let _ = writeln!(o, "  block           {x}");
        }
    }
    let g = &r.gateway;
    let _ = writeln!(
        o,
        "gateway           no_route {}, no_neighbour {}, arp_requests {}, fragments_sent {}, \
         tx_errors {}, replies_sent {}",
        g.no_route, g.no_neighbour, g.arp_requests, g.fragments_sent, g.tx_errors, g.replies_sent
    );
    o
}

/// The Prometheus text exposition format (version 0.0.4) of `r`.
pub fn format_prometheus(r: &StatsReport) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(o, "{name} {v}");
            } else {
                let _ = writeln!(o, "{name}{{{labels}}} {v}");
            }
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    let dir = |d: &PerDirection| {
        vec![
            ("direction=\"outbound\"".to_string(), d.outbound),
            ("direction=\"inbound\"".to_string(), d.inbound),
        ]
    };
    metric(
        "rnat_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        &one(r.uptime_s),
    );
    metric(
        "rnat_packets_total",
        "counter",
        "Packets translated, by direction.",
        &dir(&r.packets),
    );
    metric(
        "rnat_bytes_total",
        "counter",
        "Bytes translated, by direction.",
        &dir(&r.bytes),
    );
    metric(
        "rnat_kernel_frames_total",
        "counter",
        "Frames left to the host kernel (not NAT traffic).",
        &one(r.kernel),
    );
    metric(
        "rnat_icmp_generated_total",
        "counter",
        "ICMP errors generated by rnat.",
        &one(r.icmp_generated),
    );
    metric(
        "rnat_mappings_created_total",
        "counter",
        "Mappings created.",
        &one(r.mappings_created),
    );
    metric(
        "rnat_sessions_created_total",
        "counter",
        "Sessions created.",
        &one(r.sessions_created),
    );
    let u = &r.unsolicited_syn;
    metric(
        "rnat_unsolicited_syn_total",
        "counter",
        "Unsolicited inbound TCP SYNs (RFC 5382 REQ-4), by outcome.",
        &[
            ("outcome=\"held\"".to_string(), u.held),
            ("outcome=\"rejected\"".to_string(), u.rejected),
            ("outcome=\"cancelled\"".to_string(), u.cancelled),
            ("outcome=\"forgotten\"".to_string(), u.forgotten),
            ("outcome=\"store_full\"".to_string(), u.store_full),
        ],
    );
    let drops: Vec<(String, u64)> = r
        .drops
        .iter()
        .map(|(k, v)| (format!("reason=\"{k}\""), *v))
        .collect();
    metric(
        "rnat_drops_total",
        "counter",
        "Frames dropped, by reason.",
        &drops,
    );
    metric("rnat_mappings", "gauge", "Live mappings.", &one(r.mappings));
    let mut by_state = Vec::new();
    for (p, states) in &r.sessions_by_state {
        for (s, n) in states {
            by_state.push((format!("proto=\"{p}\",state=\"{s}\""), *n));
        }
    }
    metric(
        "rnat_sessions",
        "gauge",
        "Live sessions, by protocol and state.",
        &by_state,
    );
    let (mut used, mut cap) = (Vec::new(), Vec::new());
    for (a, protos) in &r.ports {
        for (p, u) in protos {
            let l = format!("address=\"{a}\",proto=\"{p}\"");
            used.push((l.clone(), u.used));
            cap.push((l, u.capacity));
        }
    }
    metric(
        "rnat_public_ports_used",
        "gauge",
        "Public ports held by live mappings, by public address and protocol.",
        &used,
    );
    metric(
        "rnat_public_ports_capacity",
        "gauge",
        "Public ports in rnat's ranges, by public address and protocol.",
        &cap,
    );
    if let Some(p) = &r.pcp {
        let kinds: Vec<(String, u64)> = p
            .requests
            .iter()
            .map(|(k, v)| (format!("kind=\"{k}\""), *v))
            .collect();
        metric(
            "rnat_pcp_requests_total",
            "counter",
            "PCP and NAT-PMP requests, by kind.",
            &kinds,
        );
        let mut results: Vec<(String, u64)> = p
            .pcp_results
            .iter()
            .map(|(k, v)| (format!("protocol=\"pcp\",result=\"{k}\""), *v))
            .collect();
        results.extend(
            p.natpmp_results
                .iter()
                .map(|(k, v)| (format!("protocol=\"natpmp\",result=\"{k}\""), *v)),
        );
        metric(
            "rnat_pcp_responses_total",
            "counter",
            "PCP and NAT-PMP responses, by protocol and result code.",
            &results,
        );
        metric(
            "rnat_pcp_mappings",
            "gauge",
            "Live explicit (PCP/NAT-PMP) mappings.",
            &one(p.mappings),
        );
    }
    if let Some(b) = &r.port_blocks {
        metric(
            "rnat_port_blocks",
            "gauge",
            "Port blocks held by inside addresses (--port-block-size).",
            &one(b.in_use),
        );
        metric(
            "rnat_port_block_subscribers",
            "gauge",
            "Inside addresses holding at least one port block.",
            &one(b.subscribers),
        );
        metric(
            "rnat_port_block_ports_in_use",
            "gauge",
            "Ports in use inside the held blocks.",
            &one(b.ports_in_use),
        );
    }
    let g = &r.gateway;
    for (name, v, help) in [
        (
            "no_route",
            g.no_route,
            "Translated frames without a route out.",
        ),
        (
            "no_neighbour",
            g.no_neighbour,
            "Translated frames whose next hop MAC was unknown.",
        ),
        ("arp_requests", g.arp_requests, "ARP requests sent by rnat."),
        ("fragments_sent", g.fragments_sent, "IPv4 fragments sent."),
        ("tx_errors", g.tx_errors, "Transmit errors."),
        (
            "replies_sent",
            g.replies_sent,
            "Generated frames (ICMP errors) sent.",
        ),
    ] {
        metric(
            &format!("rnat_gateway_{name}_total"),
            "counter",
            help,
            &one(v),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_well_formed() {
        let mut r = StatsReport::default();
        r.packets.outbound = 5;
        r.drops.insert("no_mapping".into(), 2);
        r.sessions_by_state
            .entry("tcp".into())
            .or_default()
            .insert("ESTABLISHED".into(), 3);
        let t = format_prometheus(&r);
        assert!(
            t.contains("rnat_packets_total{direction=\"outbound\"} 5\n"),
            "{t}"
        );
        assert!(
            t.contains("rnat_drops_total{reason=\"no_mapping\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("rnat_sessions{proto=\"tcp\",state=\"ESTABLISHED\"} 3\n"));
        assert!(
            !t.contains("rnat_port_blocks"),
            "no block metrics outside block mode"
        );
        r.port_blocks = Some(BlockReport {
            size: 64,
            in_use: 3,
            subscribers: 2,
            ports_in_use: 70,
            blocks: Vec::new(),
        });
        let t = format_prometheus(&r);
        assert!(t.contains("rnat_port_blocks 3\n"), "{t}");
        assert!(t.contains("rnat_port_block_subscribers 2\n"), "{t}");
        assert!(t.contains("rnat_port_block_ports_in_use 70\n"), "{t}");
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, v) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("rnat_"), "{line}");
            v.parse::<u64>().unwrap();
        }
    }
}
