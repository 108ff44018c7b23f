//! Host setup: everything rnat changes on the host, recorded, undone on exit, and cleaned up on the
//! next start after a crash.
//!
//! AF_PACKET only taps frames: the host kernel still processes its own copy of every frame rnat
//! translates. It would answer TCP/UDP sent to the public address with RST / port-unreachable, and
//! with `ip_forward=1` forward the untranslated inside traffic. [`HostSetup::apply`] therefore:
//!
//! 1. checks privileges ([`check_privileges`]) and that the `nft` program exists;
//! 2. takes an exclusive `flock` on `/run/rnat/ns<netns-inode>-<ifname>.lock` for both interfaces (the lock file
//!    holds the owner's pid, for the error message "interface eth1 is already used by rnat (pid N)");
//! 3. undoes what a previous run on either interface left behind (a `*.state` file naming one of
//!    them: that run died without cleaning up, or it would still hold the lock);
//! 4. writes the state file `/run/rnat/ns<netns-inode>-<inside>-<outside>.state` listing every change it is about to
//!    make (and the old values), *before* making any;
//! 5. installs `table netdev rnat_<outside>` with `nft -f -` (see [`HostSetup::ruleset`]):
//!    - on the outside interface's ingress, drop IPv4 TCP/UDP to a public address with a destination
//!      port in rnat's ranges, and ICMP echo-replies to a public address with an identifier in the
//!      ranges;
//!    - on the inside interface's ingress, drop IPv4 from the inside prefixes whose destination is
//!      not one of the gateway's own addresses (nor limited broadcast or multicast), and the same
//!      TCP/UDP-to-public-port traffic as outside (hairpinned flows);
//!
//!    ARP, IPv6 and traffic to the gateway itself still reach the kernel. The netdev ingress hook runs
//!    after AF_PACKET taps the frame, so rnat still sees everything it drops;
//! 6. adds the port ranges to `net.ipv4.ip_local_reserved_ports` so the host's own sockets never
//!    auto-bind them (explicit binds still work);
//! 7. only if asked ([`HostSetup::offloads_off`]), switches offloads off with `ethtool -K`. Off by
//!    default: the datapath handles GSO frames and partial checksums, and offloads off costs ~6x
//!    in TCP throughput.
//!
//! The returned [`Guard`] undoes all of it ([`Guard::undo`], idempotent, also run on `Drop`),
//! removes the state file and releases the locks. After `kill -9` nothing runs, so the next
//! [`HostSetup::apply`] on either interface does it (step 3). The gateway's main loop must turn
//! SIGINT/SIGTERM into a normal return so that the guard is dropped.
//!
//! All paths live under [`HostSetup::run_dir`] (default [`RUN_DIR`]) so tests can use their own.
//! Everything here is per network namespace except the run directory.

use crate::nat::config::{Config, PortRange, Prefix};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Default directory of state and lock files.
pub const RUN_DIR: &str = "/run/rnat";
/// The sysctl holding the reserved ports.
pub const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const STATE_MAGIC: &str = "rnat-host-state 1";

/// Offloads [`HostSetup::offloads_off`] switches off: (`ethtool -K` name, `ethtool -k` name).
pub const OFFLOADS: [(&str, &str); 6] = [
    ("rx", "rx-checksumming"),
    ("tx", "tx-checksumming"),
    ("sg", "scatter-gather"),
    ("tso", "tcp-segmentation-offload"),
    ("gso", "generic-segmentation-offload"),
    ("gro", "generic-receive-offload"),
];

/// What can go wrong setting up or restoring the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("rnat must run as root or with CAP_NET_ADMIN and CAP_NET_RAW (missing: {0})")]
    NotPrivileged(String),
    #[error("the `nft` program was not found: install the nftables package")]
    NftMissing,
    #[error("the `ethtool` program was not found: install the ethtool package")]
    EthtoolMissing,
    #[error("nft refused the ruleset: {0}")]
    Nft(String),
    #[error("ethtool -K {0} failed: {1}")]
    Ethtool(String, String),
    #[error("interface {ifname} is already used by rnat (pid {pid})")]
    InterfaceBusy { ifname: String, pid: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {0}: {1}")]
    BadState(PathBuf, String),
    #[error("invalid host setup: {0}")]
    Invalid(String),
}

fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> HostError {
    let path = path.into();
    move |source| HostError::Io { what, path, source }
}

/// The effective privileges of this process, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
    pub net_admin: bool,
    pub net_raw: bool,
}

/// Reads the effective uid and capabilities of this process.
pub fn privileges() -> Result<Privileges, HostError> {
    let path = "/proc/self/status";
    let s = fs::read_to_string(path).map_err(io_err("cannot read", path))?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .ok_or_else(|| HostError::Invalid(format!("{path} has no {name} line")))
    };
    let euid = field("Uid:")?
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| HostError::Invalid(format!("{path}: bad Uid line")))?;
    let caps = u64::from_str_radix(field("CapEff:")?, 16)
        .map_err(|_| HostError::Invalid(format!("{path}: bad CapEff line")))?;
    Ok(Privileges {
        euid,
        net_admin: caps & (1 << CAP_NET_ADMIN) != 0,
        net_raw: caps & (1 << CAP_NET_RAW) != 0,
    })
}

/// Fails with a clear error unless the process has CAP_NET_ADMIN and CAP_NET_RAW (root has both).
pub fn check_privileges() -> Result<Privileges, HostError> {
    let p = privileges()?;
    let mut missing = Vec::new();
    if !p.net_admin {
        missing.push("CAP_NET_ADMIN");
    }
    if !p.net_raw {
        missing.push("CAP_NET_RAW");
    }
    if !missing.is_empty() {
        let who = if p.euid == 0 {
            "root without capabilities"
        } else {
            "not root"
        };
        return Err(HostError::NotPrivileged(format!(
            "{}; running as {who}",
            missing.join(", ")
        )));
    }
    Ok(p)
}

/// Formats port ranges the way both nft and the sysctl accept them: `1024-2047,4000`.
pub fn format_ranges(ranges: &[PortRange]) -> String {
    let mut s = String::new();
    for r in ranges.iter().filter(|r| !r.is_empty()) {
        if !s.is_empty() {
            s.push(',');
        }
        if r.first == r.last {
            let _ = write!(s, "{}", r.first);
        } else {
            let _ = write!(s, "{}-{}", r.first, r.last);
        }
    }
    s
}

/// Parses `1024-2047,4000` (the sysctl's format).
pub fn parse_ranges(s: &str) -> Result<Vec<PortRange>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

/// The nft identifier for an interface: `rnat_` plus the name with odd characters as `_`.
pub fn table_name(outside: &str) -> String {
    let clean: String = outside
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("rnat_{clean}")
}

/// Everything [`HostSetup::apply`] changed, as recorded in the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    pub pid: u32,
    pub inside: String,
    pub outside: String,
    /// `table netdev NAME` installed.
    pub nft_table: Option<String>,
    /// `ip_local_reserved_ports`: (old value, value rnat wrote).
    pub reserved_ports: Option<(String, String)>,
    /// Offloads switched off: (interface, `ethtool -K` name, was on).
    pub offloads: Vec<(String, String, bool)>,
}

impl HostState {
    /// The state file's text: one `key value` per line.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{STATE_MAGIC}\npid {}\ninside {}\noutside {}\n",
            self.pid, self.inside, self.outside
        );
        if let Some(t) = &self.nft_table {
            let _ = writeln!(s, "nft_table {t}");
        }
        if let Some((old, new)) = &self.reserved_ports {
            let _ = writeln!(s, "reserved_ports_old {old}\nreserved_ports_new {new}");
        }
        for (ifname, feature, on) in &self.offloads {
            let _ = writeln!(
                s,
                "offload {ifname} {feature} {}",
                if *on { "on" } else { "off" }
            );
        }
        s
    }

    /// Parses [`to_text`](Self::to_text)'s output.
    pub fn parse(text: &str) -> Result<HostState, String> {
        let mut lines = text.lines();
        if lines.next() != Some(STATE_MAGIC) {
            return Err(format!("does not start with {STATE_MAGIC:?}"));
        }
        let mut st = HostState::default();
        let (mut old, mut new) = (None, None);
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let (key, val) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "pid" => st.pid = val.parse().map_err(|_| format!("bad pid {val:?}"))?,
                "inside" => st.inside = val.to_string(),
                "outside" => st.outside = val.to_string(),
                "nft_table" => st.nft_table = Some(val.to_string()),
                "reserved_ports_old" => old = Some(val.to_string()),
                "reserved_ports_new" => new = Some(val.to_string()),
                "offload" => {
                    let f: Vec<&str> = val.split(' ').collect();
                    match f[..] {
                        [i, feat, v @ ("on" | "off")] => {
                            st.offloads.push((i.into(), feat.into(), v == "on"))
                        }
                        _ => return Err(format!("bad offload line {line:?}")),
                    }
                }
                _ => return Err(format!("unknown line {line:?}")),
            }
        }
        match (old, new) {
            (Some(o), Some(n)) => st.reserved_ports = Some((o, n)),
            (None, None) => {}
            _ => return Err("reserved_ports_old without reserved_ports_new".into()),
        }
        Ok(st)
    }
}

/// What to set up. Build with [`HostSetup::new`] or [`HostSetup::from_config`], adjust the public
/// fields, then [`apply`](Self::apply).
#[derive(Debug, Clone)]
pub struct HostSetup {
    pub inside: String,
    pub outside: String,
    /// Addresses rnat translates to (the outside drop rules match these).
    pub public_addrs: Vec<Ipv4Addr>,
    /// Ports and ICMP identifiers rnat allocates.
    pub port_ranges: Vec<PortRange>,
    /// Static port forwards: (protocol, public address, public port).
    pub forwards: Vec<(crate::nat::Proto, Ipv4Addr, u16)>,
    /// Inside prefixes; empty: any source on the inside.
    pub inside_prefixes: Vec<Prefix>,
    /// Destinations that belong to the gateway itself (its addresses, directed broadcasts): inside
    /// traffic to them is left to the kernel. See `Snapshot::local_addrs`.
    pub gateway_addrs: Vec<Ipv4Addr>,
    /// Add the port ranges to `ip_local_reserved_ports` (default true).
    pub reserve_ports: bool,
    /// Switch [`OFFLOADS`] off on both interfaces (default false).
    pub offloads_off: bool,
    /// Where state and lock files live (default [`RUN_DIR`]).
    pub run_dir: PathBuf,
}

impl HostSetup {
    pub fn new(inside: impl Into<String>, outside: impl Into<String>) -> Self {
        HostSetup {
            inside: inside.into(),
            outside: outside.into(),
            public_addrs: Vec::new(),
            port_ranges: Vec::new(),
            forwards: Vec::new(),
            inside_prefixes: Vec::new(),
            gateway_addrs: Vec::new(),
            reserve_ports: true,
            offloads_off: false,
            run_dir: PathBuf::from(RUN_DIR),
        }
    }

    /// Public addresses, port ranges and inside prefixes from the engine's config; the gateway's own
    /// addresses from discovery (`Snapshot::local_addrs`).
    pub fn from_config(
        inside: impl Into<String>,
        outside: impl Into<String>,
        cfg: &Config,
        gateway_addrs: Vec<Ipv4Addr>,
    ) -> Self {
        let mut s = HostSetup::new(inside, outside);
        s.public_addrs = cfg.public_addrs.clone();
        s.port_ranges = cfg.port_ranges.clone();
        s.forwards = cfg
            .forwards
            .iter()
            .map(|f| {
                (
                    f.proto,
                    f.public_addr.unwrap_or(cfg.public_addrs[0]),
                    f.public_port,
                )
            })
            .collect();
        s.inside_prefixes = cfg.inside_prefixes.clone();
        s.gateway_addrs = gateway_addrs;
        s.gateway_addrs.extend(cfg.inside_addr);
        s
    }

    /// The state file of this interface pair.
    pub fn state_path(&self) -> PathBuf {
        self.run_dir.join(format!(
            "{}{}-{}.state",
            netns_tag(),
            self.inside,
            self.outside
        ))
    }

    /// The lock file of one interface.
    pub fn lock_path(&self, ifname: &str) -> PathBuf {
        self.run_dir.join(format!("{}{ifname}.lock", netns_tag()))
    }

    fn validate(&self) -> Result<(), HostError> {
        let bad_name =
            |n: &str| n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '"', '\n', '\0']);
        for n in [&self.inside, &self.outside] {
            if bad_name(n) {
                return Err(HostError::Invalid(format!("bad interface name {n:?}")));
            }
        }
        if self.inside == self.outside {
            return Err(HostError::Invalid(
                "inside and outside are the same interface".into(),
            ));
        }
        if self.public_addrs.is_empty() {
            return Err(HostError::Invalid("no public address".into()));
        }
        if self.port_ranges.iter().all(PortRange::is_empty) {
            return Err(HostError::Invalid("no port range".into()));
        }
        Ok(())
    }

    /// The nft script: replaces `table netdev rnat_<outside>` atomically (create-if-missing, delete,
    /// create, in one transaction).
    pub fn ruleset(&self) -> String {
        let table = table_name(&self.outside);
        let mut public = self.public_addrs.clone();
        public.sort();
        public.dedup();
        let public = set(public.iter().map(ToString::to_string));
        let ports = format!(
            "{{ {} }}",
            format_ranges(&self.port_ranges).replace(',', ", ")
        );
        let to_ports =
            format!("ip daddr {public} meta l4proto {{ tcp, udp }} th dport {ports} counter drop");
        let echo = format!("ip daddr {public} icmp type echo-reply icmp id {ports} counter drop");
        // Pool addresses no interface of the host holds: only rnat serves them, so nothing else
        // sent to them may reach the kernel (which would forward it back out).
        let pool_only: Vec<String> = self
            .public_addrs
            .iter()
            .filter(|a| !self.gateway_addrs.contains(a))
            .map(ToString::to_string)
            .collect();
        let pool_only = if pool_only.is_empty() {
            String::new()
        } else {
            format!(
                "\t\tip daddr {} counter drop comment \"rnat pool addresses\"\n",
                set(pool_only.into_iter())
            )
        };
        // Sources that never come from outside (RFC 1812 5.3.7): the inside prefixes, the
        // gateway's own addresses, "this network", loopback, multicast and reserved. Without this
        // the kernel would answer such spoofed packets (RST, ICMP) into the LAN.
        let mut bogus: Vec<String> = normalize(&self.inside_prefixes)
            .iter()
            .map(|p| format!("{}/{}", p.addr, p.len))
            .collect();
        let mut own_addrs: Vec<Ipv4Addr> = self
            .gateway_addrs
            .iter()
            .chain(self.public_addrs.iter())
            .copied()
            .filter(|a| {
                let top = u32::from(*a) >> 24;
                top != 0
                    && top != 127
                    && top < 224
                    && !normalize(&self.inside_prefixes)
                        .iter()
                        .any(|p| p.contains(u32::from(*a)))
            })
            .collect();
        own_addrs.sort();
        own_addrs.dedup();
        bogus.extend(own_addrs.iter().map(ToString::to_string));
        bogus.extend([
            "0.0.0.0/8".into(),
            "127.0.0.0/8".into(),
            "224.0.0.0/3".into(),
        ]);
        let spoofed = format!(
            "\t\tip saddr {} counter drop comment \"rnat spoofed sources\"\n",
            set(bogus.into_iter())
        );
        let forwards: String = self
            .forwards
            .iter()
            .map(|(p, a, port)| {
                format!(
                    "\t\tip daddr {a} {} dport {port} counter drop comment \"rnat forward\"\n",
                    p.name()
                )
            })
            .collect();

        // Inside: never forward; keep the gateway's own destinations (and broadcast/multicast).
        let multicast: Prefix = Prefix {
            addr: Ipv4Addr::new(224, 0, 0, 0),
            len: 4,
        };
        let mut own: Vec<Ipv4Addr> = self
            .gateway_addrs
            .iter()
            .copied()
            .filter(|a| !a.is_broadcast() && !multicast.contains(u32::from(*a)))
            .collect();
        own.sort();
        own.dedup();
        let mut own: Vec<String> = own.iter().map(ToString::to_string).collect();
        own.push("224.0.0.0/4".into());
        own.push("255.255.255.255".into());
        let src = match normalize(&self.inside_prefixes) {
            p if p.is_empty() => String::new(),
            p => format!(
                "ip saddr {} ",
                set(p.iter().map(|p| format!("{}/{}", p.addr, p.len)))
            ),
        };
        let not_own = format!("{src}ip daddr != {} counter drop", set(own.into_iter()));

        format!(
            "table netdev {table} {{}}\n\
             delete table netdev {table}\n\
             table netdev {table} {{\n\
             \tcomment \"rnat: keep the kernel away from translated traffic\"\n\
             \tchain outside_ingress {{\n\
             \t\ttype filter hook ingress device \"{outside}\" priority -500; policy accept;\n\
             {spoofed}\
             \t\t{to_ports} comment \"rnat mapped ports\"\n\
             \t\t{echo} comment \"rnat mapped ICMP ids\"\n\
             {forwards}{pool_only}\
             \t}}\n\
             \tchain inside_ingress {{\n\
             \t\ttype filter hook ingress device \"{inside}\" priority -500; policy accept;\n\
             \t\t{to_ports} comment \"rnat hairpin\"\n\
             {forwards}\
             \t\t{not_own} comment \"rnat translated, not forwarded\"\n\
             \t}}\n\
             }}\n",
            outside = self.outside,
            inside = self.inside,
        )
    }

    /// What the XDP program on one side redirects to rnat (`--backend xdp`): the same split as
    /// [`ruleset`](Self::ruleset)'s drops (invariant 8), plus, on the outside, ICMP errors about
    /// rnat's ports and non-first fragments to a public address, which AF_PACKET saw as a tap
    /// while the kernel also got them.
    #[cfg(feature = "xdp")]
    pub fn xdp_rules(&self, role: crate::datapath::Role) -> crate::datapath::XdpRules {
        let mut public = self.public_addrs.clone();
        public.sort();
        public.dedup();
        let pool_only = public
            .iter()
            .copied()
            .filter(|a| !self.gateway_addrs.contains(a))
            .collect();
        let mut own: Vec<Ipv4Addr> = self.gateway_addrs.clone();
        own.sort();
        own.dedup();
        crate::datapath::XdpRules {
            role,
            public,
            pool_only,
            ranges: self
                .port_ranges
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| (r.first, r.last))
                .collect(),
            forwards: self
                .forwards
                .iter()
                .map(|(p, a, port)| (p.ip_number(), *a, *port))
                .collect(),
            inside_prefixes: normalize(&self.inside_prefixes)
                .iter()
                .map(|p| {
                    let mask = if p.len == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(p.len))
                    };
                    (u32::from(p.addr) & mask, mask)
                })
                .collect(),
            own,
        }
    }

    /// Applies the setup; see the module docs for the steps. On failure everything already changed
    /// is undone.
    pub fn apply(&self) -> Result<Guard, HostError> {
        self.validate()?;
        check_privileges()?;
        check_program("nft", HostError::NftMissing)?;
        if self.offloads_off {
            check_program("ethtool", HostError::EthtoolMissing)?;
        }
        fs::create_dir_all(&self.run_dir).map_err(io_err("cannot create", &self.run_dir))?;

        let mut locks = Vec::new();
        for ifname in [&self.inside, &self.outside] {
            locks.push(lock_interface(&self.lock_path(ifname), ifname)?);
        }

        // We hold both locks: any state file naming our interfaces belongs to a dead run.
        self.clean_stale()?;

        let mut state = HostState {
            pid: std::process::id(),
            inside: self.inside.clone(),
            outside: self.outside.clone(),
            nft_table: Some(table_name(&self.outside)),
            ..HostState::default()
        };
        let mut warnings = Vec::new();
        let writable = || OpenOptions::new().write(true).open(RESERVED_PORTS);
        if self.reserve_ports
            && matches!(writable(), Err(e) if e.kind() == io::ErrorKind::PermissionDenied)
        {
            // Running with CAP_NET_ADMIN + CAP_NET_RAW only (not uid 0): /proc/sys is root's.
            warnings.push(format!(
                "cannot write {RESERVED_PORTS} without root: rnat's ports are not reserved from the host's own sockets                  (set it before starting rnat, e.g. ExecStartPre=+sysctl -w net.ipv4.ip_local_reserved_ports={})",
                format_ranges(&self.port_ranges)
            ));
        } else if self.reserve_ports {
            let old = fs::read_to_string(RESERVED_PORTS)
                .map_err(io_err("cannot read", RESERVED_PORTS))?;
            let old = old.trim().to_string();
            let ours = format_ranges(&self.port_ranges);
            let new = if old.is_empty() {
                ours
            } else {
                format!("{old},{ours}")
            };
            warnings.extend(ephemeral_warning(&new));
            state.reserved_ports = Some((old, new));
        }
        if self.offloads_off {
            for ifname in [&self.inside, &self.outside] {
                for (feature, on) in offload_states(ifname)? {
                    if on {
                        state.offloads.push((ifname.clone(), feature, true));
                    }
                }
            }
        }
        let path = self.state_path();
        write_state(&path, &state)?;

        let mut guard = Guard {
            state,
            state_path: path,
            locks,
            done: false,
            warnings,
        };
        if let Err(e) = self.make_changes(&guard.state) {
            if let Err(u) = guard.undo() {
                tracing::error!("undo after failed setup also failed: {u}");
            }
            return Err(e);
        }
        for w in &guard.warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(table = %table_name(&self.outside), state = %guard.state_path.display(), "host set up");
        Ok(guard)
    }

    fn make_changes(&self, st: &HostState) -> Result<(), HostError> {
        nft(&self.ruleset())?;
        if let Some((_, new)) = &st.reserved_ports {
            write_sysctl(RESERVED_PORTS, new)?;
        }
        for (ifname, feature, _) in &st.offloads {
            ethtool_set(ifname, feature, false)?;
        }
        Ok(())
    }

    /// Undoes every state file in the run directory that names the inside or outside interface.
    fn clean_stale(&self) -> Result<(), HostError> {
        let entries = fs::read_dir(&self.run_dir).map_err(io_err("cannot read", &self.run_dir))?;
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "state") {
                continue;
            }
            // Interface names are only unique within a network namespace.
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with(&netns_tag()) {
                continue;
            }
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(err) => {
                    tracing::warn!("cannot read {}: {err}", path.display());
                    continue;
                }
            };
            let st = match HostState::parse(&text) {
                Ok(st) => st,
                Err(why) => {
                    // Ours by name but unreadable: refuse rather than guess.
                    if path == self.state_path() {
                        return Err(HostError::BadState(path, why));
                    }
                    continue;
                }
            };
            let ours = [&st.inside, &st.outside]
                .iter()
                .any(|n| **n == self.inside || **n == self.outside);
            if !ours {
                continue;
            }
            tracing::warn!(
                "a previous rnat (pid {}) on {}/{} exited without cleaning up; undoing its changes from {}",
                st.pid,
                st.inside,
                st.outside,
                path.display()
            );
            if let Err(e) = undo_state(&st) {
                // Starting is better than refusing forever; say what may be left over.
                tracing::warn!("could not fully undo {}: {e}", path.display());
            }
            fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
        }
        Ok(())
    }
}

/// A prefix naming this process's network namespace (`ns<inode>-`), so that rnat instances in
/// different namespaces that use the same interface names keep separate lock and state files.
pub fn netns_tag() -> String {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata("/proc/self/ns/net") {
        Ok(m) => format!("ns{}-", m.ino()),
        Err(_) => String::new(),
    }
}

fn set(items: impl Iterator<Item = String>) -> String {
    format!("{{ {} }}", items.collect::<Vec<_>>().join(", "))
}

/// Host bits cleared, covered prefixes removed (nft refuses overlapping intervals), sorted.
fn normalize(prefixes: &[Prefix]) -> Vec<Prefix> {
    let mut v: Vec<Prefix> = prefixes
        .iter()
        .map(|p| Prefix {
            addr: Ipv4Addr::from(u32::from(p.addr) & p.mask()),
            len: p.len,
        })
        .collect();
    v.sort_by_key(|p| (p.len, u32::from(p.addr)));
    let mut out: Vec<Prefix> = Vec::new();
    for p in v {
        if !out
            .iter()
            .any(|q| q.len <= p.len && q.contains(u32::from(p.addr)))
        {
            out.push(p);
        }
    }
    out.sort_by_key(|p| u32::from(p.addr));
    out
}

fn check_program(name: &str, missing: HostError) -> Result<(), HostError> {
    match Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing),
        Err(e) => Err(HostError::Io {
            what: "cannot run",
            path: name.into(),
            source: e,
        }),
    }
}

/// Takes the interface's lock, or says who holds it.
fn lock_interface(path: &Path, ifname: &str) -> Result<File, HostError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("cannot open", path))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let pid = if pid.is_empty() {
                "unknown".to_string()
            } else {
                pid
            };
            return Err(HostError::InterfaceBusy {
                ifname: ifname.to_string(),
                pid,
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("cannot lock", path)(e)),
    }
    f.set_len(0).map_err(io_err("cannot write", path))?;
    (&f).write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(io_err("cannot write", path))?;
    Ok(f)
}

/// Writes the state file atomically and durably (temporary file, fsync, rename).
fn write_state(path: &Path, st: &HostState) -> Result<(), HostError> {
    let tmp = path.with_extension("state.tmp");
    let mut f = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
    f.write_all(st.to_text().as_bytes())
        .map_err(io_err("cannot write", &tmp))?;
    f.sync_all().map_err(io_err("cannot sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("cannot rename to", path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn nft(script: &str) -> Result<(), HostError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                HostError::NftMissing
            } else {
                io_err("cannot run", "nft")(e)
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(io_err("cannot write to", "nft"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err("cannot run", "nft"))?;
    if !out.status.success() {
        return Err(HostError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

fn write_sysctl(path: &str, value: &str) -> Result<(), HostError> {
    // An empty write is ignored by the kernel; a lone newline clears the list.
    fs::write(path, format!("{value}\n")).map_err(io_err("cannot write", path))
}

/// A warning when the reserved ports (`value`) leave the host few or no ephemeral ports.
fn ephemeral_warning(value: &str) -> Option<String> {
    let range = fs::read_to_string(LOCAL_PORT_RANGE).ok()?;
    let mut it = range
        .split_whitespace()
        .filter_map(|v| v.parse::<u16>().ok());
    let (lo, hi) = (it.next()?, it.next()?);
    let reserved = parse_ranges(value).ok()?;
    let free = (lo..=hi)
        .filter(|p| !reserved.iter().any(|r| r.contains(*p)))
        .count();
    let total = hi as usize - lo as usize + 1;
    if free == 0 {
        Some(format!(
            "the reserved ports cover the whole ephemeral range {lo}-{hi}: the host's own outgoing \
             connections will fail with EADDRNOTAVAIL (pick rnat port ranges outside net.ipv4.ip_local_port_range)"
        ))
    } else if free * 4 < total {
        Some(format!(
            "only {free} of the host's {total} ephemeral ports ({lo}-{hi}) remain free"
        ))
    } else {
        None
    }
}

/// (`ethtool -K` name, on) for each of [`OFFLOADS`] that is not fixed.
fn offload_states(ifname: &str) -> Result<Vec<(String, bool)>, HostError> {
    let out = Command::new("ethtool")
        .args(["-k", ifname])
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                HostError::EthtoolMissing
            } else {
                io_err("cannot run", "ethtool")(e)
            }
        })?;
    if !out.status.success() {
        return Err(HostError::Ethtool(
            ifname.to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for (short, long) in OFFLOADS {
        let line = text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(long)
                .and_then(|r| r.strip_prefix(':'))
        });
        if let Some(rest) = line
            && !rest.contains("[fixed]")
        {
            v.push((short.to_string(), rest.trim_start().starts_with("on")));
        }
    }
    Ok(v)
}

fn ethtool_set(ifname: &str, feature: &str, on: bool) -> Result<(), HostError> {
    let out = Command::new("ethtool")
        .args(["-K", ifname, feature, if on { "on" } else { "off" }])
        .output()
        .map_err(io_err("cannot run", "ethtool"))?;
    // ethtool exits non-zero when nothing changed ("Could not change any device features"), e.g.
    // a dependent feature already followed another one: only an error if the state is still wrong.
    let reached = || {
        offload_states(ifname)
            .map(|v| v.iter().any(|(f, now)| f == feature && *now == on))
            .unwrap_or(false)
    };
    if !out.status.success() && !reached() {
        return Err(HostError::Ethtool(
            format!("{ifname} {feature}"),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Reverts everything `st` lists; tries every step and returns the first error.
pub fn undo_state(st: &HostState) -> Result<(), HostError> {
    let mut first: Option<HostError> = None;
    let mut note = |r: Result<(), HostError>| {
        if let Err(e) = r {
            tracing::warn!("undo: {e}");
            first.get_or_insert(e);
        }
    };
    // Forward order: tx/sg must be back on before tso/gso can be.
    for (ifname, feature, on) in &st.offloads {
        if Path::new("/sys/class/net").join(ifname).exists() {
            note(ethtool_set(ifname, feature, *on));
        }
    }
    if let Some((old, new)) = &st.reserved_ports {
        if let Ok(cur) = fs::read_to_string(RESERVED_PORTS)
            && parse_ranges(cur.trim()) != parse_ranges(new)
        {
            tracing::warn!(
                "ip_local_reserved_ports changed since rnat set it ({new:?} -> {:?}); restoring {old:?}",
                cur.trim()
            );
        }
        note(write_sysctl(RESERVED_PORTS, old));
    }
    if let Some(t) = &st.nft_table {
        // Creating then deleting in one transaction never fails on a missing table.
        note(nft(&format!(
            "table netdev {t} {{}}\ndelete table netdev {t}\n"
        )));
    }
    first.map_or(Ok(()), Err)
}

/// Holds the host changes and the interface locks; undoes them on [`undo`](Self::undo) or drop.
#[derive(Debug)]
pub struct Guard {
    state: HostState,
    state_path: PathBuf,
    locks: Vec<File>,
    done: bool,
    warnings: Vec<String>,
}

impl Guard {
    /// What was changed.
    pub fn state(&self) -> &HostState {
        &self.state
    }

    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// Problems found while applying (already logged), e.g. reserved ports eating the host's
    /// ephemeral range.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Reverts every change, removes the state file and releases the locks. Idempotent: after a
    /// success further calls do nothing; after a failure the state file stays (so the next start
    /// retries) and a later call tries again.
    pub fn undo(&mut self) -> Result<(), HostError> {
        if self.done {
            return Ok(());
        }
        undo_state(&self.state)?;
        match fs::remove_file(&self.state_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot remove", &self.state_path)(e)),
        }
        self.done = true;
        self.locks.clear(); // closing the files releases the flocks
        tracing::info!("host setup undone");
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.undo() {
            tracing::error!(
                "cannot undo the host setup: {e} (the next start retries from {})",
                self.state_path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let st = HostState {
            pid: 42,
            inside: "eth1".into(),
            outside: "eth0".into(),
            nft_table: Some("rnat_eth0".into()),
            reserved_ports: Some((String::new(), "1024-65535".into())),
            offloads: vec![("eth0".into(), "gro".into(), true)],
        };
        assert_eq!(HostState::parse(&st.to_text()).unwrap(), st);
        assert!(HostState::parse("garbage").is_err());
    }

    #[test]
    fn ranges_format_and_parse() {
        let r = vec![PortRange::new(1024, 2047), PortRange::new(4000, 4000)];
        assert_eq!(format_ranges(&r), "1024-2047,4000");
        assert_eq!(parse_ranges("1024-2047,4000").unwrap(), r);
        assert_eq!(parse_ranges("").unwrap(), vec![]);
    }

    #[test]
    fn ruleset_mentions_everything() {
        let mut s = HostSetup::new("eth1", "eth0.2");
        s.public_addrs = vec![Ipv4Addr::new(203, 0, 113, 1)];
        s.port_ranges = vec![PortRange::new(20000, 29999)];
        s.inside_prefixes = vec![
            "10.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ];
        s.gateway_addrs = vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(224, 0, 0, 1)];
        let r = s.ruleset();
        assert!(r.contains("table netdev rnat_eth0_2 {"));
        assert!(r.contains("device \"eth0.2\""));
        assert!(r.contains("th dport { 20000-29999 }"));
        assert!(r.contains(
            "ip saddr { 10.0.0.0/8 } ip daddr != { 10.0.0.1, 224.0.0.0/4, 255.255.255.255 }"
        ));
    }
}
