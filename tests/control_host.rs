//! Host setup tests, each in its own network namespace (see `control_common`): the nft table and
//! the reserved ports are installed and removed exactly, a `kill -9`ed run is cleaned up by the next
//! one, the interface lock refuses a second holder, and the rules drop what they should.

mod control_common;

use control_common::{PEER_ENV, in_netns, run, run_dir, sh};
use rnat::control::host::{Guard, HostError, HostSetup, RESERVED_PORTS, table_name};
use rnat::nat::config::PortRange;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

/// Gateway namespace: v0 outside (203.0.113.1/24), v1 inside (10.0.0.1/24); the other ends of both
/// veths (p0, p1) sit in the peer namespace.
const GW: &str = r#"
ip -n "$NS" link add v0 type veth peer name v0p
ip -n "$NS" link add v1 type veth peer name v1p
ip -n "$NS" addr add 203.0.113.1/24 dev v0
ip -n "$NS" addr add 10.0.0.1/24 dev v1
ip -n "$NS" link set v0 up
ip -n "$NS" link set v1 up
ip -n "$NS" link set v0p up
ip -n "$NS" link set v1p up
"#;

const PEER: &str = r#"
ip -n "$NS" link set v0p netns "$PEER"
ip -n "$PEER" link set lo up
ip -n "$PEER" addr add 203.0.113.2/24 dev v0p
ip -n "$PEER" link set v0p up
"#;

fn setup(ranges: &[PortRange]) -> HostSetup {
    let mut s = HostSetup::new("v1", "v0");
    s.public_addrs = vec![Ipv4Addr::new(203, 0, 113, 1)];
    s.port_ranges = ranges.to_vec();
    s.inside_prefixes = vec!["10.0.0.0/24".parse().unwrap()];
    s.gateway_addrs = vec![
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 255),
        Ipv4Addr::new(203, 0, 113, 1),
    ];
    s.run_dir = run_dir();
    s
}

fn reserved() -> String {
    std::fs::read_to_string(RESERVED_PORTS)
        .unwrap()
        .trim()
        .to_string()
}

fn tables() -> String {
    run("nft", &["list", "tables"])
}

fn has_table() -> bool {
    tables().contains(&format!("table netdev {}", table_name("v0")))
}

#[test]
fn apply_installs_and_undo_removes() {
    in_netns("apply_installs_and_undo_removes", GW, false, || {
        std::fs::write(RESERVED_PORTS, "5000\n").unwrap();
        let tables_before = tables();
        let s = setup(&[PortRange::new(20000, 29999), PortRange::new(40000, 40000)]);
        let mut g: Guard = s.apply().unwrap();
        assert!(has_table());
        let listing = run("nft", &["list", "table", "netdev", "rnat_v0"]);
        println!("{listing}");
        for want in [
            "device \"v0\"",
            "device \"v1\"",
            "ip daddr 203.0.113.1",
            "20000-29999",
            "40000",
            "icmp type echo-reply",
            "ip saddr 10.0.0.0/24",
        ] {
            assert!(listing.contains(want), "missing {want:?} in\n{listing}");
        }
        assert_eq!(reserved(), "5000,20000-29999,40000");
        let state = std::fs::read_to_string(s.state_path()).unwrap();
        assert!(
            state.contains("nft_table rnat_v0") && state.contains("reserved_ports_old 5000"),
            "{state}"
        );
        assert_eq!(g.state().pid, std::process::id());
        assert_eq!(
            std::fs::read_to_string(s.lock_path("v1")).unwrap().trim(),
            std::process::id().to_string()
        );

        g.undo().unwrap();
        assert!(!has_table());
        assert_eq!(tables(), tables_before);
        assert_eq!(reserved(), "5000");
        assert!(!s.state_path().exists());
        g.undo().unwrap(); // idempotent
        drop(g); // and Drop after undo is harmless
        assert_eq!(reserved(), "5000");

        // Drop alone undoes too.
        {
            let _g = s.apply().unwrap();
            assert!(has_table());
        }
        assert!(!has_table());
        assert_eq!(reserved(), "5000");
    });
}

/// Not a test of its own: run by `leftover_state_is_cleaned` in a child process, which it kills with
/// SIGKILL after applying.
#[test]
fn helper_apply_and_die() {
    if std::env::var_os("RNAT_TEST_KILLME").is_none() {
        return;
    }
    let g = setup(&[PortRange::new(20000, 29999)]).apply().unwrap();
    std::mem::forget(g);
    let _ = Command::new("kill")
        .args(["-9", &std::process::id().to_string()])
        .status();
    std::thread::sleep(std::time::Duration::from_secs(10));
    unreachable!("not killed");
}

#[test]
fn leftover_state_is_cleaned() {
    in_netns("leftover_state_is_cleaned", GW, false, || {
        std::fs::write(RESERVED_PORTS, "\n").unwrap();
        let st = Command::new(std::env::current_exe().unwrap())
            .args(["helper_apply_and_die", "--exact", "--nocapture"])
            .env("RNAT_TEST_KILLME", "1")
            .status()
            .unwrap();
        assert_eq!(st.signal(), Some(9), "helper was not killed: {st:?}");
        // The killed run left everything behind.
        let s = setup(&[PortRange::new(30000, 30999)]);
        let stale = s.state_path();
        assert!(stale.exists());
        assert!(has_table());
        assert_eq!(reserved(), "20000-29999");

        // The next start undoes it, then applies its own.
        let mut g = s.apply().unwrap();
        assert_eq!(
            reserved(),
            "30000-30999",
            "the killed run's ports were not removed first"
        );
        let listing = run("nft", &["list", "table", "netdev", "rnat_v0"]);
        assert!(
            listing.contains("30000-30999") && !listing.contains("20000-29999"),
            "{listing}"
        );
        g.undo().unwrap();
        assert!(!has_table());
        assert_eq!(reserved(), "");
        assert!(!stale.exists());
    });
}

#[test]
fn lock_refuses_second_holder() {
    in_netns(
        "lock_refuses_second_holder",
        &format!("{GW}ip -n \"$NS\" link add v2 type veth peer name v2p\n"),
        false,
        || {
            let s = setup(&[PortRange::new(20000, 29999)]);
            let mut g = s.apply().unwrap();
            let e = s.apply().unwrap_err();
            assert!(matches!(e, HostError::InterfaceBusy { .. }), "{e:?}");
            assert_eq!(
                e.to_string(),
                format!(
                    "interface v1 is already used by rnat (pid {})",
                    std::process::id()
                )
            );
            // Another pair sharing the outside interface is refused too.
            let mut other = s.clone();
            other.inside = "v2".into();
            let e = other.apply().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "interface v0 is already used by rnat (pid {})",
                    std::process::id()
                )
            );
            // The refused attempts changed nothing.
            assert!(has_table());
            assert_eq!(reserved(), "20000-29999");
            g.undo().unwrap();
            // Released: a new holder gets it.
            let mut g = other.apply().unwrap();
            g.undo().unwrap();
            assert_eq!(reserved(), "");
        },
    );
}

/// Sends one UDP datagram from the peer namespace.
fn peer_udp(dst: &str, port: u16) {
    let peer = std::env::var(PEER_ENV).unwrap();
    run(
        "ip",
        &[
            "netns",
            "exec",
            &peer,
            "bash",
            "-c",
            &format!("echo x > /dev/udp/{dst}/{port}"),
        ],
    );
}

fn counters(chain: &str) -> Vec<u64> {
    let l = run("nft", &["list", "chain", "netdev", "rnat_v0", chain]);
    l.split("counter packets ")
        .skip(1)
        .map(|s| s.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn rules_drop_translated_traffic_only() {
    in_netns(
        "rules_drop_translated_traffic_only",
        &format!("{GW}{PEER}"),
        true,
        || {
            let peer = std::env::var(PEER_ENV).unwrap();
            let mut g = setup(&[PortRange::new(20000, 29999)]).apply().unwrap();
            // Warm ARP so the counters see exactly our datagrams.
            run(
                "ip",
                &["netns", "exec", &peer, "ping", "-c1", "-W2", "203.0.113.1"],
            );
            // Rules: spoofed sources, mapped ports, mapped ICMP ids.
            assert_eq!(counters("outside_ingress"), vec![0, 0, 0]);
            peer_udp("203.0.113.1", 25000); // rnat's: dropped before the kernel
            peer_udp("203.0.113.1", 5000); // not rnat's: the kernel gets it
            peer_udp("203.0.113.1", 29999);
            assert_eq!(counters("outside_ingress"), vec![0, 2, 0]);
            // The kernel still answers ping to its own address (echo requests are not dropped).
            run(
                "ip",
                &["netns", "exec", &peer, "ping", "-c1", "-W2", "203.0.113.1"],
            );
            // The kernel only saw the datagram to port 5000: one port-unreachable sent.
            let snmp = sh("grep '^Udp:' /proc/net/snmp | tail -1");
            let no_ports: u64 = snmp.split_whitespace().nth(2).unwrap().parse().unwrap();
            assert_eq!(no_ports, 1, "{snmp}");
            g.undo().unwrap();
        },
    );
}

fn offload(ifname: &str, long: &str) -> String {
    let k = run("ethtool", &["-k", ifname]);
    let line = k
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{long}:")))
        .unwrap()
        .to_string();
    line.split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn offloads_opt_in_and_restored() {
    in_netns("offloads_opt_in_and_restored", GW, false, || {
        run("ethtool", &["-K", "v0", "gro", "on"]);
        let before: Vec<String> = ["v0", "v1"]
            .iter()
            .flat_map(|i| {
                rnat::control::host::OFFLOADS
                    .iter()
                    .map(move |(_, l)| offload(i, l))
            })
            .collect();
        // Default: offloads untouched.
        let mut g = setup(&[PortRange::new(20000, 29999)]).apply().unwrap();
        assert!(g.state().offloads.is_empty());
        g.undo().unwrap();
        let mut s = setup(&[PortRange::new(20000, 29999)]);
        s.offloads_off = true;
        let mut g = s.apply().unwrap();
        assert!(!g.state().offloads.is_empty());
        assert_eq!(offload("v0", "generic-receive-offload"), "off");
        assert_eq!(offload("v0", "tcp-segmentation-offload"), "off");
        g.undo().unwrap();
        let after: Vec<String> = ["v0", "v1"]
            .iter()
            .flat_map(|i| {
                rnat::control::host::OFFLOADS
                    .iter()
                    .map(move |(_, l)| offload(i, l))
            })
            .collect();
        assert_eq!(before, after);
    });
}
