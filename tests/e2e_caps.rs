//! rnat runs without root, with only CAP_NET_ADMIN and CAP_NET_RAW (what configs/rnat.service
//! grants), and still translates.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn e2e_runs_with_only_net_admin_and_net_raw() {
    require_root!();
    let lab = Lab::new();
    // A run directory the unprivileged user owns (systemd's RuntimeDirectory= does this).
    let run = lab.temp_path("run-rnat");
    std::fs::create_dir_all(&run).unwrap();
    lab.exec_ok("gw", &["chown", "65534:65534", run.to_str().unwrap()]);
    let bin = rnat_bin();
    let caps = "-all,+net_admin,+net_raw";
    let argv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        &format!("--bounding-set={caps}"),
        bin.to_str().unwrap(),
        "--inside",
        "eth1",
        "--outside",
        "eth0",
        "--run-dir",
        run.to_str().unwrap(),
    ];
    let mut rnat = lab.start_gateway(&argv);
    // Its effective capabilities are exactly those two (bits 12 and 13), and it is not root.
    let status = std::fs::read_to_string(format!("/proc/{}/status", rnat.pid())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(field("CapEff:"), "0000000000003000", "{status}");
    assert_eq!(field("Uid:"), "65534");
    let obs = scenarios::ping(&lab, "h1").unwrap_or_else(|e| rnat.fail(&e));
    obs.assert_translated().unwrap_or_else(|e| rnat.fail(&e));
    let obs = scenarios::http_download(&lab, "h2").unwrap_or_else(|e| rnat.fail(&e));
    obs.assert_translated().unwrap_or_else(|e| rnat.fail(&e));
    // Net sysctls of the namespace are writable with CAP_NET_ADMIN: the ports are reserved.
    let reserved = lab.exec_ok("gw", &["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]);
    assert!(reserved.contains("1024-32767"), "{reserved}");
    rnat.stop_with(libc::SIGTERM, Duration::from_secs(5))
        .unwrap_or_else(|e| rnat.fail(&e));
    let tables = lab.exec_ok("gw", &["nft", "list", "tables"]);
    assert!(
        !tables.contains("rnat_"),
        "nft table removed on exit: {tables}"
    );
}
