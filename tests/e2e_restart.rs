//! End-to-end: sessions survive a restart of rnat (`--snapshot FILE`, issue 7).
//!
//! A python client on h1 holds one TCP connection to an echo server on srv through rnat and
//! exchanges a line every 200 ms. rnat is stopped with SIGTERM (it writes the snapshot) and
//! started again with the same file; the same client socket keeps exchanging lines both ways,
//! and the server saw exactly one connection, from 203.0.113.1.
//!
//! rnat gets `--ports 20000-29999` and the client binds inside port 40000: the inside port
//! cannot be kept, so the public port is drawn at random. Without the snapshot the restarted
//! gateway would map the connection's next segment to another public port and the server would
//! answer it with RST; only a restored mapping carries on.
//!
//! While rnat is down the gateway kernel has no drop rules: a segment from the server arriving
//! then (a retransmission of an echo whose ACK was lost in the stop) would be answered by the
//! kernel with RST. The client therefore pauses its exchange for the restart (a pause file),
//! so the test is deterministic; the lines before and after go through the same socket.
//!
//! Run as root: `cargo test --test e2e_restart`.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const PORT: u16 = 7070;

/// Echo server: logs "accept IP PORT" per connection, echoes lines.
const SERVER_PY: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
def serve(c):
    f = c.makefile("rb")
    for line in f:
        c.sendall(line)
while True:
    c, a = s.accept()
    print("accept %s %d" % a, flush=True)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Client: one connection from inside port 40000; a line every 200 ms while PAUSE does not
/// exist, until STOP exists. Logs "connected", then "ok N" per echoed line; "error ..." and
/// exit 1 on any failure (it never reconnects).
const CLIENT_PY: &str = r#"
import os, socket, sys, time
srv, port, pause, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.bind(("0.0.0.0", 40000))
s.settimeout(20)
s.connect((srv, port))
print("connected %s:%d" % s.getsockname(), flush=True)
n = 0
buf = b""
try:
    while not os.path.exists(stop):
        if os.path.exists(pause):
            time.sleep(0.05)
            continue
        n += 1
        msg = b"line %d\n" % n
        s.sendall(msg)
        while b"\n" not in buf:
            d = s.recv(4096)
            if not d:
                raise Exception("connection closed by peer")
            buf += d
        line, buf = buf.split(b"\n", 1)
        if line + b"\n" != msg:
            raise Exception("bad echo %r" % line)
        print("ok %d" % n, flush=True)
        time.sleep(0.2)
except Exception as e:
    print("error %s" % e, flush=True)
    sys.exit(1)
print("done %d" % n, flush=True)
"#;

fn count_ok(log: &Path) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("ok "))
        .count()
}

fn wait_ok(log: &Path, at_least: usize, timeout: Duration) -> Result<usize, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = count_ok(log);
        if n >= at_least {
            return Ok(n);
        }
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains("error") || Instant::now() >= deadline {
            return Err(format!(
                "client: {n} exchanges, wanted {at_least}; log:\n{text}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn e2e_tcp_connection_survives_rnat_restart() {
    require_root!();
    let lab = Lab::new();
    let snap = lab.temp_path("table.snap");
    let snap_s = snap.to_str().unwrap().to_string();
    let args = [
        "--snapshot",
        &snap_s,
        "--snapshot-interval",
        "1",
        "--ports",
        "20000-29999",
    ];
    let mut rnat = lab.start_rnat(&args);

    let port = PORT.to_string();
    let srv_log = lab.temp_path("server.log");
    let _server = lab.spawn_logged(
        "srv",
        &["python3", "-u", "-c", SERVER_PY, SRV_IP, &port],
        &srv_log,
        &lab.temp_path("server.err"),
    );
    lab.wait_listening("srv", "tcp", PORT, Duration::from_secs(10));

    let pause = lab.temp_path("pause");
    let stop = lab.temp_path("stop");
    let cli_log = lab.temp_path("client.log");
    let mut client = lab.spawn_logged(
        "h1",
        &[
            "python3",
            "-u",
            "-c",
            CLIENT_PY,
            SRV_IP,
            &port,
            pause.to_str().unwrap(),
            stop.to_str().unwrap(),
        ],
        &cli_log,
        &lab.temp_path("client.err"),
    );
    let before = wait_ok(&cli_log, 5, Duration::from_secs(15)).unwrap_or_else(|e| rnat.fail(&e));

    // Quiesce the connection, then restart rnat with the same snapshot file.
    fs::write(&pause, b"").unwrap();
    thread::sleep(Duration::from_millis(600));
    let st = rnat
        .stop_with(libc::SIGTERM, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "rnat exit status {st}");
    let first_stderr = rnat.stderr();
    assert!(
        fs::metadata(&snap).map(|m| m.len()).unwrap_or(0) > 28,
        "no snapshot with records written; rnat stderr:\n{first_stderr}"
    );
    let mut rnat = lab.start_rnat(&args);
    let restored = rnat.stderr();
    assert!(
        restored.contains("snapshot restored") && restored.contains("restored=1"),
        "restart log: {restored}"
    );
    fs::remove_file(&pause).unwrap();

    // The same socket carries on, both ways.
    let after =
        wait_ok(&cli_log, before + 5, Duration::from_secs(15)).unwrap_or_else(|e| rnat.fail(&e));
    fs::write(&stop, b"").unwrap();
    let st = client.wait_timeout(Duration::from_secs(10));
    let log = fs::read_to_string(&cli_log).unwrap_or_default();
    assert!(st.is_some_and(|s| s.success()), "client: {st:?}\n{log}");
    assert_eq!(
        log.lines().filter(|l| l.starts_with("connected")).count(),
        1
    );
    assert!(!log.contains("error"), "{log}");

    // The server saw one connection, from the public address, on a port of rnat's range.
    let accepts: Vec<String> = fs::read_to_string(&srv_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("accept "))
        .map(str::to_string)
        .collect();
    assert_eq!(accepts.len(), 1, "server accepts: {accepts:?}");
    let parts: Vec<&str> = accepts[0].split_whitespace().collect();
    assert_eq!(parts[1], GW_PUBLIC_IP, "{accepts:?}");
    let public_port: u16 = parts[2].parse().unwrap();
    assert!((20000..=29999).contains(&public_port), "{accepts:?}");
    eprintln!(
        "restart: {before} exchanges before, {} after, one connection {}:{public_port}",
        after - before,
        parts[1]
    );
    if !rnat.is_running() {
        rnat.fail("rnat exited during the test");
    }
}
