//! The gateway's options: command-line flags ([`GatewayArgs`]), the TOML configuration file
//! ([`FileConfig`], `--config FILE`) and the merged result ([`Settings`]).
//!
//! Every gateway flag has a key of the same name in the file (`--udp-timeout 600` is
//! `udp-timeout = 600`, `--public A --public B` is `public = ["A", "B"]`). A flag given on the
//! command line overrides the file; a flag not given falls back to the file, then to the default.
//! Unknown keys are an error, so a typo never silently leaves a default in force.

use crate::control::host;
use crate::datapath::{Backend, RxMode};
use crate::nat::{Filtering, Forward, Prefix, UnsolicitedSyn};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Default busy-poll window after traffic (`--busy-poll-us`), microseconds.
pub const DEFAULT_BUSY_POLL_US: u64 = 0;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plain" | "text" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {s:?} (plain or json)")),
        }
    }
}

/// The gateway's command-line options. Everything is optional here so that the configuration
/// file can supply what the command line leaves out; defaults are applied in [`Settings`].
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GatewayArgs {
    /// TOML configuration file; flags given on the command line override it. SIGHUP re-reads it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface facing the private hosts.
    #[arg(long, value_name = "IF")]
    pub inside: Option<String>,
    /// Interface facing the public network; its primary IPv4 address is the public address.
    #[arg(long, value_name = "IF")]
    pub outside: Option<String>,
    /// Public address(es) to translate to (repeatable). Default: the outside interface's primary
    /// IPv4 address.
    #[arg(long = "public", value_name = "ADDR")]
    pub public: Vec<Ipv4Addr>,
    /// Public ports (and ICMP identifiers) rnat may use, e.g. `1024-32767,61000-65535`. Default:
    /// 1024-65535 minus the host's ephemeral range (net.ipv4.ip_local_port_range), so the host's
    /// own connections on the same address keep working.
    #[arg(long, value_name = "RANGES")]
    pub ports: Option<String>,
    /// Inside prefixes (repeatable); outbound packets from other sources are dropped. Default: the
    /// inside interface's IPv4 prefixes.
    #[arg(long = "inside-prefix", value_name = "PREFIX")]
    pub inside_prefix: Vec<Prefix>,
    /// Filtering mode for all protocols: endpoint-independent, address-dependent or
    /// address-and-port-dependent (the default).
    #[arg(long, value_name = "MODE")]
    pub filtering: Option<Filtering>,
    /// Override the filtering mode for TCP.
    #[arg(long, value_name = "MODE")]
    pub filtering_tcp: Option<Filtering>,
    /// Override the filtering mode for UDP.
    #[arg(long, value_name = "MODE")]
    pub filtering_udp: Option<Filtering>,
    /// Override the filtering mode for ICMP queries.
    #[arg(long, value_name = "MODE")]
    pub filtering_icmp: Option<Filtering>,
    /// UDP mapping idle timeout, seconds (RFC 4787: at least 120) [default: 300].
    #[arg(long, value_name = "S")]
    pub udp_timeout: Option<u64>,
    /// TCP established idle timeout, seconds (RFC 5382: at least 7440) [default: 7440].
    #[arg(long, value_name = "S")]
    pub tcp_established_timeout: Option<u64>,
    /// TCP transitory (closing, reset) timeout, seconds (RFC 5382: at least 240) [default: 240].
    #[arg(long, value_name = "S")]
    pub tcp_transitory_timeout: Option<u64>,
    /// TCP opening (SYN seen one way) timeout, seconds [default: 240].
    #[arg(long, value_name = "S")]
    pub tcp_opening_timeout: Option<u64>,
    /// ICMP query timeout, seconds (RFC 5508: at least 60) [default: 60].
    #[arg(long, value_name = "S")]
    pub icmp_timeout: Option<u64>,
    /// Accept timeouts below the RFC minimums (labs, tests).
    #[arg(long)]
    pub allow_short_timeouts: bool,
    /// A freed public port is not reused for this many seconds (RFC 6888: 120) [default: 120].
    #[arg(long, value_name = "S")]
    pub port_cooldown: Option<u64>,
    /// Maximum number of sessions (memory is reserved for them at start) [default: 1048576].
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Static port forward `PROTO:[PUBLIC_ADDR:]PORT=INSIDE_ADDR:PORT`, e.g.
    /// `tcp:8080=192.168.1.10:80` (repeatable; adds to those of the config file).
    #[arg(long = "forward", value_name = "FORWARD")]
    pub forward: Vec<Forward>,
    /// Most public ports one inside address may hold at once (RFC 6888 REQ-4); 0: unlimited.
    #[arg(long, value_name = "N")]
    pub max_ports_per_subscriber: Option<u32>,
    /// Most sessions one inside address may have (RFC 6888 REQ-5); 0: half of --max-sessions.
    #[arg(long, value_name = "N")]
    pub max_sessions_per_subscriber: Option<u32>,
    /// Port-block allocation (RFC 6888 REQ-14): give each inside address blocks of N contiguous,
    /// N-aligned ports on its public address, take its ports from them, and log one line per
    /// block instead of one per mapping. N: a power of two from 8 to 4096; 0: off [default: 0].
    /// A subscriber holds at most --max-ports-per-subscriber / N blocks (rounded up), or
    /// 65536 / N / 4 without a port quota.
    #[arg(long, value_name = "N")]
    pub port_block_size: Option<u16>,
    /// Unsolicited inbound TCP SYNs (no mapping, or refused by filtering) are held 6 s, dropped
    /// silently if an outbound SYN for the same connection follows, else: reject (answer with
    /// ICMP port-unreachable, rate-limited; the default, RFC 5382 REQ-4) or drop (forget them
    /// silently, REQ-4a).
    #[arg(long, value_name = "POLICY")]
    pub unsolicited_syn: Option<UnsolicitedSyn>,
    /// Datapath backend: af_packet (the default), pnet (portable fallback) or xdp (AF_XDP with
    /// rnat's own XDP program; needs a build with `--features xdp`).
    #[arg(long)]
    pub backend: Option<Backend>,
    /// af_packet receive path: v2 (TPACKET_V2 ring of MTU-sized slots, woken per frame; GSO
    /// super-frames read whole from the socket; the default), mmsg (recvmmsg batches, woken per
    /// frame) or v3 (TPACKET_V3 ring, woken per block: ~1 ms latency at low rates).
    #[arg(long, value_name = "MODE")]
    pub rx_mode: Option<RxMode>,
    /// Datapath threads (af_packet; each with its own sockets in a PACKET_FANOUT group per
    /// interface, sharing one translation table) [default: the number of CPUs, at most 8]. The
    /// pnet backend always runs one.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// After traffic, each worker keeps polling its sockets without sleeping for this many
    /// microseconds, so a reply that follows soon (ping echo, TCP ACK) finds it awake: lower
    /// latency for at most that much CPU per burst (poll mode, as VPP runs it, when it exceeds
    /// the gaps between frames); 0 switches it off [default: 0].
    #[arg(long, value_name = "US")]
    pub busy_poll_us: Option<u64>,
    /// Run the datapath workers under SCHED_FIFO at this priority (1-99), so that on a busy
    /// machine they run as soon as frames arrive, like the kernel's own packet processing; needs
    /// CAP_SYS_NICE. 0: normal scheduling [default: 0].
    #[arg(long, value_name = "PRIO")]
    pub realtime_priority: Option<u8>,
    /// Switch NIC offloads off on both interfaces for the run (not needed: rnat handles GSO and
    /// partial checksums).
    #[arg(long)]
    pub offloads_off: bool,
    /// Do not add rnat's ports to net.ipv4.ip_local_reserved_ports.
    #[arg(long)]
    pub no_reserve_ports: bool,
    /// Directory for lock, state and control socket files [default: /run/rnat].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Print the translation table to stdout every N seconds (0: never, the default).
    #[arg(long, value_name = "N")]
    pub show_sessions: Option<u64>,
    /// Log level (error, warn, info, debug, trace) [default: info]; RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format: plain (the default) or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log one line when a mapping (protocol, inside endpoint, public endpoint) is created and one
    /// when it ends (RFC 6888 REQ-12; no destination). One-second resolution.
    #[arg(long)]
    pub log_mappings: bool,
    /// Serve Prometheus metrics over HTTP at ADDR:PORT (off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Keep the translation table in FILE across restarts: restored at start, written every
    /// --snapshot-interval seconds and on SIGTERM/SIGINT, atomically (off by default).
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Seconds between snapshot writes (0: only on exit) [default: 60].
    #[arg(long, value_name = "S")]
    pub snapshot_interval: Option<u64>,
    /// Serve PCP (RFC 6887: MAP, PEER, ANNOUNCE) and NAT-PMP (RFC 6886) on UDP port 5351 of the
    /// gateway's inside address, so inside hosts can ask for inbound port mappings (off by
    /// default: it lets any inside host open ports to the outside).
    #[arg(long, overrides_with = "no_pcp")]
    pub pcp: bool,
    /// Do not serve PCP/NAT-PMP (overrides `pcp = true` in the config file).
    #[arg(long, overrides_with = "pcp")]
    pub no_pcp: bool,
    /// Longest lifetime granted to a PCP/NAT-PMP mapping, in seconds (longer requests are
    /// shortened) [default: 7200].
    #[arg(long, value_name = "S")]
    pub pcp_max_lifetime: Option<u32>,
    /// Capture what enters and leaves both interfaces into DIR/<interface>-w<worker>.pcap, for
    /// Wireshark (a debugging aid: it costs a copy per frame).
    #[arg(long, value_name = "DIR")]
    pub pcap: Option<PathBuf>,
}

/// The configuration file: the same options as [`GatewayArgs`], keys spelled like the flags.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub inside: Option<String>,
    pub outside: Option<String>,
    pub public: Option<Vec<Ipv4Addr>>,
    pub ports: Option<String>,
    pub inside_prefix: Option<Vec<String>>,
    pub filtering: Option<String>,
    pub filtering_tcp: Option<String>,
    pub filtering_udp: Option<String>,
    pub filtering_icmp: Option<String>,
    pub udp_timeout: Option<u64>,
    pub tcp_established_timeout: Option<u64>,
    pub tcp_transitory_timeout: Option<u64>,
    pub tcp_opening_timeout: Option<u64>,
    pub icmp_timeout: Option<u64>,
    pub allow_short_timeouts: Option<bool>,
    pub port_cooldown: Option<u64>,
    pub max_sessions: Option<usize>,
    pub forward: Option<Vec<String>>,
    pub max_ports_per_subscriber: Option<u32>,
    pub max_sessions_per_subscriber: Option<u32>,
    pub port_block_size: Option<u16>,
    pub unsolicited_syn: Option<String>,
    pub backend: Option<String>,
    pub rx_mode: Option<String>,
    pub workers: Option<usize>,
    pub busy_poll_us: Option<u64>,
    pub realtime_priority: Option<u8>,
    pub offloads_off: Option<bool>,
    pub no_reserve_ports: Option<bool>,
    pub run_dir: Option<PathBuf>,
    pub show_sessions: Option<u64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub log_mappings: Option<bool>,
    pub metrics_listen: Option<SocketAddr>,
    pub snapshot: Option<PathBuf>,
    pub snapshot_interval: Option<u64>,
    pub pcap: Option<PathBuf>,
    pub pcp: Option<bool>,
    pub pcp_max_lifetime: Option<u32>,
}

impl FileConfig {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<FileConfig> {
        Ok(toml::from_str(text)?)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        FileConfig::parse(&text)
            .with_context(|| format!("bad configuration file {}", path.display()))
    }
}

/// The merged, validated gateway options.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub inside: String,
    pub outside: String,
    pub public: Vec<Ipv4Addr>,
    pub ports: Option<String>,
    pub inside_prefix: Vec<Prefix>,
    pub filtering_tcp: Filtering,
    pub filtering_udp: Filtering,
    pub filtering_icmp: Filtering,
    pub udp_timeout: u64,
    pub tcp_established_timeout: u64,
    pub tcp_transitory_timeout: u64,
    pub tcp_opening_timeout: u64,
    pub icmp_timeout: u64,
    pub allow_short_timeouts: bool,
    pub port_cooldown: u64,
    pub max_sessions: usize,
    pub forwards: Vec<Forward>,
    pub max_ports_per_subscriber: u32,
    pub max_sessions_per_subscriber: u32,
    /// Ports per block (0: block mode off).
    pub port_block_size: u16,
    pub unsolicited_syn: UnsolicitedSyn,
    pub backend: Backend,
    /// af_packet receive path.
    pub rx_mode: RxMode,
    /// Datapath threads; 0: one per CPU (at most 8).
    pub workers: usize,
    /// Busy-poll window after traffic, microseconds (0: off).
    pub busy_poll_us: u64,
    /// SCHED_FIFO priority of the workers (0: normal scheduling).
    pub realtime_priority: u8,
    pub offloads_off: bool,
    pub reserve_ports: bool,
    pub run_dir: PathBuf,
    pub show_sessions: u64,
    pub log_level: String,
    pub log_format: LogFormat,
    pub log_mappings: bool,
    pub metrics_listen: Option<SocketAddr>,
    /// The snapshot file (`--snapshot`), if any.
    pub snapshot: Option<PathBuf>,
    /// Seconds between snapshot writes; 0: only on exit.
    pub snapshot_interval: u64,
    /// `--pcap`: capture directory.
    pub pcap: Option<PathBuf>,
    /// Serve PCP and NAT-PMP on the inside address.
    pub pcp: bool,
    /// Longest PCP/NAT-PMP mapping lifetime, seconds.
    pub pcp_max_lifetime: u32,
}

fn parse_opt<T: std::str::FromStr<Err = String>>(
    key: &str,
    v: &Option<String>,
) -> Result<Option<T>> {
    match v {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{key}: {e}")),
    }
}

impl Settings {
    /// Reads `args.config` (if any) and merges it under the flags.
    pub fn resolve(args: &GatewayArgs) -> Result<Settings> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Settings::merge(args, &file)
    }

    /// Flags over file over defaults.
    pub fn merge(a: &GatewayArgs, f: &FileConfig) -> Result<Settings> {
        let inside = a.inside.clone().or_else(|| f.inside.clone());
        let outside = a.outside.clone().or_else(|| f.outside.clone());
        let (Some(inside), Some(outside)) = (inside, outside) else {
            bail!(
                "the inside and outside interfaces are required (--inside IF --outside IF, or \
                 `inside`/`outside` in the --config file)"
            );
        };
        let inside_prefix = if !a.inside_prefix.is_empty() {
            a.inside_prefix.clone()
        } else {
            f.inside_prefix
                .iter()
                .flatten()
                .map(|s| {
                    s.parse::<Prefix>()
                        .map_err(|e| anyhow::anyhow!("inside-prefix: {e}"))
                })
                .collect::<Result<_>>()?
        };
        let filtering = a
            .filtering
            .or(parse_opt("filtering", &f.filtering)?)
            .unwrap_or(Filtering::AddressAndPortDependent);
        let per = |flag: Option<Filtering>, key: &str, v: &Option<String>| -> Result<Filtering> {
            Ok(flag.or(parse_opt(key, v)?).unwrap_or(filtering))
        };
        let ports = a.ports.clone().or_else(|| f.ports.clone());
        if let Some(p) = &ports {
            host::parse_ranges(p).map_err(|e| anyhow::anyhow!("ports: {e}"))?;
        }
        let log_level = a
            .log_level
            .clone()
            .or_else(|| f.log_level.clone())
            .unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|e| anyhow::anyhow!("log-level {log_level:?}: {e}"))?;
        let s = Settings {
            inside,
            outside,
            public: if a.public.is_empty() {
                f.public.clone().unwrap_or_default()
            } else {
                a.public.clone()
            },
            ports,
            inside_prefix,
            filtering_tcp: per(a.filtering_tcp, "filtering-tcp", &f.filtering_tcp)?,
            filtering_udp: per(a.filtering_udp, "filtering-udp", &f.filtering_udp)?,
            filtering_icmp: per(a.filtering_icmp, "filtering-icmp", &f.filtering_icmp)?,
            udp_timeout: a.udp_timeout.or(f.udp_timeout).unwrap_or(300),
            tcp_established_timeout: a
                .tcp_established_timeout
                .or(f.tcp_established_timeout)
                .unwrap_or(7440),
            tcp_transitory_timeout: a
                .tcp_transitory_timeout
                .or(f.tcp_transitory_timeout)
                .unwrap_or(240),
            tcp_opening_timeout: a
                .tcp_opening_timeout
                .or(f.tcp_opening_timeout)
                .unwrap_or(240),
            icmp_timeout: a.icmp_timeout.or(f.icmp_timeout).unwrap_or(60),
            allow_short_timeouts: a.allow_short_timeouts || f.allow_short_timeouts.unwrap_or(false),
            port_cooldown: a.port_cooldown.or(f.port_cooldown).unwrap_or(120),
            max_sessions: a.max_sessions.or(f.max_sessions).unwrap_or(1 << 20),
            forwards: {
                let mut v = Vec::new();
                for spec in f.forward.iter().flatten() {
                    v.push(spec.parse::<Forward>().map_err(anyhow::Error::msg)?);
                }
                v.extend(a.forward.iter().copied());
                v
            },
            max_ports_per_subscriber: a
                .max_ports_per_subscriber
                .or(f.max_ports_per_subscriber)
                .unwrap_or(0),
            max_sessions_per_subscriber: a
                .max_sessions_per_subscriber
                .or(f.max_sessions_per_subscriber)
                .unwrap_or(0),
            port_block_size: {
                let n = a.port_block_size.or(f.port_block_size).unwrap_or(0);
                if n != 0 && (!n.is_power_of_two() || !(8..=4096).contains(&n)) {
                    bail!(
                        "--port-block-size {n}: must be 0 (off) or a power of two from 8 to 4096"
                    );
                }
                n
            },
            unsolicited_syn: match a.unsolicited_syn {
                Some(p) => p,
                None => parse_opt("unsolicited-syn", &f.unsolicited_syn)?.unwrap_or_default(),
            },
            backend: match a.backend {
                Some(b) => b,
                None => parse_opt("backend", &f.backend)?.unwrap_or_default(),
            },
            rx_mode: match a.rx_mode {
                Some(m) => m,
                None => parse_opt("rx-mode", &f.rx_mode)?.unwrap_or_default(),
            },
            workers: a.workers.or(f.workers).unwrap_or(0),
            busy_poll_us: a
                .busy_poll_us
                .or(f.busy_poll_us)
                .unwrap_or(DEFAULT_BUSY_POLL_US),
            realtime_priority: a.realtime_priority.or(f.realtime_priority).unwrap_or(0),
            offloads_off: a.offloads_off || f.offloads_off.unwrap_or(false),
            reserve_ports: !(a.no_reserve_ports || f.no_reserve_ports.unwrap_or(false)),
            run_dir: a
                .run_dir
                .clone()
                .or_else(|| f.run_dir.clone())
                .unwrap_or_else(|| PathBuf::from(host::RUN_DIR)),
            show_sessions: a.show_sessions.or(f.show_sessions).unwrap_or(0),
            log_level,
            log_format: match a.log_format {
                Some(x) => x,
                None => parse_opt("log-format", &f.log_format)?.unwrap_or_default(),
            },
            log_mappings: a.log_mappings || f.log_mappings.unwrap_or(false),
            metrics_listen: a.metrics_listen.or(f.metrics_listen),
            snapshot: a.snapshot.clone().or_else(|| f.snapshot.clone()),
            pcap: a.pcap.clone().or_else(|| f.pcap.clone()),
            snapshot_interval: a.snapshot_interval.or(f.snapshot_interval).unwrap_or(60),
            pcp: if a.pcp || a.no_pcp {
                a.pcp
            } else {
                f.pcp.unwrap_or(false)
            },
            pcp_max_lifetime: a.pcp_max_lifetime.or(f.pcp_max_lifetime).unwrap_or(7200),
        };
        if s.pcp_max_lifetime == 0 {
            bail!("--pcp-max-lifetime must be at least 1 second");
        }
        if s.inside == s.outside {
            bail!("--inside and --outside must be different interfaces");
        }
        if s.realtime_priority > 99 {
            bail!("--realtime-priority must be between 0 (off) and 99");
        }
        Ok(s)
    }

    /// What differs between the running settings and `new`, except what [`Settings::reload`]
    /// applies live: the names of the options that only take effect after a restart.
    pub fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! cmp {
            ($($f:ident => $n:literal),* $(,)?) => {
                $( if self.$f != new.$f { v.push($n); } )*
            };
        }
        cmp!(
            inside => "inside", outside => "outside", public => "public", ports => "ports",
            inside_prefix => "inside-prefix", filtering_tcp => "filtering-tcp",
            filtering_udp => "filtering-udp", filtering_icmp => "filtering-icmp",
            udp_timeout => "udp-timeout", tcp_established_timeout => "tcp-established-timeout",
            tcp_transitory_timeout => "tcp-transitory-timeout",
            tcp_opening_timeout => "tcp-opening-timeout", icmp_timeout => "icmp-timeout",
            allow_short_timeouts => "allow-short-timeouts", port_cooldown => "port-cooldown",
            max_sessions => "max-sessions", backend => "backend", offloads_off => "offloads-off",
            rx_mode => "rx-mode",
            workers => "workers", busy_poll_us => "busy-poll-us",
            realtime_priority => "realtime-priority",
            forwards => "forward", max_ports_per_subscriber => "max-ports-per-subscriber",
            max_sessions_per_subscriber => "max-sessions-per-subscriber",
            port_block_size => "port-block-size",
            reserve_ports => "no-reserve-ports", run_dir => "run-dir",
            log_format => "log-format", metrics_listen => "metrics-listen",
            snapshot => "snapshot", snapshot_interval => "snapshot-interval", pcap => "pcap", pcp => "pcp",
            pcp_max_lifetime => "pcp-max-lifetime",
        );
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> GatewayArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: GatewayArgs,
        }
        let mut argv = vec!["rnat"];
        argv.extend_from_slice(v);
        <P as clap::Parser>::parse_from(argv).a
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let f = FileConfig::parse(
            "inside = \"eth1\"\noutside = \"eth0\"\nudp-timeout = 600\nicmp-timeout = 90\n\
             public = [\"203.0.113.7\"]\nfiltering = \"endpoint-independent\"\n\
             log-format = \"json\"\nmetrics-listen = \"127.0.0.1:9100\"\n",
        )
        .unwrap();
        let s = Settings::merge(&args(&["--udp-timeout", "400", "--inside", "lan0"]), &f).unwrap();
        assert_eq!(s.inside, "lan0");
        assert_eq!(s.outside, "eth0");
        assert_eq!(s.udp_timeout, 400);
        assert_eq!(s.icmp_timeout, 90);
        assert_eq!(s.tcp_established_timeout, 7440);
        assert_eq!(s.public, vec![Ipv4Addr::new(203, 0, 113, 7)]);
        assert_eq!(s.filtering_udp, Filtering::EndpointIndependent);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(s.reserve_ports);
        assert_eq!(s.unsolicited_syn, UnsolicitedSyn::Reject);
        let f = FileConfig::parse("inside = \"a\"\noutside = \"b\"\nunsolicited-syn = \"drop\"\n")
            .unwrap();
        let s = Settings::merge(&args(&[]), &f).unwrap();
        assert_eq!(s.unsolicited_syn, UnsolicitedSyn::Drop);
        let s = Settings::merge(&args(&["--unsolicited-syn", "reject"]), &f).unwrap();
        assert_eq!(s.unsolicited_syn, UnsolicitedSyn::Reject);
        let bad = FileConfig::parse("inside = \"a\"\noutside = \"b\"\nunsolicited-syn = \"rst\"\n")
            .unwrap();
        assert!(Settings::merge(&args(&[]), &bad).is_err());
    }

    #[test]
    fn pcp_is_off_by_default_and_flags_beat_the_file() {
        let base = "inside = \"a\"\noutside = \"b\"\n";
        let none = FileConfig::parse(base).unwrap();
        let on = FileConfig::parse(&format!("{base}pcp = true\npcp-max-lifetime = 600\n")).unwrap();
        let s = Settings::merge(&args(&[]), &none).unwrap();
        assert_eq!((s.pcp, s.pcp_max_lifetime), (false, 7200));
        let s = Settings::merge(&args(&[]), &on).unwrap();
        assert_eq!((s.pcp, s.pcp_max_lifetime), (true, 600));
        assert!(!Settings::merge(&args(&["--no-pcp"]), &on).unwrap().pcp);
        assert!(Settings::merge(&args(&["--pcp"]), &none).unwrap().pcp);
        assert!(
            !Settings::merge(&args(&["--pcp", "--no-pcp"]), &none)
                .unwrap()
                .pcp
        );
        let s = Settings::merge(&args(&["--pcp-max-lifetime", "60"]), &on).unwrap();
        assert_eq!(s.pcp_max_lifetime, 60);
        assert!(Settings::merge(&args(&["--pcp-max-lifetime", "0"]), &on).is_err());
    }

    #[test]
    fn bad_files_are_rejected_clearly() {
        let e = FileConfig::parse("udp-timeot = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("udp-timeot"), "{e:#}");
        assert!(FileConfig::parse("udp-timeout = \"x\"\n").is_err());
        let f =
            FileConfig::parse("inside = \"a\"\noutside = \"b\"\nfiltering = \"open\"\n").unwrap();
        assert!(Settings::merge(&args(&[]), &f).is_err());
        assert!(Settings::merge(&args(&[]), &FileConfig::default()).is_err());
    }

    #[test]
    fn port_block_size_flag_and_key() {
        let f =
            FileConfig::parse("inside = \"a\"\noutside = \"b\"\nport-block-size = 128\n").unwrap();
        assert_eq!(
            Settings::merge(&args(&[]), &f).unwrap().port_block_size,
            128
        );
        let s = Settings::merge(&args(&["--port-block-size", "64"]), &f).unwrap();
        assert_eq!(s.port_block_size, 64);
        let s = Settings::merge(&args(&["--port-block-size", "0"]), &f).unwrap();
        assert_eq!(s.port_block_size, 0);
        for bad in ["100", "4", "8192"] {
            let e = Settings::merge(&args(&["--port-block-size", bad]), &f).unwrap_err();
            assert!(e.to_string().contains("power of two from 8 to 4096"), "{e}");
        }
    }

    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                let f = FileConfig::load(&e.path()).unwrap();
                Settings::merge(&GatewayArgs::default(), &f)
                    .unwrap_or_else(|err| panic!("{}: {err:#}", e.path().display()));
                n += 1;
            }
        }
        assert!(n >= 3);
    }
}
