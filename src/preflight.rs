//! `rnat check --inside IF --outside IF`: what on this host would stop rnat working, and how to fix
//! it. Read-only: it changes nothing. Each finding is `ok`, `info` (rnat copes), `warn` (works, but
//! look at it) or `BLOCKER` (rnat will not start or will not translate); the command exits
//! non-zero when there is a blocker.

use crate::control::host;
use crate::control::netlink::{Interface, Watcher};
use crate::nat::Prefix;
use std::fmt::Write as _;
use std::process::{Command, Stdio};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Info,
    Warn,
    Blocker,
}

impl Severity {
    fn tag(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Blocker => "BLOCKER",
        }
    }
}

/// One finding.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub what: String,
    /// How to fix it (empty when nothing to do).
    pub fix: String,
}

/// All findings.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, severity: Severity, what: impl Into<String>, fix: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            what: what.into(),
            fix: fix.into(),
        });
    }

    pub fn blockers(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
            .count()
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        for f in &self.findings {
            let _ = writeln!(o, "[{:<7}] {}", f.severity.tag(), f.what);
            if !f.fix.is_empty() {
                let _ = writeln!(o, "          fix: {}", f.fix);
            }
        }
        let warns = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warn)
            .count();
        let _ = writeln!(
            o,
            "{} blocker(s), {} warning(s): {}",
            self.blockers(),
            warns,
            if self.blockers() == 0 {
                "rnat can run here"
            } else {
                "rnat cannot run here as it is"
            }
        );
        o
    }
}

fn tool(name: &str, args: &[&str]) -> Option<std::process::Output> {
    Command::new(name)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn overlaps(a: &Prefix, b: &Prefix) -> bool {
    let len = a.len.min(b.len);
    let m = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    };
    u32::from(a.addr) & m == u32::from(b.addr) & m
}

/// RFC 4787 REQ-7: each inside prefix that overlaps an outside prefix (e.g. after the outside
/// interface was renumbered by DHCP into the LAN's range), as a sentence. rnat still translates
/// (translated packets are routed only by the outside interface's routes), but remotes in the
/// overlap are taken for inside hosts and cannot be reached.
pub fn overlap_warnings(inside: &[Prefix], outside: &[Prefix]) -> Vec<String> {
    let mut v = Vec::new();
    for a in inside {
        for b in outside {
            if overlaps(a, b) {
                v.push(format!(
                    "inside prefix {}/{} overlaps outside prefix {}/{}: rnat still translates, \
                     but remotes in the overlap are taken for inside hosts and cannot be reached",
                    a.addr, a.len, b.addr, b.len
                ));
            }
        }
    }
    v
}

/// Runs every check.
pub fn check(inside: &str, outside: &str) -> Report {
    let mut r = Report::default();
    if inside == outside {
        r.add(
            Severity::Blocker,
            "--inside and --outside name the same interface",
            "give the interface facing the private hosts and the one facing the public network",
        );
    }
    // Privileges.
    match host::privileges() {
        Ok(p) if p.net_admin && p.net_raw => {
            r.add(Severity::Ok, "CAP_NET_ADMIN and CAP_NET_RAW present", "")
        }
        Ok(p) => r.add(
            Severity::Blocker,
            format!(
                "missing capabilities:{}{} (uid {})",
                if p.net_admin { "" } else { " CAP_NET_ADMIN" },
                if p.net_raw { "" } else { " CAP_NET_RAW" },
                p.euid
            ),
            "run as root, or grant them: setcap cap_net_admin,cap_net_raw+ep $(command -v rnat), \
             or AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW in a systemd unit",
        ),
        Err(e) => r.add(Severity::Warn, format!("cannot read privileges: {e}"), ""),
    }
    // Tools.
    match tool("nft", &["--version"]) {
        Some(o) if o.status.success() => r.add(Severity::Ok, "nft present", ""),
        _ => r.add(
            Severity::Blocker,
            "nft (nftables) not found: rnat installs its ingress drops with it",
            "apt-get install nftables",
        ),
    }
    let have_ethtool = tool("ethtool", &["--version"]).is_some_and(|o| o.status.success());
    if have_ethtool {
        r.add(Severity::Ok, "ethtool present", "");
    } else {
        r.add(
            Severity::Info,
            "ethtool not found: only needed for --offloads-off",
            "apt-get install ethtool",
        );
    }
    // Interfaces.
    let snap = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                Watcher::start()
                    .await
                    .map(|w| w.snapshot())
                    .map_err(|e| e.to_string())
            })
        });
    let snap = match snap {
        Ok(s) => s,
        Err(e) => {
            r.add(
                Severity::Blocker,
                format!("netlink discovery failed: {e}"),
                "",
            );
            return r;
        }
    };
    let mut ifs: Vec<(&str, &Interface)> = Vec::new();
    for (role, name) in [("inside", inside), ("outside", outside)] {
        match snap.ipv4_interface(name) {
            Ok((i, a)) => {
                r.add(
                    Severity::Ok,
                    format!(
                        "{role} interface {name}: {}/{}, MTU {}",
                        a.addr, a.prefix_len, i.mtu
                    ),
                    "",
                );
                if !i.is_running() {
                    r.add(
                        Severity::Warn,
                        format!("{role} interface {name} is not up (no carrier or admin down)"),
                        format!("ip link set {name} up; check the cable/peer"),
                    );
                }
                ifs.push((role, i));
            }
            Err(e) => r.add(
                Severity::Blocker,
                format!("{role} interface {name}: {e}"),
                format!(
                    "check `ip -4 addr show {name}`: the interface must exist with an IPv4 address"
                ),
            ),
        }
    }
    if let [(_, i), (_, o)] = ifs[..] {
        if i.mtu != o.mtu {
            r.add(
                Severity::Info,
                format!(
                    "MTU differs: inside {} {}, outside {} {}; rnat fragments DF-clear packets and \
                     answers DF ones with ICMP fragmentation-needed",
                    i.name, i.mtu, o.name, o.mtu
                ),
                "if path MTU discovery is blocked somewhere, align the MTUs or clamp TCP MSS on the \
                 inside hosts",
            );
        }
        let pre = |x: &Interface| x.addrs.iter().map(|a| a.prefix()).collect::<Vec<_>>();
        for w in overlap_warnings(&pre(i), &pre(o)) {
            r.add(
                Severity::Warn,
                w,
                "renumber one side: private hosts and the public network should not share \
                 addresses",
            );
        }
    }
    // Kernel settings.
    match sysctl("/proc/sys/net/ipv4/ip_forward").as_deref() {
        Some("1") => r.add(
            Severity::Info,
            "net.ipv4.ip_forward=1: fine, rnat's nftables drops keep the kernel away from the \
             traffic rnat translates; the kernel still routes other traffic between interfaces",
            "",
        ),
        Some(v) => r.add(
            Severity::Ok,
            format!("net.ipv4.ip_forward={v}: rnat does not need kernel forwarding"),
            "",
        ),
        None => {}
    }
    for name in ["all", inside, outside] {
        if let Some(v) = sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter")) {
            let sev = if v == "1" {
                Severity::Info
            } else {
                Severity::Ok
            };
            r.add(
                sev,
                format!(
                    "rp_filter[{name}]={v}{}",
                    if v == "1" {
                        " (strict): rnat taps frames before the reverse-path filter, so it only \
                         affects the host's own traffic"
                    } else {
                        ""
                    }
                ),
                "",
            );
        }
    }
    // Offloads: informational.
    if have_ethtool {
        for (_, i) in &ifs {
            if let Some(o) = tool("ethtool", &["-k", &i.name]) {
                let text = String::from_utf8_lossy(&o.stdout);
                let on: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(k, v)| {
                        matches!(
                            k.trim(),
                            "generic-receive-offload"
                                | "generic-segmentation-offload"
                                | "tcp-segmentation-offload"
                                | "rx-checksumming"
                                | "tx-checksumming"
                        ) && v.trim_start().starts_with("on")
                    })
                    .map(|(k, _)| k.trim())
                    .collect();
                r.add(
                    Severity::Info,
                    format!(
                        "offloads on {}: {} (rnat handles GSO and partial checksums; \
                         --offloads-off switches them off for the run)",
                        i.name,
                        if on.is_empty() {
                            "none".into()
                        } else {
                            on.join(", ")
                        }
                    ),
                    "",
                );
            }
        }
    }
    // Other NAT.
    if let Some(o) = tool("nft", &["list", "ruleset"]).filter(|o| o.status.success()) {
        let text = String::from_utf8_lossy(&o.stdout);
        let nat: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| {
                let w = l.to_ascii_lowercase();
                w.contains("masquerade") || w.contains("snat ") || w.contains("dnat ")
            })
            .collect();
        if nat.is_empty() {
            r.add(Severity::Ok, "no other NAT rules in nftables", "");
        } else {
            r.add(
                Severity::Warn,
                format!(
                    "nftables has NAT rules ({}): kernel NAT may pick ports in rnat's ranges for \
                     the traffic rnat leaves to the kernel",
                    nat.join("; ")
                ),
                "remove them (nft list ruleset; nft delete table ...) or keep rnat's --ports \
                 outside the kernel's NAT port range",
            );
        }
    }
    if let Some(o) = tool("iptables-legacy-save", &["-t", "nat"]).filter(|o| o.status.success()) {
        let text = String::from_utf8_lossy(&o.stdout);
        if text.contains("MASQUERADE") || text.contains("SNAT") || text.contains("DNAT") {
            r.add(
                Severity::Warn,
                "legacy iptables has NAT rules (iptables-legacy-save -t nat)",
                "remove them: iptables-legacy -t nat -F",
            );
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_overlap() {
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        assert!(overlaps(&p("10.0.0.0/8"), &p("10.1.0.0/16")));
        assert!(!overlaps(&p("192.168.1.0/24"), &p("203.0.113.0/24")));
        assert!(overlaps(&p("0.0.0.0/0"), &p("203.0.113.0/24")));
    }

    #[test]
    fn rfc4787_req7_overlap_is_warned() {
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let w = overlap_warnings(&[p("192.168.1.0/24")], &[p("192.168.0.0/16")]);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("192.168.1.0/24 overlaps outside prefix 192.168.0.0/16"),
            "{w:?}"
        );
        assert!(overlap_warnings(&[p("192.168.1.0/24")], &[p("203.0.113.0/24")]).is_empty());
    }
}
