//! What can change while rnat runs (SIGHUP): timeouts, filtering modes, the port cool-down,
//! inbound refresh, per-subscriber quotas and port forwards. The packet path reads these from
//! atomics (relaxed loads: a worker may use the old value for a few more packets), and
//! `Engine::reconfigure` swaps them in without touching the sessions already in the table.
//! Everything that sizes or shapes the table (public addresses, port ranges, prefixes, capacity)
//! needs a restart and is reported as such.

use super::config::{Config, ConfigError, Filtering, Timeouts, UnsolicitedSyn};
use super::engine::Engine;
use super::table::{M_STATIC, map_hash};
use super::tcp::TcpState;
use super::{Proto, Time};
use crate::wire::proto;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The live part of the configuration.
pub(crate) struct Live {
    /// UDP, TCP established, TCP transitory, TCP opening, ICMP: nanoseconds.
    timeouts: [AtomicU64; 5],
    /// TCP, UDP, ICMP.
    filtering: [AtomicU8; 3],
    cooldown: AtomicU64,
    inbound_refresh: AtomicBool,
    pub max_ports_per_subscriber: AtomicU32,
    pub max_sessions_per_subscriber: AtomicU32,
    /// RFC 5382 REQ-4: answer held SYNs with port-unreachable (else forget them).
    reject_unsolicited_syn: AtomicBool,
    /// How long unsolicited SYNs are held, nanoseconds.
    syn_hold: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

fn f2u(f: Filtering) -> u8 {
    match f {
        Filtering::EndpointIndependent => 0,
        Filtering::AddressDependent => 1,
        Filtering::AddressAndPortDependent => 2,
    }
}

impl Live {
    pub fn new(cfg: &Config) -> Live {
        let l = Live {
            timeouts: Default::default(),
            filtering: Default::default(),
            cooldown: AtomicU64::new(0),
            inbound_refresh: AtomicBool::new(true),
            max_ports_per_subscriber: AtomicU32::new(0),
            max_sessions_per_subscriber: AtomicU32::new(0),
            reject_unsolicited_syn: AtomicBool::new(true),
            syn_hold: AtomicU64::new(0),
        };
        l.store(cfg);
        l
    }

    fn store(&self, cfg: &Config) {
        let t = &cfg.timeouts;
        for (slot, d) in self.timeouts.iter().zip([
            t.udp,
            t.tcp_established,
            t.tcp_transitory,
            t.tcp_opening,
            t.icmp,
        ]) {
            slot.store(nanos(d), Relaxed);
        }
        for (slot, f) in
            self.filtering
                .iter()
                .zip([cfg.filtering_tcp, cfg.filtering_udp, cfg.filtering_icmp])
        {
            slot.store(f2u(f), Relaxed);
        }
        self.cooldown.store(nanos(cfg.port_cooldown), Relaxed);
        self.inbound_refresh.store(cfg.inbound_refresh, Relaxed);
        self.max_ports_per_subscriber
            .store(cfg.max_ports_per_subscriber, Relaxed);
        self.max_sessions_per_subscriber
            .store(cfg.max_sessions_per_subscriber, Relaxed);
        self.reject_unsolicited_syn
            .store(cfg.unsolicited_syn == UnsolicitedSyn::Reject, Relaxed);
        self.syn_hold.store(nanos(cfg.syn_hold), Relaxed);
    }

    #[inline]
    pub fn unsolicited_syn(&self) -> UnsolicitedSyn {
        if self.reject_unsolicited_syn.load(Relaxed) {
            UnsolicitedSyn::Reject
        } else {
            UnsolicitedSyn::Drop
        }
    }

    #[inline]
    pub fn syn_hold(&self) -> Duration {
        Duration::from_nanos(self.syn_hold.load(Relaxed))
    }

    /// The idle timeout of a session in `state` (TCP) of protocol `p`.
    #[inline]
    pub fn timeout(&self, p: u8, state: u8) -> Duration {
        let i = match p {
            proto::UDP => 0,
            proto::TCP => match TcpState::from_u8(state) {
                Some(TcpState::Established) => 1,
                Some(TcpState::SynOut | TcpState::SynIn) => 3,
                _ => 2,
            },
            _ => 4,
        };
        Duration::from_nanos(self.timeouts[i].load(Relaxed))
    }

    #[inline]
    pub fn filtering(&self, p: Proto) -> Filtering {
        match self.filtering[p as usize].load(Relaxed) {
            0 => Filtering::EndpointIndependent,
            1 => Filtering::AddressDependent,
            _ => Filtering::AddressAndPortDependent,
        }
    }

    #[inline]
    pub fn cooldown(&self) -> Duration {
        Duration::from_nanos(self.cooldown.load(Relaxed))
    }

    #[inline]
    pub fn inbound_refresh(&self) -> bool {
        self.inbound_refresh.load(Relaxed)
    }

    pub fn timeouts(&self) -> Timeouts {
        let g = |i: usize| Duration::from_nanos(self.timeouts[i].load(Relaxed));
        Timeouts {
            udp: g(0),
            tcp_established: g(1),
            tcp_transitory: g(2),
            tcp_opening: g(3),
            icmp: g(4),
        }
    }
}

/// What a reconfiguration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Options now in effect.
    pub applied: Vec<&'static str>,
    /// Options that differ but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

impl Engine {
    /// Applies what can change live from `new` (see the module docs), keeping every session.
    /// A configuration the engine refuses changes nothing.
    pub fn reconfigure(&self, new: &Config, now: Time) -> Result<Reconfigured, ConfigError> {
        new.validate()?;
        let old = self.current_config();
        let mut r = Reconfigured::default();
        macro_rules! restart {
            ($($f:ident => $n:literal),* $(,)?) => { $( if old.$f != new.$f { r.needs_restart.push($n); } )* };
        }
        restart!(public_addrs => "public", port_ranges => "ports", inside_prefixes => "inside-prefix",
            inside_addr => "inside address", max_sessions => "max-sessions", shards => "shards",
            syn_hold_capacity => "syn-hold-capacity",
            outside_mtu => "outside MTU", inside_mtu => "inside MTU");
        // Structures sized at start: the address-dependent filter index.
        let adf = |c: &Config| {
            [c.filtering_tcp, c.filtering_udp, c.filtering_icmp]
                .contains(&Filtering::AddressDependent)
        };
        let filtering_ok = !adf(new) || adf(self.config());
        // Forwards first: the only part that can fail. A forwarded port outside the port ranges
        // needs the start-up port filter and nftables rules redone: a restart.
        let mut forwards = new.forwards.clone();
        if old.forwards != new.forwards {
            if new
                .forwards
                .iter()
                .all(|f| self.table.addrs.in_port_ranges(f.public_port))
            {
                self.replace_forwards(&old, new, now)?;
                r.applied.push("forward");
            } else {
                r.needs_restart.push("forward (outside the port ranges)");
                forwards = old.forwards.clone();
            }
        }
        let live = &self.live;
        if old.timeouts != new.timeouts {
            r.applied.push("timeouts");
        }
        if old.port_cooldown != new.port_cooldown {
            r.applied.push("port-cooldown");
        }
        if old.inbound_refresh != new.inbound_refresh {
            r.applied.push("inbound-refresh");
        }
        let filt = (new.filtering_tcp, new.filtering_udp, new.filtering_icmp);
        if (old.filtering_tcp, old.filtering_udp, old.filtering_icmp) != filt {
            if filtering_ok {
                r.applied.push("filtering")
            } else {
                r.needs_restart.push("filtering (address-dependent)")
            }
        }
        let q = (
            new.max_ports_per_subscriber,
            new.max_sessions_per_subscriber,
        );
        if (
            old.max_ports_per_subscriber,
            old.max_sessions_per_subscriber,
        ) != q
        {
            r.applied.push("quotas");
        }
        if old.unsolicited_syn != new.unsolicited_syn {
            r.applied.push("unsolicited-syn");
        }
        if old.syn_hold != new.syn_hold {
            r.applied.push("syn-hold");
        }
        let mut apply = new.clone();
        if !filtering_ok {
            (
                apply.filtering_tcp,
                apply.filtering_udp,
                apply.filtering_icmp,
            ) = (old.filtering_tcp, old.filtering_udp, old.filtering_icmp);
        }
        live.store(&apply);
        *self.forwards.lock() = forwards;
        Ok(r)
    }

    /// The configuration in effect now: the start-up one with the live values.
    pub fn current_config(&self) -> Config {
        let l = &self.live;
        Config {
            timeouts: l.timeouts(),
            filtering_tcp: l.filtering(Proto::Tcp),
            filtering_udp: l.filtering(Proto::Udp),
            filtering_icmp: l.filtering(Proto::Icmp),
            port_cooldown: l.cooldown(),
            inbound_refresh: l.inbound_refresh(),
            max_ports_per_subscriber: l.max_ports_per_subscriber.load(Relaxed),
            max_sessions_per_subscriber: l.max_sessions_per_subscriber.load(Relaxed),
            forwards: self.forwards.lock().clone(),
            unsolicited_syn: l.unsolicited_syn(),
            syn_hold: l.syn_hold(),
            ..self.config().clone()
        }
    }

    /// Removes the forwards that are gone (their mapping becomes ordinary: it ends with its last
    /// session) and installs the new ones (their public port must be free).
    fn replace_forwards(&self, old: &Config, new: &Config, now: Time) -> Result<(), ConfigError> {
        let seed = self.table.seed;
        let mut probe = new.clone();
        probe.forwards.retain(|f| !old.forwards.contains(f));
        // Check the new ones can be installed before changing anything.
        for f in &probe.forwards {
            let pub_idx = f
                .public_addr
                .and_then(|a| new.public_addrs.iter().position(|x| *x == a))
                .unwrap_or(0) as u8;
            let word = self.table.ports.owner(pub_idx, f.proto, f.public_port);
            let ours = old.forwards.iter().any(|o| {
                o.proto == f.proto
                    && o.public_port == f.public_port
                    && o.public_addr == f.public_addr
            });
            if word != 0 && super::table::owner_parts(word).is_some() && !ours {
                return Err(ConfigError::BadForward(
                    format!("{}:{}={}", f.proto.name(), f.public_port, f.inside),
                    "the public port is in use",
                ));
            }
            // The inside endpoint must not hold a mapping that stays after the removals below
            // (a dynamic one, or a removed forward's that still has sessions): one endpoint has
            // one mapping (RFC 4787 REQ-1). Checked here so that a refused reload changes nothing.
            let (p, ip, port) = (
                f.proto.ip_number(),
                u32::from(*f.inside.ip()),
                f.inside.port(),
            );
            let sh = self.table.shards[self.table.shard_of(map_hash(seed, p, ip, port))].lock();
            if let Some(mid) = sh.find_mapping(seed, p, ip, port) {
                let m = sh.mappings.get(mid);
                let goes = m.sessions == 0
                    && old.forwards.iter().any(|o| {
                        o.proto == f.proto && o.inside == f.inside && !new.forwards.contains(o)
                    });
                if !goes {
                    return Err(ConfigError::BadForward(
                        format!("{}:{}={}", f.proto.name(), f.public_port, f.inside),
                        "the inside endpoint has a live mapping on another public port (retry when its sessions have ended, or flush them)",
                    ));
                }
            }
        }
        for f in old.forwards.iter().filter(|f| !new.forwards.contains(f)) {
            let (p, ip, port) = (
                f.proto.ip_number(),
                u32::from(*f.inside.ip()),
                f.inside.port(),
            );
            let si = self.table.shard_of(map_hash(seed, p, ip, port));
            let mut sh = self.table.shards[si].lock();
            if let Some(mid) = sh.find_mapping(seed, p, ip, port) {
                let m = sh.mappings.get_mut(mid);
                m.flags &= !M_STATIC;
                if m.sessions > 0 {
                    // Now an ordinary mapping: it will give a port back to the subscriber's
                    // quota when its last session ends, so it holds one from now on (a forward
                    // took none).
                    if let Some(sub) = self.table.subs.get(seed, ip) {
                        sub.ports.fetch_add(1, Relaxed);
                    }
                }
                if m.sessions == 0 {
                    let m = *m;
                    sh.drop_empty_mapping(seed, mid);
                    let until = (now + self.live.cooldown()).secs_u32().saturating_add(1);
                    self.table
                        .ports
                        .release(m.pub_idx, f.proto, m.pub_port, until);
                }
            }
        }
        super::engine::install_forwards(&probe, &self.table)
    }
}
