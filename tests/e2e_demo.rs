//! The teaching demo (the README's first command) runs headless, bounded, and shows what it
//! promises: one packet before and after translation, the live translation table, and that the
//! server only ever saw the public address. It cleans up its namespaces.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn e2e_demo_runs_headless_and_tells_the_story() {
    require_root!();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("timeout")
        .args(["120", &format!("{root}/tools/demo"), "--duration", "6"])
        .env("RNAT_BIN", rnat_bin())
        .output()
        .expect("run tools/demo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", output_text(&out));
    // One packet before and after translation.
    let before = text.split("before translation").nth(1).unwrap_or("");
    assert!(
        before.contains(&format!("IP {H1_IP} > {SRV_IP}: ICMP echo request")),
        "{text}"
    );
    let after = text.split("after translation").nth(1).unwrap_or("");
    assert!(
        after.contains(&format!("IP {GW_PUBLIC_IP} > {SRV_IP}: ICMP echo request")),
        "{text}"
    );
    // The live table maps both private hosts to the public address.
    for host in [H1_IP, H2_IP] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("{host}:"))
                    && l.contains(&format!("-> {GW_PUBLIC_IP}:"))),
            "no table row for {host}:\n{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "the server believes its clients are: {GW_PUBLIC_IP}"
        )),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains("believes") && l.contains("192.168.")),
        "{text}"
    );
    assert!(text.contains("cleaned up"), "{text}");
    std::thread::sleep(Duration::from_millis(200));
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains("demo"),
        "demo namespaces left behind"
    );
}
