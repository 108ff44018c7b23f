//! End-to-end port mapping requests (RFC 6888 REQ-9): an inside host asks rnat for an inbound
//! mapping with NAT-PMP (`natpmpc`, RFC 6886) and with hand-written PCP requests (RFC 6887: MAP,
//! PEER, ANNOUNCE, an ADDRESS_MISMATCH), then a remote host reaches the inside server through the
//! public address and port it was given, and `rnat sessions` / `rnat stats` show it.
//!
//! Run as root: `cargo test --test e2e_pcp` (skips with a note otherwise).

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A PCP client: sends one request (given on the command line) to the gateway's port 5351 and
/// prints the response's fields as JSON.
const PCP_CLIENT_PY: &str = r#"
import json, socket, struct, sys
gw, op, client, proto, iport, eport, life = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
remote = sys.argv[8] if len(sys.argv) > 8 else None
def mapped(a):
    return b"\0" * 10 + b"\xff\xff" + socket.inet_aton(a)
opcode = {"announce": 0, "map": 1, "peer": 2}[op]
req = struct.pack("!BBHI", 2, opcode, 0, life) + mapped(client)
nonce = b"rnat-e2e-pcp"
if opcode in (1, 2):
    req += nonce + struct.pack("!B3xHH", proto, iport, eport) + mapped("0.0.0.0")
if opcode == 2:
    ra, rp = remote.split(":")
    req += struct.pack("!H2x", int(rp)) + mapped(ra)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for _ in range(3):
    s.sendto(req, (gw, 5351))
    try:
        d, _ = s.recvfrom(2048)
        break
    except OSError:  # a timeout, or ICMP port unreachable when nothing listens
        continue
else:
    print(json.dumps({"error": "no response"}))
    sys.exit(1)
ver, rop, _, result, lifetime, epoch = struct.unpack("!BBBBII", d[:12])
out = {"version": ver, "opcode": rop, "result": result, "lifetime": lifetime, "epoch": epoch, "len": len(d)}
if len(d) >= 60:
    out["nonce_echoed"] = d[24:36] == nonce
    out["external_port"] = struct.unpack("!H", d[42:44])[0]
    out["external_addr"] = socket.inet_ntoa(d[56:60]) if d[44:56] == b"\0" * 10 + b"\xff\xff" else "not-v4"
print(json.dumps(out))
"#;

fn pcp(lab: &Lab, host: &str, args: &[&str]) -> Value {
    let script = lab.temp_path("pcp_client.py");
    if !script.exists() {
        std::fs::write(&script, PCP_CLIENT_PY).unwrap();
    }
    let mut argv = vec!["python3", script.to_str().unwrap(), GW_INSIDE_IP];
    argv.extend_from_slice(args);
    let out = lab.exec_timeout(host, &argv, Duration::from_secs(15));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("pcp {args:?}: {e}\n{}", output_text(&out)))
}

fn sessions(lab: &Lab, rnat: &Rnat) -> Vec<Value> {
    let o = lab.rnat_client(rnat, &["sessions", "--json"]);
    assert!(o.status.success(), "rnat sessions: {}", output_text(&o));
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn pcp_rows(rows: &[Value]) -> Vec<&Value> {
    rows.iter().filter(|r| r["state"] == "PCP").collect()
}

/// One line through a TCP connection from srv to the public endpoint; the reply text.
fn tcp_from_srv(lab: &Lab, port: u16) -> String {
    let target = format!("TCP4:{GW_PUBLIC_IP}:{port},connect-timeout=3");
    let out = lab.exec_input(
        "srv",
        &["socat", "-t", "2", "-T", "4", "-", &target],
        b"hello\n",
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn e2e_rfc6886_natpmpc_maps_a_port_reachable_from_outside() {
    require_root!();
    let lab = Lab::new();
    let mut rnat = lab.start_rnat(&["--pcp"]);
    // Public address request.
    let out = lab.exec_timeout(
        "h1",
        &["natpmpc", "-g", GW_INSIDE_IP],
        Duration::from_secs(15),
    );
    let t = output_text(&out);
    assert!(
        t.contains(&format!("Public IP address : {GW_PUBLIC_IP}")),
        "{t}\n{}",
        rnat.stderr()
    );
    // An inside TCP server and a mapping for it.
    let _srv = lab.spawn(
        "h1",
        &[
            "socat",
            "TCP4-LISTEN:8000,reuseaddr,fork",
            // Reads the client's line first: closing with unread data would send a RST, and
            // the RST can overtake the answer at the client.
            "SYSTEM:read line; echo inside-server-says-hi",
        ],
    );
    lab.wait_listening("h1", "tcp", 8000, Duration::from_secs(5));
    let out = lab.exec_timeout(
        "h1",
        &[
            "natpmpc",
            "-g",
            GW_INSIDE_IP,
            "-a",
            "18000",
            "8000",
            "tcp",
            "600",
        ],
        Duration::from_secs(15),
    );
    let t = output_text(&out);
    assert!(
        t.contains("Mapped public port 18000 protocol TCP to local port 8000"),
        "{t}\n{}",
        rnat.stderr()
    );
    // srv reaches h1's server through the public address.
    let reply = tcp_from_srv(&lab, 18000);
    assert!(
        reply.contains("inside-server-says-hi"),
        "srv -> {GW_PUBLIC_IP}:18000: {reply:?}\n{}\n{}\n{:#?}",
        rnat.stderr(),
        output_text(&lab.rnat_client(&rnat, &["stats"])),
        sessions(&lab, &rnat)
    );
    // rnat sessions lists the mapping (state PCP) and the session srv opened through it.
    let rows = sessions(&lab, &rnat);
    let m = pcp_rows(&rows);
    assert_eq!(m.len(), 1, "{rows:#?}");
    assert_eq!(m[0]["proto"], "tcp");
    assert_eq!(m[0]["inside"], format!("{H1_IP}:8000"));
    assert_eq!(m[0]["public"], format!("{GW_PUBLIC_IP}:18000"));
    let left = m[0]["expires_in_s"].as_u64().unwrap();
    assert!((590..=600).contains(&left), "{left}");
    assert!(
        rows.iter()
            .any(|r| r["state"] != "PCP" && r["remote"].as_str().unwrap().starts_with(SRV_IP)),
        "{rows:#?}"
    );
    // UDP mapping too, then delete the TCP one: srv can no longer connect.
    let out = lab.exec_timeout(
        "h1",
        &[
            "natpmpc",
            "-g",
            GW_INSIDE_IP,
            "-a",
            "0",
            "5353",
            "udp",
            "60",
        ],
        Duration::from_secs(15),
    );
    assert!(
        output_text(&out).contains("protocol UDP to local port 5353"),
        "{}",
        output_text(&out)
    );
    let out = lab.exec_timeout(
        "h1",
        &[
            "natpmpc",
            "-g",
            GW_INSIDE_IP,
            "-a",
            "18000",
            "8000",
            "tcp",
            "0",
        ],
        Duration::from_secs(15),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let rows = sessions(&lab, &rnat);
    let m = pcp_rows(&rows);
    assert_eq!(m.len(), 1, "only the UDP mapping is left: {rows:#?}");
    assert_eq!(m[0]["proto"], "udp");
    // The TCP session from before still runs on the (now ordinary) mapping until it ends; a
    // new connection from another remote port is refused by the filtering (APDF).
    let reply = tcp_from_srv(&lab, 18000);
    assert!(
        !reply.contains("inside-server-says-hi"),
        "the deleted mapping still forwards: {reply:?}"
    );
    if !rnat.is_running() {
        rnat.fail("rnat exited");
    }
}

#[test]
fn e2e_rfc6887_pcp_map_peer_announce_and_errors() {
    require_root!();
    let lab = Lab::new();
    let mut rnat = lab.start_rnat(&["--pcp", "--pcp-max-lifetime", "900"]);
    // ANNOUNCE.
    let a = pcp(&lab, "h1", &["announce", H1_IP, "0", "0", "0", "0"]);
    assert_eq!(
        (&a["version"], &a["opcode"], &a["result"]),
        (&Value::from(2), &Value::from(0x80), &Value::from(0)),
        "{a}\n{}",
        rnat.stderr()
    );
    // MAP UDP 9000, asking for more than the maximum lifetime.
    let _echo = lab.spawn(
        "h1",
        &[
            "socat",
            "UDP4-RECVFROM:9000,fork",
            "SYSTEM:echo inside-udp-echo",
        ],
    );
    lab.wait_listening("h1", "udp", 9000, Duration::from_secs(5));
    let m = pcp(&lab, "h1", &["map", H1_IP, "17", "9000", "19000", "86400"]);
    assert_eq!(m["result"], 0, "{m}\n{}", rnat.stderr());
    assert_eq!(m["opcode"], 0x81);
    assert_eq!(m["lifetime"], 900, "clamped to --pcp-max-lifetime");
    assert_eq!(m["nonce_echoed"], true);
    assert_eq!(m["external_addr"], GW_PUBLIC_IP);
    let port = m["external_port"].as_u64().unwrap() as u16;
    assert_eq!(port, 19000, "the suggested port was free");
    // srv reaches the inside UDP service (a retry covers a first datagram dropped while rnat
    // resolves h1's MAC).
    let mut got = String::new();
    for _ in 0..3 {
        let out = lab.exec_input(
            "srv",
            &[
                "socat",
                "-t",
                "2",
                "-",
                &format!("UDP4:{GW_PUBLIC_IP}:{port}"),
            ],
            b"ping\n",
            Duration::from_secs(10),
        );
        got = output_text(&out);
        if String::from_utf8_lossy(&out.stdout).contains("inside-udp-echo") {
            break;
        }
    }
    assert!(
        got.contains("inside-udp-echo"),
        "srv -> {GW_PUBLIC_IP}:{port}: {got}\n{}",
        rnat.stderr()
    );
    let rows = sessions(&lab, &rnat);
    assert!(
        pcp_rows(&rows)
            .iter()
            .any(|r| r["public"] == format!("{GW_PUBLIC_IP}:{port}")
                && r["inside"] == format!("{H1_IP}:9000")),
        "{rows:#?}"
    );
    // PEER: a session towards srv, with its public port and the UDP idle timeout.
    let p = pcp(
        &lab,
        "h2",
        &[
            "peer",
            H2_IP,
            "17",
            "4444",
            "0",
            "600",
            &format!("{SRV_IP}:7777"),
        ],
    );
    assert_eq!(
        (&p["result"], &p["opcode"]),
        (&Value::from(0), &Value::from(0x82)),
        "{p}"
    );
    assert_eq!(p["lifetime"], 300);
    assert_eq!(p["external_addr"], GW_PUBLIC_IP);
    let rows = sessions(&lab, &rnat);
    assert!(
        rows.iter().any(|r| r["inside"] == format!("{H2_IP}:4444")
            && r["remote"] == format!("{SRV_IP}:7777")
            && r["public"] == format!("{GW_PUBLIC_IP}:{}", p["external_port"])),
        "{rows:#?}"
    );
    // Errors: the client address field does not match the source; an unsupported protocol;
    // an unsupported version.
    let e = pcp(&lab, "h1", &["map", H2_IP, "17", "9001", "0", "60"]);
    assert_eq!(e["result"], 12, "ADDRESS_MISMATCH: {e}");
    let e = pcp(&lab, "h1", &["map", H1_IP, "132", "9001", "0", "60"]);
    assert_eq!(e["result"], 9, "UNSUPP_PROTOCOL: {e}");
    // Delete (lifetime 0): the row goes away.
    let d = pcp(&lab, "h1", &["map", H1_IP, "17", "9000", "0", "0"]);
    assert_eq!(
        (&d["result"], &d["lifetime"]),
        (&Value::from(0), &Value::from(0)),
        "{d}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pcp_rows(&sessions(&lab, &rnat)).is_empty() {
        assert!(Instant::now() < deadline, "the PCP row stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The counters.
    let o = lab.rnat_client(&rnat, &["stats", "--json"]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let pcp = &s["pcp"];
    assert_eq!(pcp["requests"]["pcp_map"], 4, "{pcp:#}");
    assert_eq!(pcp["requests"]["pcp_peer"], 1, "{pcp:#}");
    assert_eq!(pcp["requests"]["pcp_announce"], 1, "{pcp:#}");
    assert_eq!(pcp["pcp_results"]["success"], 4, "{pcp:#}");
    assert_eq!(pcp["pcp_results"]["address_mismatch"], 1, "{pcp:#}");
    assert_eq!(pcp["pcp_results"]["unsupp_protocol"], 1, "{pcp:#}");
    if !rnat.is_running() {
        rnat.fail("rnat exited");
    }
}

#[test]
fn e2e_pcp_is_off_by_default() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&[]);
    let a = pcp(&lab, "h1", &["announce", H1_IP, "0", "0", "0", "0"]);
    assert_eq!(a["error"], "no response", "{a}\n{}", rnat.stderr());
}
