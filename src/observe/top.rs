//! `rnat top`: a live view of the busiest sessions and the overall rates, computed by the client
//! from two snapshots (`sessions` and `stats` over the control socket) an interval apart.

use super::socket::{Request, request};
use super::{SessionFilter, SessionRow, StatsReport};
use anyhow::Result;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

/// Options of `rnat top`.
#[derive(Debug, Clone)]
pub struct TopOptions {
    pub interval: Duration,
    /// Number of refreshes; `None`: until interrupted.
    pub iterations: Option<u64>,
    /// Rows shown.
    pub limit: usize,
    pub filter: SessionFilter,
}

type Key = (String, SocketAddrV4, SocketAddrV4);

struct Sample {
    at: Instant,
    stats: StatsReport,
    sessions: HashMap<Key, SessionRow>,
}

fn sample(sock: &Path, filter: &SessionFilter) -> Result<Sample> {
    let stats = request(sock, &Request::Stats)?.stats.unwrap_or_default();
    let rows = request(
        sock,
        &Request::Sessions {
            filter: filter.clone(),
        },
    )?
    .sessions
    .unwrap_or_default();
    Ok(Sample {
        at: Instant::now(),
        stats,
        sessions: rows
            .into_iter()
            .map(|r| ((r.proto.clone(), r.inside, r.remote), r))
            .collect(),
    })
}

fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// One screen: totals and the busiest sessions between `a` and `b`.
fn render(a: &Sample, b: &Sample, limit: usize) -> String {
    let dt = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
    let (sa, sb) = (&a.stats, &b.stats);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "rnat top — {} sessions, {} mappings, up {} s",
        sb.sessions, sb.mappings, sb.uptime_s
    );
    let _ = writeln!(
        o,
        "out {} pkt/s {} bit/s   in {} pkt/s {} bit/s   drops {}/s   new sessions {}/s",
        human(rate(sa.packets.outbound, sb.packets.outbound)),
        human(8.0 * rate(sa.bytes.outbound, sb.bytes.outbound)),
        human(rate(sa.packets.inbound, sb.packets.inbound)),
        human(8.0 * rate(sa.bytes.inbound, sb.bytes.inbound)),
        human(rate(sa.drops.values().sum(), sb.drops.values().sum())),
        human(rate(sa.sessions_created, sb.sessions_created)),
    );
    let mut rows: Vec<(f64, f64, &SessionRow)> = b
        .sessions
        .iter()
        .map(|(k, r)| {
            let (p0, b0) = a
                .sessions
                .get(k)
                .map_or((0, 0), |x| (x.pkts_out + x.pkts_in, x.bytes));
            (rate(b0, r.bytes), rate(p0, r.pkts_out + r.pkts_in), r)
        })
        .collect();
    rows.sort_by(|x, y| {
        y.0.total_cmp(&x.0)
            .then(y.1.total_cmp(&x.1))
            .then(x.2.inside.cmp(&y.2.inside))
    });
    let _ = writeln!(
        o,
        "\n{:<5} {:<21} {:<21} {:<21} {:<12} {:>9} {:>8} {:>6}",
        "PROTO", "INSIDE", "PUBLIC", "REMOTE", "STATE", "BIT/S", "PKT/S", "IDLE"
    );
    for (bps, pps, r) in rows.iter().take(limit) {
        let _ = writeln!(
            o,
            "{:<5} {:<21} {:<21} {:<21} {:<12} {:>9} {:>8} {:>5}s",
            r.proto,
            r.inside.to_string(),
            r.public.to_string(),
            r.remote.to_string(),
            r.state,
            human(bps * 8.0),
            human(*pps),
            r.idle_s
        );
    }
    o
}

/// Runs the view on `sock`.
pub fn run(sock: &Path, opts: &TopOptions) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut prev = sample(sock, &opts.filter)?;
    let mut n = 0u64;
    loop {
        std::thread::sleep(opts.interval);
        let cur = sample(sock, &opts.filter)?;
        let screen = render(&prev, &cur, opts.limit);
        let mut out = std::io::stdout().lock();
        if tty {
            // Clear the screen and go home.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        write!(out, "{screen}")?;
        if !tty {
            writeln!(out)?;
        }
        out.flush()?;
        prev = cur;
        n += 1;
        if opts.iterations.is_some_and(|max| n >= max) {
            return Ok(());
        }
    }
}
