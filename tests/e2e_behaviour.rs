//! NAT behaviour discovery (the tests of RFC 5780 section 4) through rnat, with a small STUN-like
//! reflector on srv listening on two addresses and two ports, for each filtering mode.
//!
//! - Mapping (RFC 4787 REQ-1): h1 sends from one socket to srv:A1/P1, A1/P2, A2/P1 and each
//!   reflector says which endpoint it saw: all the same → endpoint-independent mapping.
//! - Filtering (RFC 4787 REQ-8, RFC 5382 REQ-3): after h1 sends to A1:P1, the reflector answers from
//!   A1:P1, A1:P2 and A2:P1; which answers arrive tells the filtering mode.

mod common;

use common::*;
use std::time::Duration;

const SRV2_IP: &str = "198.51.100.21";

const REFLECTOR: &str = r#"
import socket, sys, select, time
socks = []
for a in sys.argv[1:3]:
    for p in (3478, 3479):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a, p))
        socks.append(s)
by_name = {"%s:%d" % s.getsockname(): s for s in socks}
end = time.time() + 30
while time.time() < end:
    r, _, _ = select.select(socks, [], [], 0.5)
    for s in r:
        data, peer = s.recvfrom(2048)
        msg = data.decode()
        seen = "%s:%d" % peer
        if msg.startswith("map"):
            s.sendto(("saw " + seen).encode(), peer)
        elif msg.startswith("filter"):
            # Answer from every (address, port): the NAT decides which reach the client.
            for name, t in by_name.items():
                t.sendto(("from " + name).encode(), peer)
"#;

const CLIENT: &str = r#"
import socket, sys
a1, a2, mode = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
s.settimeout(1.5)
if mode == "map":
    for dst in ((a1, 3478), (a1, 3479), (a2, 3478)):
        s.sendto(b"map", dst)
        print(s.recvfrom(2048)[0].decode())
else:
    s.sendto(b"filter", (a1, 3478))
    try:
        while True:
            print(s.recvfrom(2048)[0].decode())
    except socket.timeout:
        pass
"#;

fn behaviour(filtering: &str) -> (Vec<String>, Vec<String>) {
    let lab = Lab::new();
    lab.exec_ok(
        "srv",
        &["ip", "addr", "add", &format!("{SRV2_IP}/24"), "dev", "eth0"],
    );
    let rnat = lab.start_rnat(&["--filtering", filtering]);
    let _refl = lab.spawn("srv", &["python3", "-c", REFLECTOR, SRV_IP, SRV2_IP]);
    lab.wait_listening("srv", "udp", 3479, Duration::from_secs(5));
    let run = |mode: &str| -> Vec<String> {
        let out = lab.exec_timeout(
            "h1",
            &["python3", "-c", CLIENT, SRV_IP, SRV2_IP, mode],
            Duration::from_secs(15),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            rnat.fail(&format!(
                "{mode} client failed:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut v: Vec<String> = text.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    (run("map"), run("filter"))
}

fn assert_eim(mapping: &[String]) {
    assert_eq!(mapping.len(), 3, "{mapping:?}");
    assert!(
        mapping.iter().all(|m| m == &mapping[0]),
        "endpoint-independent mapping: {mapping:?}"
    );
    assert!(
        mapping[0].starts_with(&format!("saw {GW_PUBLIC_IP}:")),
        "{mapping:?}"
    );
}

#[test]
fn e2e_rfc5780_endpoint_independent_mapping_and_default_apdf_filtering() {
    require_root!();
    let (mapping, filtering) = behaviour("address-and-port-dependent");
    assert_eim(&mapping);
    assert_eq!(
        filtering,
        [format!("from {SRV_IP}:3478")],
        "only the exact endpoint gets through"
    );
}

#[test]
fn e2e_rfc5780_address_dependent_filtering() {
    require_root!();
    let (mapping, filtering) = behaviour("address-dependent");
    assert_eim(&mapping);
    assert_eq!(
        filtering,
        [format!("from {SRV_IP}:3478"), format!("from {SRV_IP}:3479")]
    );
}

#[test]
fn e2e_rfc5780_endpoint_independent_filtering() {
    require_root!();
    let (mapping, filtering) = behaviour("endpoint-independent");
    assert_eim(&mapping);
    assert_eq!(
        filtering,
        [
            format!("from {SRV_IP}:3478"),
            format!("from {SRV_IP}:3479"),
            format!("from {SRV2_IP}:3478"),
            format!("from {SRV2_IP}:3479"),
        ]
    );
}

/// The same discovery with a real RFC 5780 client and server: coturn's `turnutils_natdiscovery`
/// on h1 against `turnserver` (STUN only) on srv with two addresses. Returns the client's output.
fn coturn_discovery(filtering: &str, tests: &[&str]) -> String {
    let lab = Lab::new();
    lab.exec_ok(
        "srv",
        &["ip", "addr", "add", &format!("{SRV2_IP}/24"), "dev", "eth0"],
    );
    let mut rnat = lab.start_rnat(&["--filtering", filtering]);
    let _turn = lab.spawn(
        "srv",
        &[
            "turnserver",
            "--stun-only",
            "-L",
            SRV_IP,
            "-L",
            SRV2_IP,
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "-n",
            "--log-file",
            "stdout",
        ],
    );
    lab.wait_listening("srv", "udp", 3479, Duration::from_secs(10));
    let mut argv = vec!["turnutils_natdiscovery"];
    argv.extend_from_slice(tests);
    argv.push(SRV_IP);
    let out = lab.exec_timeout("h1", &argv, Duration::from_secs(30));
    let text = output_text(&out);
    if !rnat.is_running() {
        rnat.fail(&text);
    }
    text
}

/// `turnutils_natdiscovery -m -f`: its verdict lines for mapping and filtering.
fn coturn_verdicts(filtering: &str) -> Vec<String> {
    let text = coturn_discovery(filtering, &["-m", "-f"]);
    let v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("NAT with"))
        .map(str::to_string)
        .collect();
    assert_eq!(v.len(), 2, "two verdicts expected:\n{text}");
    v
}

#[test]
fn e2e_rfc5780_coturn_natdiscovery_default_apdf() {
    require_root!();
    assert_eq!(
        coturn_verdicts("address-and-port-dependent"),
        [
            "NAT with Endpoint Independent Mapping!",
            "NAT with Address and Port Dependent Filtering!"
        ]
    );
}

#[test]
fn e2e_rfc5780_coturn_natdiscovery_address_dependent() {
    require_root!();
    assert_eq!(
        coturn_verdicts("address-dependent"),
        [
            "NAT with Endpoint Independent Mapping!",
            "NAT with Address Dependent Filtering!"
        ]
    );
}

/// Endpoint-independent filtering, and coturn's hairpinning test (RFC 4787 REQ-9): the client
/// sends a binding request to its own public mapping, and receives it back through rnat.
#[test]
fn e2e_rfc5780_coturn_natdiscovery_eif_and_hairpinning() {
    require_root!();
    assert_eq!(
        coturn_verdicts("endpoint-independent"),
        [
            "NAT with Endpoint Independent Mapping!",
            "NAT with Endpoint Independent Filtering!"
        ]
    );
    let text = coturn_discovery("endpoint-independent", &["-H"]);
    assert!(
        text.contains("successful hairpinning"),
        "hairpinning not seen:\n{text}"
    );
}
