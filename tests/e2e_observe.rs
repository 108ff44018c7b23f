//! End-to-end tests of "seeing into the NAT": real traffic through rnat in a netns lab, then what
//! the control socket clients (`rnat sessions|stats|flush|top`), the Prometheus endpoint, the
//! mapping log, the configuration file (and its SIGHUP reload) and `rnat check` show.
//!
//! Client subcommands run in the gateway's network and mount namespaces
//! ([`Lab::rnat_client`]), where its private `/run/rnat` and control socket are.
//! Run as root: `cargo test --test e2e_observe` (skips with a note otherwise).

mod common;

use common::servers::*;
use common::*;
use serde_json::Value;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a client subcommand that must succeed; returns stdout.
fn client_ok(lab: &Lab, rnat: &Rnat, args: &[&str]) -> String {
    let o = lab.rnat_client(rnat, args);
    if !o.status.success() {
        rnat.fail(&format!("rnat {args:?} failed: {}", text(&o)));
    }
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn client_json(lab: &Lab, rnat: &Rnat, args: &[&str]) -> Value {
    let out = client_ok(lab, rnat, args);
    serde_json::from_str(&out).unwrap_or_else(|e| rnat.fail(&format!("{args:?}: {e}: {out}")))
}

/// Waits (bounded) until rnat's stderr satisfies `pred`.
fn wait_stderr(rnat: &Rnat, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = rnat.stderr();
        if pred(&e) {
            return e;
        }
        if Instant::now() > deadline {
            rnat.fail(&format!("rnat's log never showed {what}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn ping(lab: &Lab, host: &str) {
    let o = lab.exec(host, &["ping", "-c", "3", "-i", "0.2", "-W", "2", SRV_IP]);
    assert!(o.status.success(), "ping from {host}: {}", text(&o));
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().expect("sessions --json is an array")
}

#[test]
fn observe_sessions_stats_top_flush_metrics_and_mapping_log() {
    require_root!();
    let lab = Lab::new();
    let mut rnat = lab.start_rnat(&["--log-mappings", "--metrics-listen", "127.0.0.1:9469"]);
    let _echo = start_udp_echo(&lab);
    ping(&lab, "h1");
    udp_request(&lab, "h1", "observe-udp", Some(40123)).unwrap_or_else(|e| rnat.fail(&e));

    // sessions --json: the ICMP and UDP sessions of h1, translated to the public address.
    let all = client_json(&lab, &rnat, &["sessions", "--json"]);
    let icmp: Vec<&Value> = rows(&all).iter().filter(|s| s["proto"] == "icmp").collect();
    assert_eq!(icmp.len(), 1, "{all:#}");
    let s = icmp[0];
    assert!(
        s["inside"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{H1_IP}:"))
    );
    assert!(
        s["public"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{GW_PUBLIC_IP}:"))
    );
    assert!(
        s["remote"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{SRV_IP}:"))
    );
    assert_eq!(s["pkts_out"], 3, "{s:#}");
    assert_eq!(s["pkts_in"], 3, "{s:#}");
    let udp = client_json(&lab, &rnat, &["sessions", "--json", "--proto", "udp"]);
    let udp = rows(&udp);
    assert_eq!(udp.len(), 1, "{udp:?}");
    assert_eq!(udp[0]["inside"], format!("{H1_IP}:40123"));
    assert_eq!(udp[0]["remote"], format!("{SRV_IP}:{UDP_PORT}"));
    let none = client_json(&lab, &rnat, &["sessions", "--json", "--addr", H2_IP]);
    assert!(rows(&none).is_empty(), "{none:#}");
    let table = client_ok(&lab, &rnat, &["sessions"]);
    assert!(
        table.contains("(2 sessions)") && table.contains(H1_IP),
        "{table}"
    );

    // stats --json.
    let st = client_json(&lab, &rnat, &["stats", "--json"]);
    assert!(st["packets"]["outbound"].as_u64().unwrap() >= 4, "{st:#}");
    assert!(st["packets"]["inbound"].as_u64().unwrap() >= 4, "{st:#}");
    assert!(st["bytes"]["outbound"].as_u64().unwrap() > 0, "{st:#}");
    assert_eq!(st["sessions"], 2, "{st:#}");
    assert_eq!(st["mappings"], 2, "{st:#}");
    assert_eq!(st["sessions_by_state"]["icmp"]["ACTIVE"], 1, "{st:#}");
    assert_eq!(st["ports"][GW_PUBLIC_IP]["udp"]["used"], 1, "{st:#}");
    assert!(
        st["ports"][GW_PUBLIC_IP]["udp"]["capacity"]
            .as_u64()
            .unwrap()
            > 1000
    );
    assert_eq!(st["drops"]["no_mapping"], 0, "{st:#}");
    assert!(st["gateway"]["tx_errors"].is_u64(), "{st:#}");
    let plain = client_ok(&lab, &rnat, &["stats"]);
    assert!(plain.contains("public ports used"), "{plain}");

    // top: one bounded refresh.
    let top = client_ok(
        &lab,
        &rnat,
        &["top", "--once", "--interval", "0.3", "--limit", "5"],
    );
    assert!(top.contains("rnat top") && top.contains(H1_IP), "{top}");

    // Metrics, from the gateway's own namespace (it listens on its loopback).
    let url = "http://127.0.0.1:9469/metrics";
    let m = lab.exec_ok("gw", &["curl", "-sS", "-m", "5", url]);
    let value = |line: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| rnat.fail(&format!("metrics lack {line}:\n{m}")))
    };
    assert!(
        value("rnat_packets_total{direction=\"outbound\"} ") >= 4,
        "{m}"
    );
    assert_eq!(
        value("rnat_sessions{proto=\"udp\",state=\"ACTIVE\"} "),
        1,
        "{m}"
    );
    assert_eq!(value("rnat_mappings "), 2, "{m}");
    assert_eq!(value("rnat_drops_total{reason=\"no_mapping\"} "), 0, "{m}");
    assert!(m.contains("# TYPE rnat_packets_total counter"), "{m}");
    let code = lab.exec_ok(
        "gw",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "5",
            "http://127.0.0.1:9469/nope",
        ],
    );
    assert_eq!(code.trim(), "404");

    // Mapping log: created lines (protocol, inside, public; no destination).
    let log = wait_stderr(&rnat, "two mapping-created lines", |e| {
        e.lines().filter(|l| l.contains("mapping created")).count() >= 2
    });
    let created: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("mapping created"))
        .collect();
    assert!(
        created.iter().any(|l| l.contains("proto=\"udp\"")
            && l.contains(&format!("inside={H1_IP}:40123"))
            && l.contains(&format!("public={GW_PUBLIC_IP}:"))),
        "{created:?}"
    );
    assert!(
        created.iter().all(|l| !l.contains(SRV_IP)),
        "mapping log must not name the destination: {created:?}"
    );

    // flush --addr: h1's sessions go, and the log says their mappings ended.
    let f = client_ok(&lab, &rnat, &["flush", "--addr", H1_IP]);
    assert_eq!(f.trim(), "flushed 2 sessions", "{f}");
    let after = client_json(&lab, &rnat, &["sessions", "--json"]);
    assert!(rows(&after).is_empty(), "{after:#}");
    wait_stderr(&rnat, "two mapping-ended lines", |e| {
        e.lines().filter(|l| l.contains("mapping ended")).count() >= 2
    });
    let st = client_json(&lab, &rnat, &["stats", "--json"]);
    assert_eq!(st["sessions"], 0, "{st:#}");

    let st = rnat
        .stop_with(libc::SIGTERM, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "rnat exit: {st}");
}

#[test]
fn observe_clients_without_a_gateway_fail_clearly() {
    require_root!();
    let dir = std::env::temp_dir().join(format!("rnat-obs-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = std::process::Command::new(rnat_bin())
        .args(["sessions", "--run-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no running rnat found"),
        "{}",
        text(&o)
    );
}

#[test]
fn observe_config_file_flags_override_and_bad_file_rejected() {
    require_root!();
    let lab = Lab::new();
    let cfg = lab.temp_path("rnat.toml");
    std::fs::write(
        &cfg,
        "allow-short-timeouts = true\nudp-timeout = 200\nicmp-timeout = 30\nlog-level = \"info\"\n",
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();

    // A bad file is refused at start, naming the problem.
    let bad = lab.temp_path("bad.toml");
    std::fs::write(&bad, "udp-timout = 200\n").unwrap();
    let o = std::process::Command::new(rnat_bin())
        .args(["--inside", "eth1", "--outside", "eth0", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad configuration file") && err.contains("udp-timout"),
        "{err}"
    );

    // The file sets the UDP timeout; the flag overrides the file's ICMP timeout.
    let mut rnat = lab.start_rnat(&["--config", cfg_s, "--icmp-timeout", "45"]);
    let _echo = start_udp_echo(&lab);
    ping(&lab, "h1");
    udp_request(&lab, "h1", "cfg", None).unwrap_or_else(|e| rnat.fail(&e));
    let s = client_json(&lab, &rnat, &["sessions", "--json"]);
    for row in rows(&s) {
        let left = row["expires_in_s"].as_u64().unwrap();
        match row["proto"].as_str().unwrap() {
            "udp" => assert!((150..=200).contains(&left), "file's udp-timeout: {row:#}"),
            "icmp" => assert!((31..=45).contains(&left), "flag's icmp-timeout: {row:#}"),
            p => panic!("unexpected {p}"),
        }
    }
    assert_eq!(rows(&s).len(), 2, "{s:#}");

    // SIGHUP with a broken file: rejected, the running configuration stays.
    let hup = |rnat: &Rnat| {
        let o = std::process::Command::new("kill")
            .args(["-HUP", &rnat.pid().to_string()])
            .output()
            .unwrap();
        assert!(o.status.success());
    };
    std::fs::write(&cfg, "udp-timeout = \"soon\"\n").unwrap();
    hup(&rnat);
    wait_stderr(&rnat, "the reload rejection", |e| {
        e.contains("configuration reload rejected")
    });
    assert!(rnat.is_running());
    udp_request(&lab, "h1", "still-up", None).unwrap_or_else(|e| rnat.fail(&e));
    let st = client_json(&lab, &rnat, &["stats", "--json"]);
    assert!(st["sessions"].as_u64().unwrap() >= 2, "{st:#}");

    // A good file: the log level and the timeouts change live, the sessions stay; a new public
    // address is reported as needing a restart.
    std::fs::write(
        &cfg,
        "allow-short-timeouts = true\nudp-timeout = 100\nicmp-timeout = 30\nlog-level = \"debug\"\npublic = [\"203.0.113.1\", \"203.0.113.9\"]\n",
    )
    .unwrap();
    hup(&rnat);
    let e = wait_stderr(&rnat, "the reload", |e| {
        e.contains("configuration reloaded")
    });
    assert!(
        e.lines()
            .any(|l| l.contains("engine reconfigured") && l.contains("timeouts")),
        "{e}"
    );
    assert!(
        e.lines()
            .any(|l| l.contains("public changed") && l.contains("restart")),
        "{e}"
    );
    assert!(
        e.lines()
            .any(|l| l.contains("configuration reloaded") && l.contains("debug")),
        "{e}"
    );
    let s = client_json(&lab, &rnat, &["sessions", "--json"]);
    assert!(
        rows(&s).len() >= 2,
        "sessions kept across the reload: {s:#}"
    );
    for row in rows(&s) {
        let left = row["expires_in_s"].as_u64().unwrap();
        if row["proto"].as_str() == Some("udp") {
            assert!(
                left <= 100,
                "the new udp-timeout applies to running sessions: {row:#}"
            );
        }
    }
    assert!(rnat.is_running());
}

#[test]
fn observe_check_reports_blockers_and_warnings() {
    require_root!();
    let lab = Lab::new();
    let bin = rnat_bin();
    let bin = bin.to_str().unwrap();
    let ok = lab.exec(
        "gw",
        &[bin, "check", "--inside", "eth1", "--outside", "eth0"],
    );
    let t = text(&ok);
    assert!(ok.status.success(), "{t}");
    assert!(
        t.contains("0 blocker(s)") && t.contains("offloads on eth1"),
        "{t}"
    );

    let bad = lab.exec(
        "gw",
        &[bin, "check", "--inside", "eth1", "--outside", "nosuch0"],
    );
    let t = text(&bad);
    assert!(!bad.status.success(), "{t}");
    assert!(t.contains("BLOCKER") && t.contains("nosuch0"), "{t}");

    // Kernel masquerade on the gateway is reported (a warning, not a blocker).
    lab.tool(&["nat-kernel", "on"]);
    let nat = lab.exec(
        "gw",
        &[bin, "check", "--inside", "eth1", "--outside", "eth0"],
    );
    let t = text(&nat);
    assert!(nat.status.success(), "{t}");
    assert!(
        t.contains("[warn   ] nftables has NAT rules") && t.contains("ip_forward=1"),
        "{t}"
    );
}

#[test]
fn observe_mapping_log_in_json() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&["--log-mappings", "--log-format", "json"]);
    ping(&lab, "h1");
    let log = wait_stderr(&rnat, "a JSON mapping-created line", |e| {
        e.contains("\"event\":\"created\"")
    });
    let line = log
        .lines()
        .find(|l| l.contains("\"event\":\"created\""))
        .unwrap();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let f = &v["fields"];
    assert_eq!(f["proto"], "icmp", "{v:#}");
    assert!(
        f["inside"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{H1_IP}:")),
        "{v:#}"
    );
    assert!(
        f["public"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{GW_PUBLIC_IP}:")),
        "{v:#}"
    );
    assert!(f["time"].as_f64().unwrap() > 1e9, "{v:#}");
    assert_eq!(v["target"], "rnat::mapping", "{v:#}");
    assert!(!line.contains(SRV_IP), "no destination: {line}");
}

/// The public source port of each outgoing TCP SYN in a tcpdump text ("IP A.B.C.D.PORT > ...").
fn syn_ports(text: &str, from: &str) -> Vec<u16> {
    text.lines()
        .filter(|l| l.contains("Flags [S]"))
        .filter_map(|l| {
            let src = l.split(" IP ").nth(1)?.split(" > ").next()?;
            let (ip, port) = src.rsplit_once('.')?;
            (ip == from).then(|| port.parse().ok()).flatten()
        })
        .collect()
}

#[test]
fn rfc6888_req14_port_block_mode_end_to_end() {
    require_root!();
    let lab = Lab::new();
    let rnat = lab.start_rnat(&["--port-block-size", "64", "--log-mappings"]);
    let echo = start_udp_echo(&lab);
    let http = start_http(&lab, 2000);
    let syns = lab.capture("srv", "eth0", "tcp dst port 8080");
    // Several flows from h1: four UDP (fixed source ports) and three TCP connections.
    for p in 0..4u16 {
        udp_request(&lab, "h1", &format!("blk{p}"), Some(40_001 + p))
            .unwrap_or_else(|e| rnat.fail(&e));
    }
    for _ in 0..3 {
        curl_download(&lab, "h1", &http.url, &[]).unwrap_or_else(|e| rnat.fail(&e));
    }
    let seen = syns.stop();
    let mut ports: Vec<u16> = echo
        .peers()
        .into_iter()
        .filter(|(ip, _)| ip == GW_PUBLIC_IP)
        .map(|(_, p)| p)
        .collect();
    let udp_n = ports.len();
    let tcp = syn_ports(&seen.text, GW_PUBLIC_IP);
    let tcp_n = tcp.len();
    ports.extend(tcp);
    if udp_n < 4 || tcp_n < 3 {
        rnat.fail(&format!(
            "the server saw {udp_n} UDP and {tcp_n} TCP flows from {GW_PUBLIC_IP}: {ports:?}\n{}",
            seen.text
        ));
    }
    // All of them from one 64-aligned block.
    let first = ports[0] & !63;
    assert!(first >= 1024, "{ports:?}");
    for p in &ports {
        assert_eq!(p & !63, first, "port {p} outside block {first}: {ports:?}");
    }
    // The mapping log has one block line, and no per-mapping lines.
    let log = wait_stderr(&rnat, "a block line", |e| {
        e.contains("port block allocated")
    });
    let blocks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("port block allocated"))
        .collect();
    assert_eq!(blocks.len(), 1, "{log}");
    let range = format!("{first}-{}", first + 63);
    assert!(
        blocks[0].contains(H1_IP) && blocks[0].contains(&range),
        "{}",
        blocks[0]
    );
    assert!(!log.contains("mapping created"), "{log}");
    // stats shows the block; sessions are listed as before.
    let stats = client_json(&lab, &rnat, &["stats", "--json"]);
    let b = &stats["port_blocks"];
    assert_eq!(b["size"], 64, "{stats:#}");
    assert_eq!(b["in_use"], 1, "{stats:#}");
    let want = format!("{H1_IP} {GW_PUBLIC_IP}:{range}");
    assert_eq!(b["blocks"][0], want.as_str(), "{stats:#}");
    let text = client_ok(&lab, &rnat, &["stats"]);
    assert!(
        text.contains("port blocks       1 in use (64 ports each)"),
        "{text}"
    );
    let sessions = client_json(&lab, &rnat, &["sessions", "--json"]);
    assert!(rows(&sessions).len() >= 7, "{sessions:#}");
    drop(http);
}
