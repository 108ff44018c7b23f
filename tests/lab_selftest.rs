//! Self-tests of the lab (`tools/lab`) and the harness (`tests/common`), independent of rnat.
//!
//! - With the kernel's own NAT (`tools/lab nat-kernel on`) every e2e scenario passes, including
//!   the "only the public address is seen" assertions.
//! - With plain forwarding (no NAT, route back to 192.168.1.0/24 on rtr) traffic flows but the
//!   same assertions FAIL: the harness detects untranslated traffic.
//! - Without either, the inside cannot reach the server at all (so in the e2e tests, any
//!   connectivity is rnat's doing).
//!
//! Run: `sudo -E cargo test --test lab_selftest` (tests skip with a note unless root).

mod common;

use common::*;
use std::time::Duration;

fn kernel_nat_lab() -> Lab {
    let lab = Lab::new();
    lab.tool(&["nat-kernel", "on"]);
    lab
}

fn plain_forward_lab() -> Lab {
    let lab = Lab::new();
    lab.tool(&["plain-forward", "on"]);
    lab
}

/// Under plain forwarding, the scenario must work, and both translation checks must fail
/// naming the inside address.
fn assert_detected_untranslated(obs: &Observation, inside: &[&str]) {
    let e = obs
        .server_saw_only_public()
        .expect_err("server-side check must reject untranslated traffic");
    assert!(
        inside.iter().any(|ip| e.contains(ip)),
        "server-side error should name an inside address {inside:?}: {e}"
    );
    let e = obs
        .wire
        .check_translated()
        .expect_err("wire check must reject untranslated traffic");
    assert!(
        e.contains("192.168.1."),
        "wire error should show the leak: {e}"
    );
    assert!(obs.assert_translated().is_err());
}

// ----- the lab itself -----

#[test]
fn selftest_topology_hops_offloads_and_ipv6() {
    require_root!();
    let lab = Lab::new();
    for (host, addr) in [
        ("h1", GW_INSIDE_IP),
        ("h2", GW_INSIDE_IP),
        ("h1", H2_IP),
        ("gw", RTR_GW_SIDE_IP),
        ("srv", RTR_SRV_SIDE_IP),
        ("rtr", SRV_IP),
    ] {
        lab.exec_ok(host, &["ping", "-n", "-c", "1", "-W", "2", addr]);
    }
    // Gateway interfaces carry the exact names rnat is given.
    let links = lab.exec_ok("gw", &["ip", "-br", "addr"]);
    assert!(
        links.contains("eth1") && links.contains(GW_INSIDE_IP),
        "{links}"
    );
    assert!(
        links.contains("eth0") && links.contains(GW_PUBLIC_IP),
        "{links}"
    );
    // Gateway forwards nothing by itself; rtr routes.
    assert_eq!(
        lab.exec_ok("gw", &["sysctl", "-n", "net.ipv4.ip_forward"])
            .trim(),
        "0"
    );
    assert_eq!(
        lab.exec_ok("rtr", &["sysctl", "-n", "net.ipv4.ip_forward"])
            .trim(),
        "1"
    );
    // Offloads left at their defaults (TSO on).
    let k = lab.exec_ok("gw", &["ethtool", "-k", "eth0"]);
    assert!(k.contains("tcp-segmentation-offload: on"), "{k}");
    // IPv6 off in every namespace.
    for host in ["h1", "h2", "lan", "gw", "rtr", "srv"] {
        let v = lab.exec_ok(host, &["sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"]);
        assert_eq!(v.trim(), "1", "{host}");
    }
}

#[test]
fn selftest_without_nat_inside_cannot_reach_server() {
    require_root!();
    let lab = Lab::new();
    let out = lab.exec_timeout(
        "h1",
        &["ping", "-n", "-c", "2", "-W", "1", SRV_IP],
        Duration::from_secs(10),
    );
    assert!(
        !out.status.success(),
        "h1 reached srv with no NAT running: the e2e tests could not tell rnat works"
    );
}

#[test]
fn selftest_teardown_on_panic_removes_namespaces_and_processes() {
    require_root!();
    let mut prefix = String::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new();
        prefix = lab.prefix().to_string();
        let _sleeper = lab.spawn("srv", &["sleep", "300"]);
        // A process the test "forgot" about: tools/lab down must still kill it.
        std::mem::forget(lab.spawn("h1", &["sleep", "300"]));
        panic!("deliberate panic inside a lab test");
    }));
    assert!(r.is_err());
    assert!(!prefix.is_empty());
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list.lines().any(|l| l.starts_with(&prefix)),
        "namespaces of {prefix} left behind:\n{list}"
    );
}

#[test]
fn selftest_labs_get_unique_prefixes() {
    require_root!();
    let a = Lab::new();
    let b = Lab::new();
    assert_ne!(a.prefix(), b.prefix());
    // Same addresses in both, fully isolated.
    a.exec_ok("h1", &["ping", "-n", "-c", "1", "-W", "2", GW_INSIDE_IP]);
    b.exec_ok("h1", &["ping", "-n", "-c", "1", "-W", "2", GW_INSIDE_IP]);
}

#[test]
fn selftest_start_gateway_waits_for_ready_line_and_reports_failures() {
    require_root!();
    let lab = Lab::new();
    // A fake gateway that becomes ready after a while and exits on SIGTERM.
    let mut g = lab.start_gateway(&[
        "sh",
        "-c",
        "echo starting >&2; sleep 0.3; echo 'rnat: ready' >&2; exec sleep 30",
    ]);
    assert!(g.is_running());
    assert!(g.stderr().contains("starting"));
    g.stop_with(libc::SIGTERM, Duration::from_secs(5)).unwrap();

    // One that dies: start_gateway must panic quickly, quoting its stderr.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.start_gateway(&["sh", "-c", "echo 'bad interface' >&2; exit 3"]);
    }));
    let msg = r.expect_err("must panic");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("bad interface"), "{msg}");
}

// ----- kernel NAT: every check passes -----

#[test]
fn selftest_kernel_nat_ping_passes_checks() {
    require_root!();
    let lab = kernel_nat_lab();
    let obs = scenarios::ping(&lab, "h1").unwrap();
    obs.assert_translated().unwrap();
}

#[test]
fn selftest_kernel_nat_http_download_passes_checks() {
    require_root!();
    let lab = kernel_nat_lab();
    let obs = scenarios::http_download(&lab, "h1").unwrap();
    obs.assert_translated().unwrap();
}

#[test]
fn selftest_kernel_nat_udp_echo_passes_checks() {
    require_root!();
    let lab = kernel_nat_lab();
    let obs = scenarios::udp_echo(&lab, "h1").unwrap();
    assert_eq!(obs.server_endpoints.len(), 3, "{obs:?}");
    obs.assert_translated().unwrap();
}

#[test]
fn selftest_kernel_nat_iperf_passes_checks() {
    require_root!();
    let lab = kernel_nat_lab();
    let obs = scenarios::iperf_tcp(&lab, "h1").unwrap();
    eprintln!("kernel NAT iperf3: {:?}", obs.notes);
    obs.assert_translated().unwrap();
}

#[test]
fn selftest_kernel_nat_two_hosts_pass_checks() {
    require_root!();
    let lab = kernel_nat_lab();
    let obs = scenarios::two_hosts(&lab).unwrap();
    obs.assert_translated().unwrap();
}

// ----- plain forwarding: traffic flows, but the checks catch it -----

#[test]
fn selftest_plain_forwarding_ping_is_detected() {
    require_root!();
    let lab = plain_forward_lab();
    let obs = scenarios::ping(&lab, "h1").expect("plain forwarding must still carry traffic");
    assert_detected_untranslated(&obs, &[H1_IP]);
}

#[test]
fn selftest_plain_forwarding_http_is_detected() {
    require_root!();
    let lab = plain_forward_lab();
    let obs = scenarios::http_download(&lab, "h1").expect("plain forwarding must carry traffic");
    assert_detected_untranslated(&obs, &[H1_IP]);
}

#[test]
fn selftest_plain_forwarding_udp_is_detected() {
    require_root!();
    let lab = plain_forward_lab();
    let obs = scenarios::udp_echo(&lab, "h1").expect("plain forwarding must carry traffic");
    assert_detected_untranslated(&obs, &[H1_IP]);
}

#[test]
fn selftest_plain_forwarding_iperf_is_detected() {
    require_root!();
    let lab = plain_forward_lab();
    let obs = scenarios::iperf_tcp(&lab, "h1").expect("plain forwarding must carry traffic");
    assert_detected_untranslated(&obs, &[H1_IP]);
}

#[test]
fn selftest_plain_forwarding_two_hosts_is_detected() {
    require_root!();
    let lab = plain_forward_lab();
    let obs = scenarios::two_hosts(&lab).expect("plain forwarding must carry traffic");
    assert_detected_untranslated(&obs, &[H1_IP, H2_IP]);
    // Both inside hosts were seen by the server.
    assert!(obs.server_peers.iter().any(|p| p == H1_IP), "{obs:?}");
    assert!(obs.server_peers.iter().any(|p| p == H2_IP), "{obs:?}");
}
