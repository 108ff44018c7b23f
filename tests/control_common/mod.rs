//! Shared helpers of the control-plane tests: throw-away network namespaces and re-running one test
//! inside them.
//!
//! A test calls [`in_netns`]. In the normal test process that creates a namespace (and optionally a
//! peer namespace), runs a setup script, then re-executes this test binary as
//! `ip netns exec NS <test binary> <test> --exact` with [`ENV`] set; in that child, [`in_netns`] just
//! runs the body. The namespaces are deleted by a `Drop` guard, also when the test fails. Without
//! root the test prints a note and passes.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Set in the child process: the namespace it runs in.
pub const ENV: &str = "RNAT_TEST_NETNS";
/// Set in the child process when a peer namespace exists.
pub const PEER_ENV: &str = "RNAT_TEST_PEER";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn is_root() -> bool {
    rnat::control::host::check_privileges().is_ok()
}

/// A network namespace deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("rnat-{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a program, panicking with its output on failure; returns stdout.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell script (`sh -e`), panicking on failure; returns stdout.
pub fn sh(script: &str) -> String {
    run("sh", &["-ec", script])
}

/// The run directory a test uses instead of /run/rnat (unique per namespace).
pub fn run_dir() -> PathBuf {
    let ns = std::env::var(ENV).expect("only inside the namespace");
    PathBuf::from(format!("/run/rnat-test/{ns}"))
}

/// Runs `body` inside a fresh namespace. `setup` is a shell script run in the parent with `$NS`
/// (and `$PEER` when `peer`) set; commands for the namespace use `ip -n $NS` or
/// `ip netns exec $NS`.
pub fn in_netns(test: &str, setup: &str, peer: bool, body: impl FnOnce()) {
    if std::env::var_os(ENV).is_some() {
        body();
        return;
    }
    if !is_root() {
        eprintln!("note: skipping {test}: needs root (CAP_NET_ADMIN and CAP_NET_RAW)");
        return;
    }
    let ns = Netns::new("t");
    let peer_ns = peer.then(|| Netns::new("p"));
    let peer_name = peer_ns.as_ref().map(|p| p.name.clone()).unwrap_or_default();
    let dir = TempDir(PathBuf::from(format!("/run/rnat-test/{}", ns.name)));
    let mut full = String::from("ip -n \"$NS\" link set lo up\n");
    full.push_str("ip netns exec \"$NS\" sysctl -qw net.ipv6.conf.all.disable_ipv6=1\n");
    full.push_str(setup);
    let out = Command::new("sh")
        .args(["-ec", &full])
        .env("NS", &ns.name)
        .env("PEER", &peer_name)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "setup failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, &ns.name)
        .env(PEER_ENV, &peer_name)
        .output()
        .expect("re-exec the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {test} in {} ---\n{stdout}{stderr}", ns.name);
    assert!(out.status.success(), "{test} failed inside the namespace");
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run inside the namespace"
    );
    drop(dir);
}
