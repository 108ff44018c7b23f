//! `rnat --inside IF --outside IF`: the gateway binary.

use anyhow::{Context, Result, bail};
use clap::Parser;
use rnat::control::host::{self, HostSetup};
use rnat::control::netlink::{Interface, Watcher};
use rnat::datapath::{AfPacket, AfPacketOptions, Backend, PnetOptions, PnetPort, Port};
use rnat::gateway::{GatewayStats, GatewayWorker, Link, engine_time};
use rnat::nat::{Config, Engine, Filtering, PortRange, Prefix, Timeouts};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A userspace NAT gateway: translates the private addresses behind --inside to the public
/// address of --outside.
#[derive(Parser, Debug)]
#[command(name = "rnat", version, about)]
struct Cli {
    /// Interface facing the private hosts.
    #[arg(long, value_name = "IF")]
    inside: String,
    /// Interface facing the public network; its primary IPv4 address is the public address.
    #[arg(long, value_name = "IF")]
    outside: String,
    /// Public address(es) to translate to (repeatable). Default: the outside interface's primary
    /// IPv4 address.
    #[arg(long = "public", value_name = "ADDR")]
    public: Vec<Ipv4Addr>,
    /// Public ports (and ICMP identifiers) rnat may use, e.g. `1024-32767,61000-65535`. Default:
    /// 1024-65535 minus the host's ephemeral range (net.ipv4.ip_local_port_range), so the host's
    /// own connections on the same address keep working.
    #[arg(long, value_name = "RANGES")]
    ports: Option<String>,
    /// Inside prefixes (repeatable); outbound packets from other sources are dropped. Default: the
    /// inside interface's IPv4 prefixes.
    #[arg(long = "inside-prefix", value_name = "PREFIX")]
    inside_prefix: Vec<Prefix>,
    /// Filtering mode for all protocols: endpoint-independent, address-dependent or
    /// address-and-port-dependent.
    #[arg(long, default_value = "address-and-port-dependent")]
    filtering: Filtering,
    /// Override the filtering mode for TCP.
    #[arg(long)]
    filtering_tcp: Option<Filtering>,
    /// Override the filtering mode for UDP.
    #[arg(long)]
    filtering_udp: Option<Filtering>,
    /// Override the filtering mode for ICMP queries.
    #[arg(long)]
    filtering_icmp: Option<Filtering>,
    /// UDP mapping idle timeout, seconds (RFC 4787: at least 120, default 300).
    #[arg(long, default_value_t = 300)]
    udp_timeout: u64,
    /// TCP established idle timeout, seconds (RFC 5382: at least 7440).
    #[arg(long, default_value_t = 7440)]
    tcp_established_timeout: u64,
    /// TCP transitory (closing, reset) timeout, seconds (RFC 5382: at least 240).
    #[arg(long, default_value_t = 240)]
    tcp_transitory_timeout: u64,
    /// TCP opening (SYN seen one way) timeout, seconds.
    #[arg(long, default_value_t = 240)]
    tcp_opening_timeout: u64,
    /// ICMP query timeout, seconds (RFC 5508: at least 60).
    #[arg(long, default_value_t = 60)]
    icmp_timeout: u64,
    /// Accept timeouts below the RFC minimums (labs, tests).
    #[arg(long)]
    allow_short_timeouts: bool,
    /// A freed public port is not reused for this many seconds (RFC 6888: 120).
    #[arg(long, default_value_t = 120)]
    port_cooldown: u64,
    /// Maximum number of sessions (memory is reserved for them at start).
    #[arg(long, default_value_t = 1 << 20)]
    max_sessions: usize,
    /// Datapath backend: af_packet (mmap rings, the default) or pnet (portable fallback).
    #[arg(long, default_value = "af_packet")]
    backend: Backend,
    /// Switch NIC offloads off on both interfaces for the run (not needed: rnat handles GSO and
    /// partial checksums).
    #[arg(long)]
    offloads_off: bool,
    /// Do not add rnat's ports to net.ipv4.ip_local_reserved_ports.
    #[arg(long)]
    no_reserve_ports: bool,
    /// Directory for lock and state files.
    #[arg(long, default_value = host::RUN_DIR)]
    run_dir: PathBuf,
    /// Print the translation table to stdout every N seconds (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    show_sessions: u64,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rnat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

fn open_port(backend: Backend, ifname: &str, mtu: usize) -> Result<Box<dyn Port>> {
    let port: Box<dyn Port> = match backend {
        Backend::AfPacket => {
            let opts = AfPacketOptions {
                promiscuous: false,
                ..AfPacketOptions::default()
            };
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

fn run(cli: Cli) -> Result<()> {
    if cli.inside == cli.outside {
        bail!("--inside and --outside must be different interfaces");
    }
    host::check_privileges()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(cli))
}

async fn serve(cli: Cli) -> Result<()> {
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
    let cfg = Config {
        public_addrs: if cli.public.is_empty() {
            vec![out_addr.addr]
        } else {
            cli.public.clone()
        },
        port_ranges,
        inside_prefixes,
        inside_addr: Some(in_addr.addr),
        filtering_tcp: cli.filtering_tcp.unwrap_or(cli.filtering),
        filtering_udp: cli.filtering_udp.unwrap_or(cli.filtering),
        filtering_icmp: cli.filtering_icmp.unwrap_or(cli.filtering),
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
        shards: 64,
        seed: random_seed(),
        outside_mtu: outside.mtu.min(65535) as u16,
        inside_mtu: inside.mtu.min(65535) as u16,
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
    setup.reserve_ports = !cli.no_reserve_ports;
    setup.offloads_off = cli.offloads_off;
    setup.run_dir = cli.run_dir.clone();
    let mut guard = setup.apply()?;
    for w in guard.warnings() {
        tracing::warn!("{w}");
    }

    let in_port = open_port(cli.backend, &cli.inside, inside.mtu)?;
    let out_port = open_port(cli.backend, &cli.outside, outside.mtu)?;
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let gw_stats = Arc::new(GatewayStats::default());
    let mut gw = GatewayWorker::new(
        engine.worker(),
        (in_port, inside.clone()),
        (out_port, outside.clone()),
        watcher.reader(),
        gw_stats.clone(),
        epoch,
        stop.clone(),
    );
    // Signal handlers go in before "ready", so a signal right after it is not fatal.
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let backend = cli.backend;
    let thread = std::thread::Builder::new()
        .name("rnat-worker".into())
        .spawn(move || gw.run())?;

    let publics: Vec<String> = cfg.public_addrs.iter().map(|a| a.to_string()).collect();
    tracing::info!(
        inside = %cli.inside, outside = %cli.outside, public = %publics.join(","),
        ports = %host::format_ranges(&cfg.port_ranges), backend = ?backend, "translating"
    );
    eprintln!(
        "rnat: ready (inside {} -> outside {} as {})",
        cli.inside,
        cli.outside,
        publics.join(",")
    );

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    let result = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = tick.tick() => {
                ticks += 1;
                let now = engine_time(epoch, Instant::now());
                let removed = engine.expire(now);
                if removed > 0 {
                    tracing::debug!(removed, "expired sessions");
                }
                if cli.show_sessions > 0 && ticks.is_multiple_of(cli.show_sessions) {
                    print_sessions(&engine, now);
                }
                if thread.is_finished() {
                    break Err(anyhow::anyhow!("the datapath thread stopped"));
                }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("datapath: {e}"),
        Err(_) => tracing::error!("datapath thread panicked"),
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

fn print_sessions(engine: &Engine, now: rnat::nat::Time) {
    let mut s = engine.sessions(now);
    s.sort_by_key(|s| (s.inside, s.remote));
    println!(
        "{:<5} {:<21}    {:<21}    {:<21} {:<12} {:>6} {:>8} {:>8}",
        "PROTO", "INSIDE", "PUBLIC", "REMOTE", "STATE", "IDLE", "PKTS", "BYTES"
    );
    for s in &s {
        println!(
            "{:<5} {:<21} -> {:<21} <> {:<21} {:<12} {:>5}s {:>8} {:>8}",
            s.proto.name(),
            s.inside.to_string(),
            s.public.to_string(),
            s.remote.to_string(),
            s.state,
            s.idle.as_secs(),
            s.pkts_out as u64 + s.pkts_in as u64,
            s.bytes
        );
    }
    println!("({} sessions)", s.len());
}
