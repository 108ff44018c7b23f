//! `rnat --inside IF --outside IF`: the gateway binary; `rnat sessions|stats|flush|top|check`:
//! its clients and preflight.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rnat::control::host::{self, HostSetup};
use rnat::control::netlink::{Interface, Watcher};
use rnat::control::pcp;
use rnat::datapath::{
    AfPacket, AfPacketOptions, Backend, Fanout, FanoutMode, PnetOptions, PnetPort, Port, RxMode,
};
use rnat::gateway::{GatewayStats, GatewayWorker, Link, engine_time};
use rnat::nat::{Config, Engine, PortRange, Timeouts};
use rnat::observe::maplog::MappingLog;
use rnat::observe::socket::{self, Request};
use rnat::observe::{self as obs, Observer, SessionFilter};
use rnat::persist::SnapshotFile;
use rnat::settings::{GatewayArgs, LogFormat, Settings};
use std::io::IsTerminal as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// A userspace NAT gateway: translates the private addresses behind --inside to the public
/// address of --outside. Without a subcommand it runs the gateway; the subcommands talk to a
/// running one (sessions, stats, flush, top) or check the host (check).
#[derive(Parser, Debug)]
#[command(name = "rnat", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    gw: GatewayArgs,
}

/// Which running instance a client subcommand talks to.
#[derive(Args, Debug, Clone)]
struct Target {
    /// The instance's inside interface (needed when several run).
    #[arg(long, value_name = "IF")]
    inside: Option<String>,
    /// The instance's outside interface (needed when several run).
    #[arg(long, value_name = "IF")]
    outside: Option<String>,
    /// The instance's run directory.
    #[arg(long, value_name = "DIR", default_value = host::RUN_DIR)]
    run_dir: PathBuf,
}

impl Target {
    fn socket(&self) -> Result<PathBuf> {
        socket::find_socket(
            &self.run_dir,
            self.inside.as_deref(),
            self.outside.as_deref(),
        )
    }
}

/// Session selection of `sessions` and `top`.
#[derive(Args, Debug, Clone)]
struct Select {
    /// Only this protocol.
    #[arg(long, value_parser = ["tcp", "udp", "icmp"])]
    proto: Option<String>,
    /// Only sessions whose inside, public or remote address is IP.
    #[arg(long, value_name = "IP")]
    addr: Option<Ipv4Addr>,
}

impl Select {
    fn filter(&self) -> SessionFilter {
        SessionFilter {
            proto: self.proto.clone(),
            addr: self.addr,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the translation table of the running gateway.
    Sessions {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        select: Select,
        /// JSON output (an array of sessions).
        #[arg(long)]
        json: bool,
    },
    /// Print the counters of the running gateway.
    Stats {
        #[command(flatten)]
        target: Target,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove sessions (and their mappings) from the running gateway.
    Flush {
        #[command(flatten)]
        target: Target,
        /// Only the sessions of this inside address.
        #[arg(long, value_name = "IP")]
        addr: Option<Ipv4Addr>,
    },
    /// Live view of the busiest sessions and the rates.
    Top {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        select: Select,
        /// Seconds between refreshes (0.2 to 60).
        #[arg(long, default_value_t = 1.0, value_name = "S")]
        interval: f64,
        /// Stop after N refreshes.
        #[arg(long, value_name = "N")]
        iterations: Option<u64>,
        /// One refresh, then exit (same as --iterations 1).
        #[arg(long)]
        once: bool,
        /// Sessions shown.
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
    },
    /// Check the host for what would stop rnat working on these interfaces, and how to fix it.
    Check {
        /// Interface facing the private hosts.
        #[arg(long, value_name = "IF")]
        inside: String,
        /// Interface facing the public network.
        #[arg(long, value_name = "IF")]
        outside: String,
    },
}

type LogHandle = reload::Handle<EnvFilter, Registry>;

/// Installs the subscriber; the handle reloads the level (None when RUST_LOG rules).
fn init_logging(level: &str, format: LogFormat) -> Option<LogHandle> {
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (EnvFilter::new(level), false),
    };
    let (layer, handle) = reload::Layer::new(filter);
    let (plain, json) = match format {
        LogFormat::Plain => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(layer)
        .with(plain)
        .with(json)
        .init();
    (!from_env).then_some(handle)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(cmd) => {
            init_logging("warn", LogFormat::Plain);
            client(cmd)
        }
        None => match Settings::resolve(&cli.gw) {
            Ok(settings) => {
                let log = init_logging(&settings.log_level, settings.log_format);
                run(cli.gw, settings, log)
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rnat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Sessions {
            target,
            select,
            json,
        } => {
            let r = socket::request(
                &target.socket()?,
                &Request::Sessions {
                    filter: select.filter(),
                },
            )?;
            let rows = r.sessions.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", obs::format_sessions(&rows));
            }
        }
        Cmd::Stats { target, json } => {
            let r = socket::request(&target.socket()?, &Request::Stats)?;
            let st = r.stats.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", obs::format_stats(&st));
            }
        }
        Cmd::Flush { target, addr } => {
            let r = socket::request(&target.socket()?, &Request::Flush { addr })?;
            println!("flushed {} sessions", r.flushed.unwrap_or(0));
        }
        Cmd::Top {
            target,
            select,
            interval,
            iterations,
            once,
            limit,
        } => {
            if !(0.2..=60.0).contains(&interval) {
                bail!("--interval must be between 0.2 and 60 seconds");
            }
            let opts = obs::top::TopOptions {
                interval: Duration::from_secs_f64(interval),
                iterations: if once { Some(1) } else { iterations },
                limit,
                filter: select.filter(),
            };
            obs::top::run(&target.socket()?, &opts)?;
        }
        Cmd::Check { inside, outside } => {
            let report = rnat::preflight::check(&inside, &outside);
            print!("{}", report.render());
            if report.blockers() > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// 1024-65535 minus the host's ephemeral port range.
fn default_port_ranges() -> Vec<PortRange> {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|x| x.parse::<u32>().ok());
            Some((it.next()?, it.next()?))
        })
        .unwrap_or((32768, 60999));
    let mut v = Vec::new();
    if lo > 1024 {
        v.push(PortRange::new(1024, (lo - 1).min(65535) as u16));
    }
    if hi < 65535 {
        v.push(PortRange::new((hi + 1).max(1024) as u16, 65535));
    }
    if v.is_empty() {
        v.push(PortRange::new(1024, 65535));
    }
    v
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u64::from_ne_bytes(b) ^ (std::process::id() as u64).rotate_left(32)
}

fn link_of(i: &Interface, addr: Ipv4Addr) -> Result<Link> {
    let mac = i
        .mac
        .with_context(|| format!("interface {} has no MAC address", i.name))?;
    Ok(Link {
        name: i.name.clone(),
        ifindex: i.index,
        mac,
        addr,
        mtu: i.mtu as usize,
    })
}

/// Datapath threads for `--workers N` (0: one per CPU, at most 8); the pnet backend runs one;
/// the xdp backend one per receive queue it binds (worker i: queue i), one unless asked.
fn worker_count(requested: usize, backend: Backend) -> usize {
    if backend == Backend::Xdp {
        return requested.clamp(1, 64);
    }
    if backend == Backend::Pnet {
        if requested > 1 {
            tracing::warn!("the pnet backend runs one datapath thread; --workers ignored");
        }
        return 1;
    }
    match requested {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8),
        n => n.min(64),
    }
}

/// PACKET_FANOUT group ids of this process, one per interface (inside, outside): derived from the
/// pid, so two rnat instances in one namespace do not share a group (interface locks already keep
/// two instances off the same interface; the kernel matches groups per namespace).
fn fanout_groups() -> (u16, u16) {
    let base = ((std::process::id() & 0x3fff) as u16) << 1;
    (base, base | 1)
}

/// The XDP programs of `--backend xdp` (inside, outside), attached before any socket opens.
#[cfg(feature = "xdp")]
struct XdpSides(rnat::datapath::XdpAttachment, rnat::datapath::XdpAttachment);
#[cfg(not(feature = "xdp"))]
struct XdpSides;

/// Attaches the XDP programs for `--backend xdp`, or says why it cannot.
#[cfg(feature = "xdp")]
fn xdp_attach(setup: &HostSetup, workers: usize) -> Result<XdpSides> {
    use rnat::datapath::{Role, XdpAttachment, XdpMode};
    let attach = |ifname: &str, role| {
        let a = XdpAttachment::attach(ifname, &setup.xdp_rules(role), workers as u32, XdpMode::Auto)
            .with_context(|| {
                format!(
                    "cannot attach rnat's XDP program to {ifname} (--backend xdp needs Linux >= 5.9 \
                     with BPF and AF_XDP, and CAP_BPF/CAP_NET_ADMIN); run with --backend af_packet instead"
                )
            })?;
        tracing::info!(interface = ifname, mode = ?a.mode(), "XDP program attached");
        Ok::<_, anyhow::Error>(a)
    };
    Ok(XdpSides(
        attach(&setup.inside, Role::Inside)?,
        attach(&setup.outside, Role::Outside)?,
    ))
}

#[cfg(not(feature = "xdp"))]
fn xdp_attach(_: &HostSetup, _: usize) -> Result<XdpSides> {
    bail!(
        "--backend xdp: this rnat was built without the `xdp` cargo feature; rebuild with \
         `cargo build --release --features xdp`, or run with --backend af_packet"
    )
}

fn open_port(
    backend: Backend,
    rx_mode: RxMode,
    ifname: &str,
    mtu: usize,
    fanout: Option<(u16, usize)>,
    xdp: Option<(&XdpSides, bool, usize)>,
) -> Result<Box<dyn Port>> {
    let port: Box<dyn Port> = match backend {
        #[cfg(feature = "xdp")]
        Backend::Xdp => {
            let (sides, inside, queue) = xdp.context("XDP programs not attached")?;
            let att = if inside { &sides.0 } else { &sides.1 };
            let opts = rnat::datapath::XdpOptions {
                queue: queue as u32,
                ..Default::default()
            };
            Box::new(
                rnat::datapath::XdpPort::open(ifname, att, &opts).with_context(|| {
                    format!("cannot open {ifname} queue {queue} (AF_XDP); run with --backend af_packet instead")
                })?,
            )
        }
        #[cfg(not(feature = "xdp"))]
        Backend::Xdp => {
            let _ = xdp;
            bail!("--backend xdp: this rnat was built without the `xdp` cargo feature")
        }
        Backend::AfPacket => {
            let mut opts = AfPacketOptions {
                rx_mode,
                promiscuous: false,
                ..AfPacketOptions::default()
            };
            if let Some((group, workers)) = fanout {
                // Hash mode is symmetric per flow; defrag makes all fragments of a datagram meet
                // on one worker (its fragment tracker). Rings shrink with the worker count.
                opts.fanout = Some(Fanout {
                    group,
                    mode: FanoutMode::Hash,
                    defrag: true,
                });
                opts.block_count = (opts.block_count / workers as u32).max(16);
            }
            Box::new(
                AfPacket::open(ifname, &opts)
                    .with_context(|| format!("cannot open {ifname} (AF_PACKET)"))?,
            )
        }
        Backend::Pnet => {
            let opts = PnetOptions {
                mtu: Some(mtu),
                promiscuous: false,
                ..PnetOptions::default()
            };
            Box::new(
                PnetPort::open(ifname, &opts)
                    .with_context(|| format!("cannot open {ifname} (pnet)"))?,
            )
        }
    };
    Ok(port)
}

fn run(args: GatewayArgs, cli: Settings, log: Option<LogHandle>) -> Result<ExitCode> {
    if cli.backend == Backend::Xdp && !rnat::datapath::XDP_BUILT {
        // Said before anything is set up; no silent fallback to another datapath.
        xdp_attach(&HostSetup::new(&cli.inside, &cli.outside), 1)?;
    }
    host::check_privileges()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args, cli, log))?;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: re-reads the configuration file and applies what can change live (log level, the
/// mapping log, `show-sessions`); the rest is reported as needing a restart. A bad file is
/// rejected and the running configuration kept.
fn reload(
    args: &GatewayArgs,
    running: &mut Settings,
    log: Option<&LogHandle>,
    engine: &Engine,
    now: rnat::nat::Time,
) {
    let Some(file) = &args.config else {
        tracing::warn!("SIGHUP: no --config file to reload");
        return;
    };
    let new = match Settings::resolve(args) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                "configuration reload rejected, keeping the running configuration: {e:#}"
            );
            return;
        }
    };
    if new.log_level != running.log_level {
        match log {
            Some(h) => match h.reload(EnvFilter::new(&new.log_level)) {
                Ok(()) => running.log_level = new.log_level.clone(),
                Err(e) => tracing::warn!("cannot change the log level: {e}"),
            },
            None => tracing::warn!("log level not changed: RUST_LOG is set"),
        }
    }
    running.log_mappings = new.log_mappings;
    running.show_sessions = new.show_sessions;
    // What the engine can change live: timers, filtering, cool-down, quotas, forwards.
    let mut cfg = engine.current_config();
    cfg.timeouts = Timeouts {
        udp: Duration::from_secs(new.udp_timeout),
        tcp_established: Duration::from_secs(new.tcp_established_timeout),
        tcp_transitory: Duration::from_secs(new.tcp_transitory_timeout),
        tcp_opening: Duration::from_secs(new.tcp_opening_timeout),
        icmp: Duration::from_secs(new.icmp_timeout),
    };
    (cfg.filtering_tcp, cfg.filtering_udp, cfg.filtering_icmp) =
        (new.filtering_tcp, new.filtering_udp, new.filtering_icmp);
    cfg.port_cooldown = Duration::from_secs(new.port_cooldown);
    cfg.forwards = new.forwards.clone();
    cfg.max_ports_per_subscriber = new.max_ports_per_subscriber;
    cfg.max_sessions_per_subscriber = new.max_sessions_per_subscriber;
    cfg.unsolicited_syn = new.unsolicited_syn;
    let short = cfg.rfc_timer_violations();
    if !short.is_empty() && !new.allow_short_timeouts {
        let list: Vec<String> = short.iter().map(|e| e.to_string()).collect();
        tracing::error!(
            "configuration reload rejected, keeping the running configuration: {}",
            list.join("; ")
        );
        return;
    }
    match engine.reconfigure(&cfg, now) {
        Ok(r) => {
            if !r.applied.is_empty() {
                tracing::info!(applied = %r.applied.join(", "), "engine reconfigured, sessions kept");
            }
            let live = engine.current_config();
            running.udp_timeout = live.timeouts.udp.as_secs();
            running.tcp_established_timeout = live.timeouts.tcp_established.as_secs();
            running.tcp_transitory_timeout = live.timeouts.tcp_transitory.as_secs();
            running.tcp_opening_timeout = live.timeouts.tcp_opening.as_secs();
            running.icmp_timeout = live.timeouts.icmp.as_secs();
            (
                running.filtering_tcp,
                running.filtering_udp,
                running.filtering_icmp,
            ) = (live.filtering_tcp, live.filtering_udp, live.filtering_icmp);
            running.port_cooldown = live.port_cooldown.as_secs();
            running.forwards = live.forwards.clone();
            running.max_ports_per_subscriber = live.max_ports_per_subscriber;
            running.max_sessions_per_subscriber = live.max_sessions_per_subscriber;
            running.unsolicited_syn = live.unsolicited_syn;
            running.allow_short_timeouts = new.allow_short_timeouts;
        }
        Err(e) => {
            tracing::error!(
                "configuration reload rejected, keeping the running configuration: {e}"
            );
            return;
        }
    }
    let fixed = running.needs_restart(&new);
    if !fixed.is_empty() {
        tracing::warn!(
            "{} changed in {} but cannot change while running; restart rnat to apply",
            fixed.join(", "),
            file.display()
        );
    }
    tracing::info!(
        file = %file.display(), log_level = %running.log_level,
        log_mappings = running.log_mappings, "configuration reloaded"
    );
}

async fn serve(args: GatewayArgs, mut cli: Settings, log: Option<LogHandle>) -> Result<()> {
    let watcher = Watcher::start().await.context("netlink discovery")?;
    let snap = watcher.snapshot();
    let (out_if, out_addr) = snap.ipv4_interface(&cli.outside)?;
    let (in_if, in_addr) = snap.ipv4_interface(&cli.inside)?;
    let outside = link_of(out_if, out_addr.addr)?;
    let inside = link_of(in_if, in_addr.addr)?;

    let port_ranges = match &cli.ports {
        Some(s) => host::parse_ranges(s).map_err(anyhow::Error::msg)?,
        None => default_port_ranges(),
    };
    let inside_prefixes = if cli.inside_prefix.is_empty() {
        in_if.addrs.iter().map(|a| a.prefix()).collect()
    } else {
        cli.inside_prefix.clone()
    };
    let mut outside_prefixes: Vec<_> = out_if.addrs.iter().map(|a| a.prefix()).collect();
    for w in rnat::preflight::overlap_warnings(&inside_prefixes, &outside_prefixes) {
        tracing::warn!("{w}");
    }
    // `..Config::default()` keeps options the CLI does not set yet at their defaults.
    #[allow(clippy::needless_update)]
    let cfg = Config {
        public_addrs: if cli.public.is_empty() {
            vec![out_addr.addr]
        } else {
            cli.public.clone()
        },
        port_ranges,
        inside_prefixes,
        inside_addr: Some(in_addr.addr),
        filtering_tcp: cli.filtering_tcp,
        filtering_udp: cli.filtering_udp,
        filtering_icmp: cli.filtering_icmp,
        timeouts: Timeouts {
            udp: Duration::from_secs(cli.udp_timeout),
            tcp_established: Duration::from_secs(cli.tcp_established_timeout),
            tcp_transitory: Duration::from_secs(cli.tcp_transitory_timeout),
            tcp_opening: Duration::from_secs(cli.tcp_opening_timeout),
            icmp: Duration::from_secs(cli.icmp_timeout),
        },
        port_cooldown: Duration::from_secs(cli.port_cooldown),
        inbound_refresh: true,
        max_sessions: cli.max_sessions,
        forwards: cli.forwards.clone(),
        max_ports_per_subscriber: cli.max_ports_per_subscriber,
        max_sessions_per_subscriber: cli.max_sessions_per_subscriber,
        port_block_size: cli.port_block_size,
        unsolicited_syn: cli.unsolicited_syn,
        shards: 64,
        // The previous run's seed, with its snapshot: paired pooling stays as it was.
        seed: rnat::persist::seed(cli.snapshot.as_deref()).unwrap_or_else(random_seed),
        outside_mtu: outside.mtu.min(65535) as u16,
        inside_mtu: inside.mtu.min(65535) as u16,
        ..Config::default()
    };
    let short = cfg.rfc_timer_violations();
    if !short.is_empty() && !cli.allow_short_timeouts {
        let list: Vec<String> = short.iter().map(|e| e.to_string()).collect();
        bail!(
            "{} (pass --allow-short-timeouts to run anyway)",
            list.join("; ")
        );
    }
    let engine = Engine::new(cfg.clone())?;

    let mut setup = HostSetup::from_config(&cli.inside, &cli.outside, &cfg, snap.local_addrs());
    setup.reserve_ports = cli.reserve_ports;
    setup.offloads_off = cli.offloads_off;
    setup.run_dir = cli.run_dir.clone();
    let mut guard = setup.apply()?;
    for w in guard.warnings() {
        tracing::warn!("{w}");
    }

    // One GatewayWorker per thread, each with its own sockets on both interfaces, joined into
    // one fanout group per interface; all share the engine (sharded table), so the return traffic
    // of a flow finds its session on whichever worker receives it.
    let workers = worker_count(cli.workers, cli.backend);
    let (in_group, out_group) = fanout_groups();
    // --backend xdp: one program per interface (detached when the last port closes, or by the
    // kernel when rnat dies), one socket per (interface, queue), worker i on queue i. The ports
    // hold their programs; the attachments themselves end with this block.
    let ports = {
        let xdp = match cli.backend {
            Backend::Xdp => Some(xdp_attach(&setup, workers)?),
            _ => None,
        };
        let mut ports = Vec::with_capacity(workers);
        for w in 0..workers {
            let fo = |g| (workers > 1 && cli.backend != Backend::Xdp).then_some((g, workers));
            ports.push((
                open_port(
                    cli.backend,
                    cli.rx_mode,
                    &cli.inside,
                    inside.mtu,
                    fo(in_group),
                    xdp.as_ref().map(|x| (x, true, w)),
                )?,
                open_port(
                    cli.backend,
                    cli.rx_mode,
                    &cli.outside,
                    outside.mtu,
                    fo(out_group),
                    xdp.as_ref().map(|x| (x, false, w)),
                )?,
            ));
        }
        ports
    };
    let epoch = Instant::now();
    // The previous run's sessions, before any datapath thread starts.
    let mut snapshot = (cli.snapshot.clone()).map(|p| SnapshotFile::new(p, cli.snapshot_interval));
    if let Some(s) = &snapshot {
        s.restore(&engine, engine_time(epoch, epoch));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let gw_stats = Arc::new(GatewayStats::default());
    let mut observer = Observer::new(engine.clone(), gw_stats.clone(), epoch);
    // PCP/NAT-PMP on the inside address (RFC 6888 REQ-9), before "ready".
    let pcp_task = if cli.pcp {
        let at = std::net::SocketAddrV4::new(in_addr.addr, rnat::wire::pcp::SERVER_PORT);
        let sock = pcp::bind(at).with_context(|| format!("PCP server on {at}"))?;
        let stats = Arc::new(pcp::PcpStats::default());
        observer = observer.with_pcp(stats.clone());
        let responder = pcp::Responder::new(engine.worker(), cli.pcp_max_lifetime, stats);
        tracing::info!(%at, max_lifetime = cli.pcp_max_lifetime, "serving PCP and NAT-PMP");
        Some(tokio::spawn(pcp::serve(sock, responder, move || {
            engine_time(epoch, Instant::now())
        })))
    } else {
        None
    };
    // The control socket (after the interface locks: they make a socket file left by a dead
    // instance safe to replace) and the metrics listener, both before "ready".
    let (ctl_listener, ctl_file) =
        socket::bind(socket::socket_path(&cli.run_dir, &cli.inside, &cli.outside))?;
    let ctl_task = tokio::spawn(socket::serve(ctl_listener, observer.clone()));
    let metrics_task = match cli.metrics_listen {
        Some(addr) => {
            let l = obs::metrics::bind(addr).await?;
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
            Some(tokio::spawn(obs::metrics::serve(l, observer.clone())))
        }
        None => None,
    };
    let mut gws: Vec<GatewayWorker> = ports
        .into_iter()
        .map(|(in_port, out_port)| {
            GatewayWorker::new(
                engine.worker(),
                (in_port, inside.clone()),
                (out_port, outside.clone()),
                watcher.reader(),
                gw_stats.clone(),
                epoch,
                stop.clone(),
            )
        })
        .collect();
    let shared = (
        rnat::gateway::SharedNeighbours::default(),
        rnat::gateway::SharedNeighbours::default(),
    );
    for gw in gws.iter_mut() {
        gw.share_neighbours(&shared.0, &shared.1);
        gw.set_busy_poll(Duration::from_micros(cli.busy_poll_us));
    }
    if let Some(dir) = &cli.pcap {
        for (i, gw) in gws.iter_mut().enumerate() {
            gw.capture_to(dir, i)
                .with_context(|| format!("--pcap {}", dir.display()))?;
        }
        tracing::info!(dir = %dir.display(), "capturing both interfaces to pcap files");
    }
    // Signal handlers go in before "ready", so a signal right after it is not fatal.
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let backend = cli.backend;
    let mut threads = Vec::with_capacity(gws.len());
    let prio = cli.realtime_priority;
    let (sched_tx, sched_rx) = std::sync::mpsc::channel();
    for (i, mut gw) in gws.into_iter().enumerate() {
        let sched_tx = sched_tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("rnat-worker-{i}"))
                .spawn(move || {
                    if prio > 0 {
                        let r = rnat::datapath::set_realtime(prio);
                        let failed = r.is_err();
                        let _ = sched_tx.send(r);
                        if failed {
                            return Ok(());
                        }
                    }
                    gw.run()
                })?,
        );
    }
    if prio > 0 {
        for _ in 0..threads.len() {
            sched_rx
                .recv()
                .context("a datapath thread ended before it started")?
                .with_context(|| {
                    format!("--realtime-priority {prio}: SCHED_FIFO for the workers (needs CAP_SYS_NICE)")
                })?;
        }
    }

    let publics: Vec<String> = cfg.public_addrs.iter().map(|a| a.to_string()).collect();
    tracing::info!(
        inside = %cli.inside, outside = %cli.outside, public = %publics.join(","),
        ports = %host::format_ranges(&cfg.port_ranges), backend = ?backend, rx_mode = ?cli.rx_mode, workers,
        control = %ctl_file.path().display(), "translating"
    );
    eprintln!(
        "rnat: ready (inside {} -> outside {} as {})",
        cli.inside,
        cli.outside,
        publics.join(",")
    );

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    let mut maplog = cli.log_mappings.then(MappingLog::new);
    let result = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = sighup.recv() => {
                reload(&args, &mut cli, log.as_ref(), &engine, engine_time(epoch, Instant::now()));
                match (&maplog, cli.log_mappings) {
                    (None, true) => maplog = Some(MappingLog::new()),
                    (Some(_), false) => maplog = None,
                    _ => {}
                }
            }
            _ = tick.tick() => {
                ticks += 1;
                let now = engine_time(epoch, Instant::now());
                let removed = engine.expire(now);
                if let Some(s) = snapshot.as_mut() {
                    s.tick(&engine, now);
                }
                if removed > 0 {
                    tracing::debug!(removed, "expired sessions");
                }
                // RFC 4787 REQ-7: the outside address may be renumbered (DHCP) into an inside
                // prefix while rnat runs; say so when it happens.
                if let Ok(i) = watcher.snapshot().interface(&cli.outside) {
                    let now_prefixes: Vec<_> = i.addrs.iter().map(|a| a.prefix()).collect();
                    if now_prefixes != outside_prefixes {
                        for w in rnat::preflight::overlap_warnings(&cfg.inside_prefixes, &now_prefixes) {
                            tracing::warn!("outside addresses changed: {w}");
                        }
                        outside_prefixes = now_prefixes;
                    }
                }
                if let Some(m) = maplog.as_mut() {
                    m.tick_engine(&engine, now);
                }
                if cli.show_sessions > 0 && ticks.is_multiple_of(cli.show_sessions) {
                    print!("{}", obs::format_sessions(&observer.sessions(&SessionFilter::default())));
                }
                if threads.iter().any(|t| t.is_finished()) {
                    break Err(anyhow::anyhow!("a datapath thread stopped"));
                }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    ctl_task.abort();
    if let Some(t) = pcp_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    drop(ctl_file);
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("datapath: {e}"),
            Err(_) => tracing::error!("datapath thread panicked"),
        }
    }
    if let Some(m) = maplog.as_mut() {
        m.finish();
    }
    // The datapath threads have stopped: the table is final.
    if let Some(s) = snapshot.as_mut() {
        s.save(&engine, engine_time(epoch, Instant::now()));
    }
    guard.undo()?;
    let s = engine.stats();
    tracing::info!(
        out = s.pkts_out,
        inb = s.pkts_in,
        sessions = engine.session_count(),
        "stopped; host settings restored"
    );
    result
}
