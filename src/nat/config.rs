//! Engine configuration: the behaviour knobs of the NAT, with RFC defaults.

use std::net::Ipv4Addr;
use std::time::Duration;

/// Inbound filtering behaviour (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filtering {
    /// Any remote may use an existing mapping.
    EndpointIndependent,
    /// Only remote addresses the inside endpoint has sent to.
    AddressDependent,
    /// Only remote address-and-port pairs the inside endpoint has sent to (the default).
    #[default]
    AddressAndPortDependent,
}

impl std::str::FromStr for Filtering {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "endpoint-independent" | "eif" => Ok(Filtering::EndpointIndependent),
            "address-dependent" | "adf" => Ok(Filtering::AddressDependent),
            "address-and-port-dependent" | "apdf" => Ok(Filtering::AddressAndPortDependent),
            _ => Err(format!(
                "unknown filtering mode {s:?} (endpoint-independent, address-dependent, address-and-port-dependent)"
            )),
        }
    }
}

/// What happens to an unsolicited inbound TCP SYN once it has been held for the hold time
/// without an outbound SYN for the same connection (RFC 5382 REQ-4/4a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsolicitedSyn {
    /// Send ICMP destination-unreachable, port-unreachable (rate-limited): the RFC's SHOULD.
    #[default]
    Reject,
    /// Forget it silently (REQ-4a: a security policy may ask for this).
    Drop,
}

impl UnsolicitedSyn {
    pub fn name(self) -> &'static str {
        match self {
            UnsolicitedSyn::Reject => "reject",
            UnsolicitedSyn::Drop => "drop",
        }
    }
}

impl std::str::FromStr for UnsolicitedSyn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reject" => Ok(UnsolicitedSyn::Reject),
            "drop" => Ok(UnsolicitedSyn::Drop),
            _ => Err(format!(
                "unknown unsolicited-syn policy {s:?} (reject or drop)"
            )),
        }
    }
}

/// RFC 5382 REQ-4: an unsolicited SYN is not answered for at least this long.
pub const MIN_SYN_HOLD: Duration = Duration::from_secs(6);

/// Session idle timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub udp: Duration,
    pub tcp_established: Duration,
    /// Closing states and the state after a RST (RFC 7857: 4 minutes).
    pub tcp_transitory: Duration,
    /// Opening states (SYN seen one way only).
    pub tcp_opening: Duration,
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            udp: Duration::from_secs(300),
            tcp_established: Duration::from_secs(7440),
            tcp_transitory: Duration::from_secs(240),
            tcp_opening: Duration::from_secs(240),
            icmp: Duration::from_secs(60),
        }
    }
}

/// An inclusive range of public ports (or ICMP identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn new(first: u16, last: u16) -> Self {
        PortRange { first, last }
    }
    pub fn contains(&self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }
    pub fn len(&self) -> u32 {
        self.last as u32 - self.first as u32 + 1
    }
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("bad port {a:?} in range {s:?}"))?;
        let b: u16 = b
            .trim()
            .parse()
            .map_err(|_| format!("bad port {b:?} in range {s:?}"))?;
        if a == 0 || b < a {
            return Err(format!(
                "port range {s:?} must be FIRST-LAST with 1 <= FIRST <= LAST"
            ));
        }
        Ok(PortRange::new(a, b))
    }
}

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Prefix {
    pub fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len as u32)
        }
    }
    pub fn contains(&self, a: u32) -> bool {
        (a ^ u32::from(self.addr)) & self.mask() == 0
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("bad address in prefix {s:?}"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or(format!("bad length in prefix {s:?}"))?;
        Ok(Prefix { addr, len })
    }
}

/// A static port forward: a permanent mapping from a public port to an inside endpoint, reachable
/// by any remote (endpoint-independent filtering), e.g. `tcp:8080=192.168.1.10:80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub proto: super::Proto,
    /// The public address (default: the first public address).
    pub public_addr: Option<Ipv4Addr>,
    pub public_port: u16,
    pub inside: std::net::SocketAddrV4,
}

impl std::str::FromStr for Forward {
    type Err = String;
    /// `PROTO:[PUBLIC_ADDR:]PORT=INSIDE_ADDR:PORT`, PROTO being `tcp` or `udp`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "bad forward {s:?}: expected PROTO:[PUBLIC_ADDR:]PORT=INSIDE_ADDR:PORT, e.g. tcp:8080=192.168.1.10:80"
            )
        };
        let (lhs, rhs) = s.split_once('=').ok_or_else(bad)?;
        let (proto, rest) = lhs.split_once(':').ok_or_else(bad)?;
        let proto = match proto {
            "tcp" => super::Proto::Tcp,
            "udp" => super::Proto::Udp,
            _ => return Err(format!("bad forward {s:?}: protocol must be tcp or udp")),
        };
        let (public_addr, port) = match rest.rsplit_once(':') {
            Some((a, p)) => (Some(a.parse::<Ipv4Addr>().map_err(|_| bad())?), p),
            None => (None, rest),
        };
        let public_port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        let inside: std::net::SocketAddrV4 = rhs.parse().map_err(|_| bad())?;
        if inside.port() == 0 {
            return Err(bad());
        }
        Ok(Forward {
            proto,
            public_addr,
            public_port,
            inside,
        })
    }
}

/// Everything the engine needs to know. Built by the CLI from flags, files and discovery.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public addresses; an inside host always uses the same one (paired pooling, RFC 4787 REQ-2).
    pub public_addrs: Vec<Ipv4Addr>,
    /// Ports (and ICMP identifiers) rnat may allocate on the public addresses. Disjoint, sorted.
    pub port_ranges: Vec<PortRange>,
    /// Inside prefixes; outbound packets from other sources are dropped as spoofed. Empty: any.
    pub inside_prefixes: Vec<Prefix>,
    /// The gateway's own inside address: source of ICMP errors sent to inside hosts, and traffic to it
    /// is left to the kernel.
    pub inside_addr: Option<Ipv4Addr>,
    pub filtering_tcp: Filtering,
    pub filtering_udp: Filtering,
    pub filtering_icmp: Filtering,
    pub timeouts: Timeouts,
    /// A freed public port is not reused before this long (RFC 6888 REQ-8).
    pub port_cooldown: Duration,
    /// Whether inbound packets refresh a session (RFC 4787 REQ-6 makes this optional).
    pub inbound_refresh: bool,
    /// Upper bound on live sessions; memory is reserved for this many up front.
    pub max_sessions: usize,
    /// Number of lock shards of the table (rounded up to a power of two, at most 256).
    pub shards: usize,
    /// Seed of the port randomiser and the table hashes. The CLI draws it from the OS.
    pub seed: u64,
    /// MTU of the outside link (IPv4 packet size); 0 = no check.
    pub outside_mtu: u16,
    /// MTU of the inside link; 0 = no check.
    pub inside_mtu: u16,
    /// Static port forwards.
    pub forwards: Vec<Forward>,
    /// Per-subscriber (inside address) limit on public ports held at once (RFC 6888 REQ-4);
    /// 0: unlimited.
    pub max_ports_per_subscriber: u32,
    /// Per-subscriber limit on sessions (RFC 6888 REQ-5); 0: half of `max_sessions`, so that one
    /// inside host can never starve the others.
    pub max_sessions_per_subscriber: u32,
    /// What to do with an unsolicited inbound SYN after the hold time (RFC 5382 REQ-4/4a).
    pub unsolicited_syn: UnsolicitedSyn,
    /// How long an unsolicited SYN is held before it is answered or forgotten; at least
    /// [`MIN_SYN_HOLD`].
    pub syn_hold: Duration,
    /// Most unsolicited SYNs held at once; memory is reserved for them up front.
    pub syn_hold_capacity: usize,
    /// Port-block allocation (RFC 6888 REQ-14): each subscriber gets blocks of this many
    /// contiguous, aligned ports on its paired public address (shared by TCP, UDP and ICMP) and
    /// its mappings take ports inside its blocks. 0: off (ports one by one, the default); else a
    /// power of two from [`MIN_PORT_BLOCK`] to [`MAX_PORT_BLOCK`].
    pub port_block_size: u16,
}

/// Smallest port block.
pub const MIN_PORT_BLOCK: u16 = 8;
/// Largest port block.
pub const MAX_PORT_BLOCK: u16 = 4096;

impl Default for Config {
    fn default() -> Self {
        Config {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
            port_ranges: vec![PortRange::new(1024, 65535)],
            inside_prefixes: Vec::new(),
            inside_addr: None,
            filtering_tcp: Filtering::default(),
            filtering_udp: Filtering::default(),
            filtering_icmp: Filtering::default(),
            timeouts: Timeouts::default(),
            port_cooldown: Duration::from_secs(120),
            inbound_refresh: true,
            max_sessions: 1 << 16,
            shards: 64,
            seed: 0x5eed_0fa7_2026,
            outside_mtu: 0,
            inside_mtu: 0,
            forwards: Vec::new(),
            max_ports_per_subscriber: 0,
            max_sessions_per_subscriber: 0,
            unsolicited_syn: UnsolicitedSyn::Reject,
            syn_hold: MIN_SYN_HOLD,
            syn_hold_capacity: 4096,
            port_block_size: 0,
        }
    }
}

/// A configuration the engine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no public address configured")]
    NoPublicAddress,
    #[error("at most 255 public addresses are supported, got {0}")]
    TooManyPublicAddresses(usize),
    #[error("the port ranges are empty")]
    NoPorts,
    #[error("port ranges overlap or are not sorted: {0:?}")]
    OverlappingRanges(Vec<PortRange>),
    #[error("max_sessions must be between 1 and 134217728")]
    BadCapacity,
    #[error("forward {0}: {1}")]
    BadForward(String, &'static str),
    #[error("timeout {0} is below the RFC minimum ({1} s)")]
    TimeoutTooShort(&'static str, u64),
    #[error("unsolicited SYNs must be held at least 6 s (RFC 5382 REQ-4)")]
    SynHoldTooShort,
    #[error("syn_hold_capacity must be between 1 and 1048576")]
    BadSynHoldCapacity,
    #[error("port block size {0} must be 0 (off) or a power of two from 8 to 4096")]
    BadPortBlockSize(u32),
    #[error("no port block of {0} aligned ports fits inside the port ranges")]
    NoPortBlocks(u16),
}

impl Config {
    /// Checks invariants the engine relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.public_addrs.is_empty() {
            return Err(ConfigError::NoPublicAddress);
        }
        if self.public_addrs.len() > 255 {
            return Err(ConfigError::TooManyPublicAddresses(self.public_addrs.len()));
        }
        if self.port_ranges.iter().all(|r| r.is_empty()) {
            return Err(ConfigError::NoPorts);
        }
        for w in self.port_ranges.windows(2) {
            if w[1].first <= w[0].last {
                return Err(ConfigError::OverlappingRanges(self.port_ranges.clone()));
            }
        }
        for (i, f) in self.forwards.iter().enumerate() {
            let name = || format!("{}:{}={}", f.proto.name(), f.public_port, f.inside);
            if f.public_addr
                .is_some_and(|a| !self.public_addrs.contains(&a))
            {
                return Err(ConfigError::BadForward(
                    name(),
                    "its public address is not one of rnat's",
                ));
            }
            let clash = self.forwards[..i].iter().any(|g| {
                g.proto == f.proto
                    && g.public_port == f.public_port
                    && g.public_addr.unwrap_or(self.public_addrs[0])
                        == f.public_addr.unwrap_or(self.public_addrs[0])
            });
            if clash {
                return Err(ConfigError::BadForward(
                    name(),
                    "the public port is forwarded twice",
                ));
            }
        }
        if self.max_sessions == 0 || self.max_sessions > 1 << 27 {
            return Err(ConfigError::BadCapacity);
        }
        if self.syn_hold < MIN_SYN_HOLD {
            return Err(ConfigError::SynHoldTooShort);
        }
        if self.syn_hold_capacity == 0 || self.syn_hold_capacity > 1 << 20 {
            return Err(ConfigError::BadSynHoldCapacity);
        }
        let n = self.port_block_size;
        if n != 0 {
            if !n.is_power_of_two() || !(MIN_PORT_BLOCK..=MAX_PORT_BLOCK).contains(&n) {
                return Err(ConfigError::BadPortBlockSize(n as u32));
            }
            if self.port_blocks().next().is_none() {
                return Err(ConfigError::NoPortBlocks(n));
            }
        }
        Ok(())
    }

    /// The first ports of the aligned blocks of `port_block_size` ports that lie entirely inside
    /// one port range (nothing when block mode is off).
    pub fn port_blocks(&self) -> impl Iterator<Item = u16> + '_ {
        let n = self.port_block_size as u32;
        (0..65536u32.checked_div(n).unwrap_or(0))
            .map(move |b| b * n)
            .filter(move |&first| {
                first != 0
                    && self
                        .port_ranges
                        .iter()
                        .any(|r| r.first as u32 <= first && first + n - 1 <= r.last as u32)
            })
            .map(|f| f as u16)
    }

    /// Most port blocks one subscriber may hold: enough for `max_ports_per_subscriber` when that
    /// is set, else a quarter of the address's blocks (65536 / size / 4), at least 1.
    pub fn max_blocks_per_subscriber(&self) -> u32 {
        let n = self.port_block_size.max(1) as u32;
        match self.max_ports_per_subscriber {
            0 => (65536 / n / 4).max(1),
            p => p.div_ceil(n).max(1),
        }
    }

    /// Timers below the RFC minimums (RFC 4787 REQ-5: UDP ≥ 2 min; RFC 5382 REQ-5: established
    /// ≥ 2 h 4 min, transitory ≥ 4 min; RFC 5508 REQ-2: ICMP ≥ 60 s). The engine runs with them (labs
    /// and tests shorten timers); the CLI refuses them unless told otherwise.
    pub fn rfc_timer_violations(&self) -> Vec<ConfigError> {
        let t = &self.timeouts;
        let checks = [
            ("udp", t.udp, 120),
            ("tcp-established", t.tcp_established, 7440),
            ("tcp-transitory", t.tcp_transitory, 240),
            ("tcp-opening", t.tcp_opening, 240),
            ("icmp", t.icmp, 60),
        ];
        checks
            .into_iter()
            .filter(|(_, d, min)| *d < Duration::from_secs(*min))
            .map(|(name, _, min)| ConfigError::TimeoutTooShort(name, min))
            .collect()
    }

    pub fn filtering(&self, proto: super::Proto) -> Filtering {
        match proto {
            super::Proto::Tcp => self.filtering_tcp,
            super::Proto::Udp => self.filtering_udp,
            super::Proto::Icmp => self.filtering_icmp,
        }
    }
}
