//! Test harness for end-to-end gateway tests in network namespaces.
//!
//! Debian packages the tests need (CI installs them, tests run as root):
//!
//! ```text
//! iproute2 nftables iputils-ping curl socat tcpdump iperf3 python3 ethtool coreutils procps
//! ```
//!
//! (`coreutils` for `timeout`/`sha256sum`, `iproute2` for `ip`/`ss`/`bridge`.)
//!
//! Each [`Lab`] builds its own copy of the `tools/lab` topology under a unique namespace prefix
//! (`rnt<pid>x<counter>-`), so tests can run in parallel, and tears it down in `Drop` (also when
//! the test panics). Every wait here is bounded in time.
//!
//! Topology (see `tools/lab`):
//! `h1` 192.168.1.2 / `h2` 192.168.1.3 — bridge in `lan` — `gw` eth1 192.168.1.1 | eth0 203.0.113.1
//! — `rtr` to-gw 203.0.113.254 | to-srv 198.51.100.1 — `srv` 198.51.100.20.
//!
//! The checks live in [`scenarios`]: each runs real clients and returns an [`Observation`]
//! (what the server saw, what crossed the outside wire); [`Observation::assert_translated`]
//! decides whether the traffic was NATed. `tests/lab_selftest.rs` proves those checks accept
//! kernel masquerade and reject plain (untranslated) forwarding.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const H1_IP: &str = "192.168.1.2";
pub const H2_IP: &str = "192.168.1.3";
pub const GW_INSIDE_IP: &str = "192.168.1.1";
/// The gateway's public (outside) address: the only source address the outside may see.
pub const GW_PUBLIC_IP: &str = "203.0.113.1";
pub const RTR_GW_SIDE_IP: &str = "203.0.113.254";
pub const RTR_SRV_SIDE_IP: &str = "198.51.100.1";
pub const SRV_IP: &str = "198.51.100.20";
/// Where the gateway's outside wire is observed: rtr's interface facing gw.
pub const WIRE_HOST: &str = "rtr";
pub const WIRE_IFACE: &str = "to-gw";
/// Any inside address on the outside is a translation failure.
pub const PRIVATE_MARK: &str = "192.168.";
/// The line rnat prints on stderr once it forwards traffic.
pub const READY_LINE: &str = "rnat: ready";

const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skip the calling test (with a note) unless running as root. CI runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!(
                "note: skipping {}: needs root (network namespaces)",
                module_path!()
            );
            return;
        }
    };
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lab_script() -> PathBuf {
    repo_root().join("tools/lab")
}

/// The gateway binary: `$RNAT_BIN` if set (to try another implementation), else the crate's.
pub fn rnat_bin() -> PathBuf {
    match std::env::var_os("RNAT_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_rnat")),
    }
}

pub fn output_text(o: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned ourselves and have not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Wait for `child` to exit, at most `timeout`.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A background process in a lab namespace; SIGTERM then SIGKILL on drop (bounded).
pub struct Bg {
    child: Child,
    name: String,
}

impl Bg {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Has it exited? (non-blocking)
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait for it to exit by itself, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_bounded(&mut self.child, timeout)
    }

    /// Send `sig` and wait at most `timeout` for the exit; SIGKILL if it does not exit.
    /// Returns the exit status if it exited by itself within the timeout.
    pub fn signal_and_wait(&mut self, sig: libc::c_int, timeout: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.try_wait() {
            return Some(st);
        }
        send_signal(self.child.id(), sig);
        let st = wait_bounded(&mut self.child, timeout);
        if st.is_none() {
            let _ = self.child.kill();
            let _ = wait_bounded(&mut self.child, Duration::from_secs(5));
        }
        st
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.signal_and_wait(libc::SIGTERM, Duration::from_secs(2));
    }
}

/// Collect a pipe into a shared string on a thread; `mark` is signalled once a line contains it.
fn collect_lines(
    pipe: impl Read + Send + 'static,
    mark: Option<&'static str>,
) -> (Arc<Mutex<String>>, mpsc::Receiver<()>) {
    let buf = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let b = buf.clone();
    thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    b.lock().unwrap().push_str(&line);
                    if let Some(m) = mark
                        && line.contains(m)
                    {
                        let _ = tx.send(());
                    }
                }
            }
        }
    });
    (buf, rx)
}

/// A running gateway (rnat) in the `gw` namespace. Stopped (SIGTERM, bounded) on drop.
pub struct Rnat {
    bg: Bg,
    stderr: Arc<Mutex<String>>,
}

impl Rnat {
    /// Everything rnat printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Panic with `msg` plus rnat's stderr (use in `unwrap_or_else`).
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n----- rnat stderr -----\n{}", self.stderr())
    }

    pub fn is_running(&mut self) -> bool {
        self.bg.try_wait().is_none()
    }

    /// Send `sig` (SIGINT / SIGTERM) and return the exit status if it exits within `timeout`.
    pub fn stop_with(&mut self, sig: libc::c_int, timeout: Duration) -> Result<ExitStatus, String> {
        match self.bg.signal_and_wait(sig, timeout) {
            Some(st) => Ok(st),
            None => Err(format!(
                "rnat did not exit within {timeout:?} after signal {sig}; killed.\n----- rnat stderr -----\n{}",
                self.stderr()
            )),
        }
    }
}

/// A running tcpdump. Call [`Capture::stop`] to get what it saw.
pub struct Capture {
    bg: Bg,
    file: PathBuf,
    stderr: Arc<Mutex<String>>,
    what: String,
}

/// What a capture saw, as `tcpdump -nn -r` text (one packet per line).
#[derive(Clone, Debug, Default)]
pub struct Captured {
    pub what: String,
    pub text: String,
    /// tcpdump's own stderr (packets captured / dropped by kernel).
    pub stats: String,
}

impl Capture {
    pub fn stop(mut self) -> Captured {
        // Let in-flight packets land in the capture.
        thread::sleep(Duration::from_millis(200));
        self.bg
            .signal_and_wait(libc::SIGINT, Duration::from_secs(5));
        let out = Command::new("timeout")
            .args(["-k", "2", "60", "tcpdump", "-nn", "-r"])
            .arg(&self.file)
            .output()
            .expect("run tcpdump -r");
        let _ = fs::remove_file(&self.file);
        Captured {
            what: self.what.clone(),
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
            stats: self.stderr.lock().unwrap().clone(),
        }
    }
}

/// Does `text` mention IPv4 address `ip` as a whole address (tcpdump writes `ip.port`)?
pub fn mentions_ip(text: &str, ip: &str) -> bool {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(pos) = text[start..].find(ip) {
        let i = start + pos;
        let j = i + ip.len();
        let before_ok = i == 0 || !(bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.');
        let after_ok = j >= bytes.len() || !bytes[j].is_ascii_digit();
        if before_ok && after_ok {
            return true;
        }
        start = i + 1;
    }
    false
}

impl Captured {
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.lines().filter(|l| !l.trim().is_empty())
    }

    pub fn count(&self) -> usize {
        self.lines().count()
    }

    pub fn lines_with(&self, needle: &str) -> Vec<&str> {
        self.lines().filter(|l| l.contains(needle)).collect()
    }

    fn excerpt(&self, n: usize) -> String {
        let v: Vec<&str> = self.lines().take(n).collect();
        v.join("\n")
    }

    /// The outside wire must show traffic from the public address and no inside address at all.
    pub fn check_translated(&self) -> Result<(), String> {
        let leaks = self.lines_with(PRIVATE_MARK);
        if !leaks.is_empty() {
            let ex: Vec<&str> = leaks.iter().take(10).copied().collect();
            return Err(format!(
                "{}: {} packet(s) with an inside address ({PRIVATE_MARK}x) on the outside wire, e.g.:\n{}",
                self.what,
                leaks.len(),
                ex.join("\n")
            ));
        }
        if !self.lines().any(|l| mentions_ip(l, GW_PUBLIC_IP)) {
            return Err(format!(
                "{}: no packet from the public address {GW_PUBLIC_IP} on the outside wire ({} packets; first ones:\n{}\ntcpdump: {})",
                self.what,
                self.count(),
                self.excerpt(10),
                self.stats
            ));
        }
        Ok(())
    }
}

/// What a scenario observed.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub what: String,
    /// Client addresses as the server saw them (IPv4 address only, no port).
    pub server_peers: Vec<String>,
    /// (address, port) pairs as the server saw them, where the scenario knows them.
    pub server_endpoints: Vec<(String, u16)>,
    /// The capture on the gateway's outside wire (rtr, to-gw).
    pub wire: Captured,
    /// Free-form notes (throughput, counts) for messages.
    pub notes: Vec<String>,
}

impl Observation {
    /// The server saw at least one client, and every client it saw was the public address.
    pub fn server_saw_only_public(&self) -> Result<(), String> {
        if self.server_peers.is_empty() {
            return Err(format!("{}: the server saw no client at all", self.what));
        }
        let bad: Vec<&String> = self
            .server_peers
            .iter()
            .filter(|p| p.as_str() != GW_PUBLIC_IP)
            .collect();
        if !bad.is_empty() {
            return Err(format!(
                "{}: the server saw client address(es) other than the public {GW_PUBLIC_IP}: {:?} (all peers: {:?}) — traffic was not translated",
                self.what, bad, self.server_peers
            ));
        }
        Ok(())
    }

    /// Both: server-side view and outside wire show only the public address.
    pub fn assert_translated(&self) -> Result<(), String> {
        let a = self.server_saw_only_public();
        let b = self.wire.check_translated();
        match (a, b) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(e1), Err(e2)) => Err(format!("{e1}\n{e2}")),
        }
    }
}

/// One lab (six namespaces) with a unique prefix; torn down on drop.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    seq: AtomicUsize,
}

impl Lab {
    /// Build a fresh lab (`tools/lab up`). Panics if it cannot be built.
    pub fn new() -> Lab {
        // Once per test process: remove labs left behind by test processes that were killed.
        static GC: std::sync::Once = std::sync::Once::new();
        GC.call_once(|| {
            let _ = Command::new("timeout")
                .args(["-k", "5", "120"])
                .arg(lab_script())
                .arg("gc")
                .stdin(Stdio::null())
                .output();
        });
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("rnt{}x{}-", std::process::id(), n);
        let dir = std::env::temp_dir().join(format!("{prefix}lab"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create lab temp dir");
        let lab = Lab {
            prefix,
            dir,
            seq: AtomicUsize::new(0),
        };
        let out = lab.tool_output(&["up"]);
        if !out.status.success() {
            // Drop runs `down` as well.
            panic!("tools/lab up failed:\n{}", output_text(&out));
        }
        lab
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Namespace name of a lab host (h1 h2 lan gw rtr srv).
    pub fn ns(&self, host: &str) -> String {
        format!("{}{}", self.prefix, host)
    }

    /// The lab's private temp directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh file name in the lab temp dir.
    pub fn temp_path(&self, stem: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        self.dir.join(format!("{n}-{stem}"))
    }

    fn tool_output(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-k", "5", "120"])
            .arg(lab_script())
            .args(["--prefix", &self.prefix])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tools/lab")
    }

    /// Run a `tools/lab` subcommand for this lab (e.g. `["nat-kernel", "on"]`); panics on failure.
    pub fn tool(&self, args: &[&str]) {
        let out = self.tool_output(args);
        assert!(
            out.status.success(),
            "tools/lab {args:?} failed:\n{}",
            output_text(&out)
        );
    }

    fn netns_cmd(&self, host: &str, args: &[&str], timeout: Duration) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-k", "2", &format!("{}", timeout.as_secs().max(1))])
            .args(["ip", "netns", "exec", &self.ns(host)])
            .args(args);
        c
    }

    /// Run a command in `host`, bounded by 60 s; returns its output whatever the status.
    pub fn exec(&self, host: &str, args: &[&str]) -> Output {
        self.exec_timeout(host, args, DEFAULT_EXEC_TIMEOUT)
    }

    /// Run a command in `host`, killed after `timeout` (exit status 124/137 then).
    pub fn exec_timeout(&self, host: &str, args: &[&str], timeout: Duration) -> Output {
        self.netns_cmd(host, args, timeout)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {host}: {e}"))
    }

    /// Run a command in `host` with `input` on its stdin, bounded by `timeout`.
    pub fn exec_input(&self, host: &str, args: &[&str], input: &[u8], timeout: Duration) -> Output {
        let mut child = self
            .netns_cmd(host, args, timeout)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {host}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let w = thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait");
        let _ = w.join();
        out
    }

    /// Run a command and require success; returns stdout. Panics with full output otherwise.
    pub fn exec_ok(&self, host: &str, args: &[&str]) -> String {
        let out = self.exec(host, args);
        assert!(
            out.status.success(),
            "{args:?} in {host} failed:\n{}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run a shell snippet in `host` (bounded by 60 s).
    pub fn sh(&self, host: &str, script: &str) -> Output {
        self.exec(host, &["sh", "-c", script])
    }

    /// Start a background process in `host` (stdio to /dev/null); killed on drop.
    pub fn spawn(&self, host: &str, args: &[&str]) -> Bg {
        self.spawn_with(host, args, Stdio::null(), Stdio::null())
    }

    /// Start a background process with stdout/stderr going to files.
    pub fn spawn_logged(&self, host: &str, args: &[&str], stdout: &Path, stderr: &Path) -> Bg {
        let o = fs::File::create(stdout).expect("create stdout log");
        let e = fs::File::create(stderr).expect("create stderr log");
        self.spawn_with(host, args, Stdio::from(o), Stdio::from(e))
    }

    pub fn spawn_with(&self, host: &str, args: &[&str], stdout: Stdio, stderr: Stdio) -> Bg {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {host}: {e}"));
        Bg {
            child,
            name: format!("{host}: {}", args.join(" ")),
        }
    }

    /// Start rnat in `gw`: `rnat --inside eth1 --outside eth0 <extra>`; waits (10 s, or
    /// `$RNAT_READY_TIMEOUT_S`) for `rnat: ready` on its stderr. Panics with its stderr if it
    /// exits or stays silent.
    ///
    /// rnat keeps lock and state files under `/run/rnat`, named after the interfaces; every lab
    /// uses eth0/eth1, so parallel tests would collide there. `ip netns exec` already gives the
    /// process a private mount namespace: a tmpfs is mounted over `/run/rnat` in it first (the
    /// mount does not propagate to the host). `RNAT_LAB_SHARED_RUN=1` turns that off.
    pub fn start_rnat(&self, extra: &[&str]) -> Rnat {
        let bin = rnat_bin();
        let bin = bin.to_str().expect("utf-8 path");
        let mut argv: Vec<&str> = vec![];
        if std::env::var_os("RNAT_LAB_SHARED_RUN").is_none_or(|v| v != "1") {
            argv.extend_from_slice(&[
                "sh",
                "-c",
                "mkdir -p /run/rnat && mount -t tmpfs -o size=4m,mode=0755 rnat-lab /run/rnat && exec \"$0\" \"$@\"",
            ]);
        }
        argv.extend_from_slice(&[bin, "--inside", "eth1", "--outside", "eth0"]);
        argv.extend_from_slice(extra);
        self.start_gateway(&argv)
    }

    /// Start an arbitrary gateway command line in `gw` and wait for [`READY_LINE`].
    pub fn start_gateway(&self, argv: &[&str]) -> Rnat {
        let secs: u64 = std::env::var("RNAT_READY_TIMEOUT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let mut bg = self.spawn_with("gw", argv, Stdio::null(), Stdio::piped());
        let pipe = bg.child.stderr.take().unwrap();
        let (stderr, ready) = collect_lines(pipe, Some(READY_LINE));
        let mut r = Rnat { bg, stderr };
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if ready.recv_timeout(Duration::from_millis(50)).is_ok() {
                return r;
            }
            if let Some(st) = r.bg.try_wait() {
                // Give the reader a moment to drain the pipe.
                thread::sleep(Duration::from_millis(100));
                if ready.try_recv().is_ok() {
                    r.fail(&format!(
                        "gateway {argv:?} printed '{READY_LINE}' but exited: {st}"
                    ));
                }
                r.fail(&format!(
                    "gateway {argv:?} exited ({st}) before printing '{READY_LINE}'"
                ));
            }
            if Instant::now() >= deadline {
                r.fail(&format!(
                    "gateway {argv:?} did not print '{READY_LINE}' within {secs} s"
                ));
            }
        }
    }

    /// Start tcpdump on `iface` in `host` (BPF `filter`, may be empty) and wait until it listens.
    pub fn capture(&self, host: &str, iface: &str, filter: &str) -> Capture {
        let file = self.temp_path(&format!("{host}-{iface}.pcap"));
        let file_s = file.to_str().expect("utf-8 path").to_string();
        let mut argv = vec![
            "tcpdump",
            "-i",
            iface,
            "-nn",
            "-U",
            "--immediate-mode",
            "-s",
            "160",
            "-Z",
            "root",
            "-w",
            &file_s,
        ];
        let words: Vec<&str> = filter.split_whitespace().collect();
        argv.extend_from_slice(&words);
        let mut bg = self.spawn_with(host, &argv, Stdio::null(), Stdio::piped());
        let pipe = bg.child.stderr.take().unwrap();
        let (stderr, ready) = collect_lines(pipe, Some("listening on"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ready.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
            if let Some(st) = bg.try_wait() {
                panic!(
                    "tcpdump on {host}/{iface} exited ({st}): {}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tcpdump on {host}/{iface} did not start listening within 10 s"
            );
        }
        Capture {
            bg,
            file,
            stderr,
            what: format!("capture {host}/{iface} '{filter}'"),
        }
    }

    /// Capture on the gateway's outside wire (rtr, its gw-facing interface).
    pub fn capture_wire(&self) -> Capture {
        self.capture(WIRE_HOST, WIRE_IFACE, "")
    }

    /// Wait (bounded) until something listens on `proto` ("tcp"/"udp") `port` in `host`.
    pub fn wait_listening(&self, host: &str, proto: &str, port: u16, timeout: Duration) {
        let flag = if proto == "udp" { "-Hlun" } else { "-Hltn" };
        let filter = format!("sport = :{port}");
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec_timeout(host, &["ss", flag, &filter], Duration::from_secs(5));
            if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listening on {proto}/{port} in {host} after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.tool_output(&["down"]);
        if !out.status.success() {
            eprintln!(
                "warning: tools/lab down --prefix {} failed:\n{}",
                self.prefix,
                output_text(&out)
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// sha256 of a file, via coreutils.
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Write `len` deterministic pseudo-random bytes (incompressible, so a broken payload shows).
pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    fs::write(path, data).expect("write random file");
}

/// Extract a value from a JSON file with a python expression on `d` (no serde dependency).
pub fn json_query(path: &Path, expr: &str) -> Result<String, String> {
    let prog = format!("import json,sys\nd=json.load(open(sys.argv[1]))\nprint({expr})");
    let out = Command::new("timeout")
        .args(["10", "python3", "-c", &prog])
        .arg(path)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "json query {expr} on {}: {}\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(path).unwrap_or_default()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Split "a.b.c.d:port" (as printed by ss / our UDP server).
pub fn split_endpoint(s: &str) -> Option<(String, u16)> {
    let (ip, port) = s.trim().rsplit_once(':')?;
    Some((ip.to_string(), port.parse().ok()?))
}

/// Servers and clients used by the scenarios.
pub mod servers {
    use super::*;

    pub const HTTP_PORT: u16 = 8080;
    pub const UDP_PORT: u16 = 7777;
    pub const IPERF_PORT: u16 = 5201;

    /// UDP echo server: answers each datagram with "peer=IP:PORT <payload>" and logs "IP:PORT".
    /// Exits after 60 s without traffic or 100000 datagrams.
    const UDP_ECHO_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(60)
for _ in range(100000):
    try:
        d, a = s.recvfrom(65535)
    except socket.timeout:
        break
    print("%s:%d" % a, flush=True)
    s.sendto(b"peer=%s:%d " % (a[0].encode(), a[1]) + d, a)
"#;

    pub struct HttpServer {
        pub bg: Bg,
        pub log: PathBuf,
        pub file: PathBuf,
        pub url: String,
        pub sha256: String,
    }

    impl HttpServer {
        /// Client addresses from the access log ("IP - - [date] \"GET ...").
        pub fn access_log_peers(&self) -> Vec<String> {
            fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("\"GET "))
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        }

        pub fn access_log(&self) -> String {
            fs::read_to_string(&self.log).unwrap_or_default()
        }
    }

    /// `python3 -m http.server` bound to srv:8080 serving a `size`-byte random file.
    pub fn start_http(lab: &Lab, size: usize) -> HttpServer {
        let www = lab.temp_path("www");
        fs::create_dir_all(&www).unwrap();
        let file = www.join("blob.bin");
        write_random_file(&file, size, 0x9e37_79b9_7f4a_7c15);
        let sha256 = sha256_file(&file);
        let log = lab.temp_path("http-access.log");
        let out = lab.temp_path("http-stdout.log");
        let port = HTTP_PORT.to_string();
        let bg = lab.spawn_logged(
            "srv",
            &[
                "python3",
                "-u",
                "-m",
                "http.server",
                "--bind",
                SRV_IP,
                "--directory",
                www.to_str().unwrap(),
                &port,
            ],
            &out,
            &log,
        );
        lab.wait_listening("srv", "tcp", HTTP_PORT, Duration::from_secs(15));
        HttpServer {
            bg,
            log,
            file,
            url: format!("http://{SRV_IP}:{HTTP_PORT}/blob.bin"),
            sha256,
        }
    }

    /// Download `url` with curl in `host` into a temp file; returns the file path.
    pub fn curl_download(
        lab: &Lab,
        host: &str,
        url: &str,
        extra: &[&str],
    ) -> Result<PathBuf, String> {
        let dst = lab.temp_path(&format!("{host}-download"));
        let dst_s = dst.to_str().unwrap().to_string();
        let mut argv = vec![
            "curl",
            "-sS",
            "--fail",
            "--connect-timeout",
            "5",
            "--max-time",
            "40",
            "-o",
            &dst_s,
        ];
        argv.extend_from_slice(extra);
        argv.push(url);
        let out = lab.exec_timeout(host, &argv, Duration::from_secs(50));
        if !out.status.success() {
            return Err(format!(
                "curl {url} from {host} failed:\n{}",
                output_text(&out)
            ));
        }
        Ok(dst)
    }

    pub struct UdpEcho {
        pub bg: Bg,
        pub log: PathBuf,
    }

    impl UdpEcho {
        /// (address, port) of every datagram the server received.
        pub fn peers(&self) -> Vec<(String, u16)> {
            fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .filter_map(split_endpoint)
                .collect()
        }
    }

    pub fn start_udp_echo(lab: &Lab) -> UdpEcho {
        let log = lab.temp_path("udp-echo.log");
        let err = lab.temp_path("udp-echo.err");
        let port = UDP_PORT.to_string();
        let bg = lab.spawn_logged(
            "srv",
            &["python3", "-u", "-c", UDP_ECHO_PY, SRV_IP, &port],
            &log,
            &err,
        );
        lab.wait_listening("srv", "udp", UDP_PORT, Duration::from_secs(15));
        UdpEcho { bg, log }
    }

    /// One UDP request/response with socat from `host` (optionally from a fixed source port).
    /// Returns the reply text ("peer=IP:PORT payload").
    pub fn udp_request(
        lab: &Lab,
        host: &str,
        payload: &str,
        source_port: Option<u16>,
    ) -> Result<String, String> {
        let mut target = format!("UDP4:{SRV_IP}:{UDP_PORT}");
        if let Some(p) = source_port {
            target.push_str(&format!(",sourceport={p},reuseaddr"));
        }
        let out = lab.exec_input(
            host,
            &["socat", "-t", "1.5", "-", &target],
            format!("{payload}\n").as_bytes(),
            Duration::from_secs(15),
        );
        let reply = String::from_utf8_lossy(&out.stdout).into_owned();
        if !reply.contains(payload) {
            return Err(format!(
                "UDP request '{payload}' from {host}: no echo came back\n{}",
                output_text(&out)
            ));
        }
        Ok(reply.trim().to_string())
    }
}

/// The end-to-end checks. Each returns `Err` when connectivity fails (no reply, corrupted
/// download...) and otherwise an [`Observation`] to judge with `assert_translated`.
pub mod scenarios {
    use super::servers::*;
    use super::*;

    /// ping srv from `host`; the server side is a capture on srv's eth0 (echo request sources).
    pub fn ping(lab: &Lab, host: &str) -> Result<Observation, String> {
        let wire = lab.capture_wire();
        let at_srv = lab.capture("srv", "eth0", "icmp");
        let out = lab.exec_timeout(
            host,
            &[
                "ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", "-w", "10", SRV_IP,
            ],
            Duration::from_secs(20),
        );
        let at_srv = at_srv.stop();
        let wire = wire.stop();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let received = text
            .lines()
            .find(|l| l.contains("received"))
            .and_then(|l| {
                l.split(',')
                    .find(|p| p.contains("received"))
                    .and_then(|p| p.split_whitespace().next())
                    .and_then(|n| n.parse::<u32>().ok())
            })
            .unwrap_or(0);
        if received < 4 {
            return Err(format!(
                "ping {host} -> {SRV_IP}: only {received}/5 replies\n{}",
                output_text(&out)
            ));
        }
        let server_peers: Vec<String> = at_srv
            .lines_with("echo request")
            .iter()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.position(|t| t == "IP")?;
                w.next().map(str::to_string)
            })
            .collect();
        Ok(Observation {
            what: format!("ping {host} -> srv"),
            server_peers,
            server_endpoints: vec![],
            wire,
            notes: vec![format!("{received}/5 replies")],
        })
    }

    /// Download a 4 MiB file over HTTP from srv with curl in `host`; sha256 must match.
    pub fn http_download(lab: &Lab, host: &str) -> Result<Observation, String> {
        let srv = start_http(lab, 4 << 20);
        let wire = lab.capture_wire();
        let got = curl_download(lab, host, &srv.url, &[]);
        let wire = wire.stop();
        let got = got?;
        let sha = sha256_file(&got);
        if sha != srv.sha256 {
            return Err(format!(
                "HTTP download from {host}: sha256 {sha} != {} ({} of {} bytes)",
                srv.sha256,
                fs::metadata(&got).map(|m| m.len()).unwrap_or(0),
                4 << 20
            ));
        }
        Ok(Observation {
            what: format!("http download {host} <- srv"),
            server_peers: srv.access_log_peers(),
            server_endpoints: vec![],
            wire,
            notes: vec![format!("access log:\n{}", srv.access_log())],
        })
    }

    /// Three UDP request/responses from `host` with socat; the server reports the peer.
    pub fn udp_echo(lab: &Lab, host: &str) -> Result<Observation, String> {
        let srv = start_udp_echo(lab);
        let wire = lab.capture_wire();
        let mut replies = vec![];
        let mut err = None;
        for i in 0..3 {
            match udp_request(lab, host, &format!("hello-{host}-{i}"), None) {
                Ok(r) => replies.push(r),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let wire = wire.stop();
        if let Some(e) = err {
            return Err(e);
        }
        let server_endpoints = srv.peers();
        Ok(Observation {
            what: format!("udp echo {host} <-> srv"),
            server_peers: server_endpoints.iter().map(|(a, _)| a.clone()).collect(),
            server_endpoints,
            wire,
            notes: replies,
        })
    }

    /// iperf3 TCP for 3 s from `host` to srv; needs nonzero throughput; the server's JSON
    /// report names the peer of the control and data connections.
    pub fn iperf_tcp(lab: &Lab, host: &str) -> Result<Observation, String> {
        let srv_json = lab.temp_path("iperf-server.json");
        let srv_err = lab.temp_path("iperf-server.err");
        let port = IPERF_PORT.to_string();
        let mut server = lab.spawn_logged(
            "srv",
            &["iperf3", "-s", "-1", "-J", "-B", SRV_IP, "-p", &port],
            &srv_json,
            &srv_err,
        );
        lab.wait_listening("srv", "tcp", IPERF_PORT, Duration::from_secs(15));
        let wire = lab.capture_wire();
        let cli = lab.exec_timeout(
            host,
            &[
                "iperf3",
                "-c",
                SRV_IP,
                "-p",
                &port,
                "-t",
                "3",
                "-J",
                "--connect-timeout",
                "5000",
            ],
            Duration::from_secs(30),
        );
        let wire = wire.stop();
        let cli_json = lab.temp_path("iperf-client.json");
        fs::write(&cli_json, &cli.stdout).unwrap();
        if !cli.status.success() {
            return Err(format!(
                "iperf3 client in {host} failed:\n{}",
                output_text(&cli)
            ));
        }
        let bps: f64 = json_query(&cli_json, "d['end']['sum_received']['bits_per_second']")?
            .parse()
            .map_err(|e| format!("iperf3 throughput: {e}"))?;
        if bps <= 0.0 {
            return Err(format!("iperf3 from {host}: zero throughput"));
        }
        if server.wait_timeout(Duration::from_secs(10)).is_none() {
            return Err("iperf3 server did not finish within 10 s after the client".into());
        }
        let peers = json_query(
            &srv_json,
            "' '.join([d['start']['accepted_connection']['host']] + [c['remote_host'] for c in d['start']['connected']])",
        )?;
        Ok(Observation {
            what: format!("iperf3 tcp {host} -> srv"),
            server_peers: peers.split_whitespace().map(str::to_string).collect(),
            server_endpoints: vec![],
            wire,
            notes: vec![format!("{:.1} Mbit/s", bps / 1e6)],
        })
    }

    /// h1 and h2 at once: concurrent rate-limited HTTP downloads (srv's `ss` must show two
    /// established connections at the same time), then UDP from both with the same source port
    /// (the server must see two distinct public endpoints and both must get their reply).
    pub fn two_hosts(lab: &Lab) -> Result<Observation, String> {
        let http = start_http(lab, 16 << 20);
        let udp = start_udp_echo(lab);
        let wire = lab.capture_wire();
        let result = two_hosts_inner(lab, &http, &udp);
        let wire = wire.stop();
        let (mut peers, endpoints, notes) = result?;
        peers.extend(http.access_log_peers());
        peers.extend(endpoints.iter().map(|(a, _)| a.clone()));
        Ok(Observation {
            what: "h1 + h2 at once".into(),
            server_peers: peers,
            server_endpoints: endpoints,
            wire,
            notes,
        })
    }

    type TwoHosts = (Vec<String>, Vec<(String, u16)>, Vec<String>);

    fn two_hosts_inner(lab: &Lab, http: &HttpServer, udp: &UdpEcho) -> Result<TwoHosts, String> {
        let mut notes = vec![];
        let dl: Vec<_> = ["h1", "h2"]
            .iter()
            .map(|h| {
                let dst = lab.temp_path(&format!("{h}-download"));
                let bg = lab.spawn(
                    h,
                    &[
                        "curl",
                        "-sS",
                        "--fail",
                        "--connect-timeout",
                        "5",
                        "--max-time",
                        "40",
                        "--limit-rate",
                        "4M",
                        "-o",
                        dst.to_str().unwrap(),
                        &http.url,
                    ],
                );
                (bg, dst)
            })
            .collect();
        // While both downloads run (16 MiB at 4 MB/s each), srv's `ss` must show two
        // connections at the same time (any state but listening; the peer is the last column).
        let mut ss_peers: Vec<String> = vec![];
        let deadline = Instant::now() + Duration::from_secs(5);
        let filter = format!("( sport = :{HTTP_PORT} )");
        while Instant::now() < deadline {
            let out = lab.exec_timeout(
                "srv",
                &["ss", "-Htn", "state", "connected", &filter],
                Duration::from_secs(5),
            );
            let mut eps: Vec<(String, u16)> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().last())
                .filter_map(split_endpoint)
                .collect();
            eps.sort();
            eps.dedup();
            let peers: Vec<String> = eps.into_iter().map(|(a, _)| a).collect();
            if peers.len() >= 2 {
                ss_peers = peers;
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        for (mut bg, dst) in dl {
            let st = bg.wait_timeout(Duration::from_secs(45));
            match st {
                Some(s) if s.success() => {}
                other => {
                    return Err(format!(
                        "concurrent download in {} failed: {other:?}",
                        bg.name()
                    ));
                }
            }
            let sha = sha256_file(&dst);
            if sha != http.sha256 {
                return Err(format!(
                    "concurrent download in {}: sha256 mismatch",
                    bg.name()
                ));
            }
        }
        if ss_peers.len() < 2 {
            return Err("srv never showed two concurrent established HTTP connections".into());
        }
        notes.push(format!("ss peers during downloads: {ss_peers:?}"));

        // Same inside source port from both hosts.
        let r1 = udp_request(lab, "h1", "same-port-h1", Some(40000))?;
        let r2 = udp_request(lab, "h2", "same-port-h2", Some(40000))?;
        notes.push(r1);
        notes.push(r2);
        let endpoints = udp.peers();
        let mut distinct = endpoints.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() < 2 {
            return Err(format!(
                "UDP from h1 and h2 (both source port 40000): the server saw {} distinct endpoint(s): {endpoints:?}",
                distinct.len()
            ));
        }
        Ok((ss_peers, endpoints, notes))
    }
}

impl Rnat {
    /// The gateway's pid (rnat itself: `ip netns exec` and the harness's `sh -c` both exec).
    pub fn pid(&self) -> u32 {
        self.bg.pid()
    }
}

impl Lab {
    /// Run `rnat ARGS` (a client subcommand: sessions, stats, flush, top) next to the running
    /// gateway `gw`: in its network and mount namespaces (`nsenter`), so it sees the private
    /// `/run/rnat` that [`Lab::start_rnat`] gives the gateway. Bounded by 30 s.
    pub fn rnat_client(&self, gw: &Rnat, args: &[&str]) -> Output {
        let pid = gw.pid().to_string();
        Command::new("timeout")
            .args(["-k", "2", "30", "nsenter", "-t", &pid, "-m", "-n", "--"])
            .arg(rnat_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }
}

/// Runs `scenario` with `rnat <extra>` in a fresh lab and checks that the traffic was translated;
/// fails with rnat's stderr on any problem.
pub fn through_rnat_with(
    extra: &[&str],
    scenario: impl FnOnce(&Lab) -> Result<Observation, String>,
) -> Observation {
    let lab = Lab::new();
    let mut rnat = lab.start_rnat(extra);
    let obs = scenario(&lab).unwrap_or_else(|e| rnat.fail(&e));
    obs.assert_translated()
        .unwrap_or_else(|e| rnat.fail(&format!("{e}\nnotes: {:?}", obs.notes)));
    if !rnat.is_running() {
        rnat.fail("rnat exited during the test");
    }
    obs
}
