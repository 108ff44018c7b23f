//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz harnesses on
//! stable, so CI checks every seed (and every crash input added there) without nightly.
//!
//! Also here, ignored by default:
//! - `generate_fuzz_corpus`: rewrites the seed files from real frames (built with etherparse):
//!   `RNAT_WRITE_CORPUS=1 cargo test --test fuzz_corpus_replay -- --ignored generate_fuzz_corpus`;
//! - `stable_fuzz_loop`: a bounded mutation fuzzer for machines without nightly/cargo-fuzz:
//!   `RNAT_FUZZ_ITERS=2000000 cargo test --release --test fuzz_corpus_replay -- --ignored stable_fuzz_loop`.

mod frames;
mod fuzz_harness;

use frames::*;
use fuzz_harness::{Record, cfg_bits, encode, mode_bits, rec_bits};
use std::fs;
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut v: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn replay_packet_path_corpus() {
    let files = corpus("packet_path");
    assert!(
        files.len() >= 20,
        "packet_path corpus has {} files",
        files.len()
    );
    let mut fwd = 0;
    let mut drops = std::collections::HashMap::new();
    for (name, data) in &files {
        let s = std::panic::catch_unwind(|| fuzz_harness::packet_path(data))
            .unwrap_or_else(|_| panic!("packet_path corpus file {name} fails"));
        eprintln!("{name}: {s:?}");
        fwd += s.forwarded + s.hairpinned;
        for (r, n) in s.drops {
            *drops.entry(r).or_insert(0) += n;
        }
    }
    // The seeds reach the interesting paths (a corpus of garbage would not).
    assert!(fwd > 20, "only {fwd} frames forwarded");
    for r in [
        "malformed",
        "bad_checksum",
        "spoofed_source",
        "filtered",
        "no_mapping",
    ] {
        assert!(
            drops.contains_key(r),
            "no seed reaches drop reason {r}: {drops:?}"
        );
    }
}

#[test]
fn replay_wire_views_corpus() {
    let files = corpus("wire_views");
    assert!(
        files.len() >= 20,
        "wire_views corpus has {} files",
        files.len()
    );
    for (name, data) in &files {
        std::panic::catch_unwind(|| fuzz_harness::wire_views(data))
            .unwrap_or_else(|_| panic!("wire_views corpus file {name} fails"));
    }
}

// ------------------------------------------------------------------ corpus generation

const OUT: u8 = 0;
const IN: u8 = rec_bits::INBOUND;
const STEP_1S: u8 = 2 << rec_bits::STEP_SHIFT;
const STEP_LONG: u8 = 7 << rec_bits::STEP_SHIFT;

fn rec(ctrl: u8, frame: Vec<u8>) -> Record {
    Record { ctrl, frame }
}

/// Sets the IPv4 header checksum right after an edit.
fn refix_ip(mut f: Vec<u8>) -> Vec<u8> {
    let hl = ((f[14] & 0x0f) as usize) * 4;
    f[24] = 0;
    f[25] = 0;
    let c = rnat::wire::checksum::checksum(&f[14..14 + hl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// `f` with IPv4 options (`opts`, a multiple of 4 bytes) inserted; checksums fixed.
fn with_ip_options(f: &[u8], opts: &[u8]) -> Vec<u8> {
    let mut v = f[..34].to_vec();
    v.extend_from_slice(opts);
    v.extend_from_slice(&f[34..]);
    v[14] = 0x40 | ((20 + opts.len()) / 4) as u8;
    let tl = u16::from_be_bytes([v[16], v[17]]) as usize + opts.len();
    v[16..18].copy_from_slice(&(tl as u16).to_be_bytes());
    fuzz_harness::fix_checksums(&mut v, false);
    v
}

fn with_frag(f: &[u8], word: u16) -> Vec<u8> {
    let mut v = f.to_vec();
    v[20..22].copy_from_slice(&word.to_be_bytes());
    refix_ip(v)
}

/// A datagram (DF cleared) split into its first fragment and the rest.
fn two_fragments(f: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut f = f.to_vec();
    f[20] = 0;
    let f = refix_ip(f);
    let mut parts = Vec::new();
    rnat::wire::frag::fragment(&f, 14, 44, &mut Vec::new(), |p| parts.push(p.to_vec())).unwrap();
    assert_eq!(parts.len(), 2);
    (parts[0].clone(), parts[1].clone())
}

fn packet_path_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let eif = 0;
    let adf = 1;
    let apdf = 2;
    let u_out = udp(H1, 40000, SRV, 53, b"query");
    let u_in = udp(SRV, 53, PUB, 40000, b"answer");
    let t_syn = tcp(H1, 51000, SRV, 80, SYN, b"");
    let t_synack = tcp(SRV, 80, PUB, 51000, SYN | ACK, b"");
    let t_ack = tcp(H1, 51000, SRV, 80, ACK, b"GET /");
    let e_req = echo_request(H1, SRV, 4000, 1);
    let e_rep = echo_reply(SRV, PUB, 4000, 1);
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "udp-roundtrip",
            encode(
                apdf,
                0,
                &[rec(OUT, u_out.clone()), rec(IN | STEP_1S, u_in.clone())],
            ),
        ),
        (
            "udp-roundtrip-batch",
            encode(
                apdf,
                mode_bits::BATCH,
                &[rec(OUT, u_out.clone()), rec(IN, u_in.clone())],
            ),
        ),
        (
            "udp-eif-unsolicited",
            encode(
                eif,
                0,
                &[
                    rec(OUT, u_out.clone()),
                    rec(IN, udp(SRV2, 9, PUB, 40000, b"x")),
                ],
            ),
        ),
        (
            "udp-adf-other-port",
            encode(
                adf,
                0,
                &[
                    rec(OUT, u_out.clone()),
                    rec(IN, udp(SRV, 9, PUB, 40000, b"x")),
                ],
            ),
        ),
        (
            "udp-apdf-filtered",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, u_out.clone()),
                    rec(IN, udp(SRV2, 53, PUB, 40000, b"x")),
                ],
            ),
        ),
        (
            "udp-no-mapping",
            encode(
                apdf,
                mode_bits::NO_PRIME,
                &[rec(IN, udp(SRV, 53, PUB, 33333, b"scan"))],
            ),
        ),
        (
            "udp-expire-then-reply",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, u_out.clone()),
                    rec(IN | STEP_LONG | rec_bits::EXPIRE, u_in.clone()),
                ],
            ),
        ),
        (
            "udp-zero-checksum",
            encode(
                apdf,
                0,
                &[{
                    let mut f = u_out.clone();
                    f[40] = 0;
                    f[41] = 0;
                    rec(OUT, f)
                }],
            ),
        ),
        (
            "tcp-handshake-close",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, t_syn.clone()),
                    rec(IN, t_synack.clone()),
                    rec(OUT, t_ack.clone()),
                    rec(OUT | STEP_1S, tcp(H1, 51000, SRV, 80, FIN | ACK, b"")),
                    rec(IN, tcp(SRV, 80, PUB, 51000, FIN | ACK, b"")),
                    rec(OUT | rec_bits::EXPIRE, tcp(H1, 51000, SRV, 80, ACK, b"")),
                ],
            ),
        ),
        (
            "tcp-rst",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, t_syn.clone()),
                    rec(IN, tcp(SRV, 80, PUB, 51000, RST, b"")),
                ],
            ),
        ),
        (
            "tcp-partial-gso",
            encode(
                apdf,
                0,
                &[
                    rec(
                        OUT | rec_bits::PARTIAL | rec_bits::GSO | rec_bits::FIX_CSUM,
                        tcp(H1, 51000, SRV, 80, ACK, &[7; 3000]),
                    ),
                    rec(
                        IN | rec_bits::PARTIAL | rec_bits::FIX_CSUM,
                        tcp(SRV, 80, PUB, 51000, ACK, &[8; 100]),
                    ),
                ],
            ),
        ),
        (
            "tcp-options",
            encode(
                apdf,
                0,
                &[{
                    // Data offset 6 with an MSS option.
                    let mut f = tcp(H1, 51001, SRV, 80, SYN, &[2, 4, 5, 0xb4]);
                    f[46] = 0x60;
                    rec(OUT | rec_bits::FIX_CSUM, f)
                }],
            ),
        ),
        (
            "tcp-data-offset-past-end",
            encode(
                apdf,
                0,
                &[{
                    let mut f = t_syn.clone();
                    f[46] = 0xf0;
                    rec(OUT | rec_bits::FIX_CSUM, f)
                }],
            ),
        ),
        (
            "icmp-echo",
            encode(apdf, 0, &[rec(OUT, e_req.clone()), rec(IN, e_rep.clone())]),
        ),
        (
            "icmp-unsupported",
            encode(
                apdf,
                0,
                &[rec(OUT | rec_bits::FIX_CSUM, {
                    let mut f = e_req.clone();
                    f[34] = 13; // timestamp request
                    f
                })],
            ),
        ),
        (
            "icmp-error-inbound",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, u_out.clone()),
                    rec(IN, {
                        let mut sent = u_out.clone();
                        sent[26..30].copy_from_slice(&PUB);
                        let sent = refix_ip(sent);
                        icmp_error(SRV, PUB, 3, 3, [0; 4], &quote_of(&sent, 8))
                    }),
                ],
            ),
        ),
        (
            "icmp-error-outbound",
            encode(
                eif,
                0,
                &[
                    rec(OUT, u_out.clone()),
                    rec(IN, u_in.clone()),
                    rec(
                        OUT,
                        icmp_error(
                            H1,
                            SRV,
                            3,
                            3,
                            [0; 4],
                            &quote_of(&udp(SRV, 53, H1, 40000, b"answer"), 8),
                        ),
                    ),
                ],
            ),
        ),
        (
            "icmp-error-quoting-garbage",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, u_out.clone()),
                    rec(
                        IN,
                        icmp_error(
                            SRV,
                            PUB,
                            11,
                            0,
                            [0; 4],
                            &[0x45, 0, 0, 99, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                        ),
                    ),
                    rec(IN, icmp_error(SRV, PUB, 3, 4, [0, 0, 5, 0xdc], &[0x4f; 40])),
                ],
            ),
        ),
        (
            "fragments",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, with_frag(&u_out, 0x2000)),
                    rec(OUT, with_frag(&u_out, 0x0004)),
                    rec(IN, with_frag(&u_in, 0x2000)),
                    rec(IN, with_frag(&u_in, 0x1fff)),
                ],
            ),
        ),
        (
            "fragments-out-of-order",
            encode(apdf, 0, &{
                let (o1, o2) = two_fragments(&udp(H1, 40002, SRV, 53, &[5; 40]));
                let (i1, i2) = two_fragments(&udp(SRV, 53, PUB, 40002, &[6; 40]));
                [rec(OUT, o2), rec(OUT, o1), rec(IN, i2), rec(IN, i1)]
            }),
        ),
        (
            "ip-options",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, with_ip_options(&u_out, &[1, 1, 1, 0])),
                    rec(IN, with_ip_options(&u_in, &[0x94, 4, 0, 0])),
                    rec(
                        OUT,
                        with_ip_options(
                            &t_syn,
                            &[7, 39, 4, 0]
                                .iter()
                                .copied()
                                .chain([0; 36])
                                .collect::<Vec<u8>>(),
                        ),
                    ),
                ],
            ),
        ),
        (
            "bad-headers",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[14] = 0x44;
                        f
                    }),
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[17] = 200;
                        refix_ip(f)
                    }),
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[17] = 10;
                        refix_ip(f)
                    }),
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[24] ^= 0xff;
                        f
                    }),
                    rec(IN, {
                        let mut f = u_in.clone();
                        f[24] ^= 0xff;
                        f
                    }),
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[14] = 0x65;
                        f
                    }),
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[39] = 200;
                        f
                    }),
                ],
            ),
        ),
        (
            "truncated",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, u_out[..13].to_vec()),
                    rec(OUT, u_out[..20].to_vec()),
                    rec(OUT, u_out[..36].to_vec()),
                    rec(OUT, t_syn[..40].to_vec()),
                    rec(IN, e_rep[..30].to_vec()),
                    rec(OUT, vec![]),
                ],
            ),
        ),
        (
            "spoofed",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, udp([10, 9, 9, 9], 40000, SRV, 53, b"spoof")),
                    rec(IN, udp(H2, 53, PUB, 40000, b"spoof")),
                    rec(IN, udp(SRV, 53, H1, 40000, b"to-private")),
                ],
            ),
        ),
        (
            "two-prefixes",
            encode(
                apdf | cfg_bits::TWO_PREFIXES | cfg_bits::TWO_PUBLIC,
                0,
                &[
                    rec(OUT, udp([10, 1, 2, 3], 40000, SRV, 53, b"ten")),
                    rec(OUT, udp([10, 1, 2, 4], 40000, SRV, 53, b"ten")),
                ],
            ),
        ),
        (
            "ttl-expiring",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[22] = 1;
                        refix_ip(f)
                    }),
                    rec(IN, {
                        let mut f = u_in.clone();
                        f[22] = 1;
                        refix_ip(f)
                    }),
                ],
            ),
        ),
        (
            "mtu-too-big",
            encode(
                apdf | cfg_bits::MTU_576,
                0,
                &[
                    rec(OUT, {
                        let mut f = udp(H1, 40000, SRV, 53, &[1; 1000]);
                        f[20] = 0x40;
                        refix_ip(f)
                    }),
                    rec(OUT, udp(H1, 40000, SRV, 53, &[1; 1000])),
                    rec(IN, {
                        let mut f = udp(SRV, 53, PUB, 40000, &[2; 1000]);
                        f[20] = 0x40;
                        refix_ip(f)
                    }),
                ],
            ),
        ),
        (
            "non-ipv4",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[12] = 0x08;
                        f[13] = 0x06;
                        f
                    }),
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[12] = 0x86;
                        f[13] = 0xdd;
                        f
                    }),
                    rec(OUT, {
                        let mut f = u_out.clone();
                        f[12] = 0x81;
                        f[13] = 0x00;
                        f
                    }),
                    rec(OUT | rec_bits::FIX_CSUM, {
                        let mut f = u_out.clone();
                        f[23] = 47;
                        f
                    }),
                    rec(IN | rec_bits::FIX_CSUM, {
                        let mut f = u_in.clone();
                        f[23] = 47;
                        f
                    }),
                ],
            ),
        ),
        (
            "hairpin",
            encode(
                eif,
                0,
                &[
                    rec(OUT, udp(H2, 41000, SRV, 53, b"open")),
                    rec(OUT, udp(H1, 40000, PUB, 41000, b"hairpin")),
                ],
            ),
        ),
        (
            "to-gateway-and-inside",
            encode(
                apdf,
                0,
                &[
                    rec(OUT, udp(H1, 40000, GW_IN, 53, b"dns")),
                    rec(OUT, udp(H1, 40000, H2, 53, b"inside")),
                    rec(IN, udp(SRV, 53, PUB, 22, b"ssh")),
                ],
            ),
        ),
        (
            "ports-exhausted",
            encode(
                apdf | cfg_bits::FEW_PORTS,
                mode_bits::NO_PRIME,
                &(0..20u16)
                    .map(|i| rec(OUT, udp(H1, 5000 + i, SRV, 53, b"")))
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "table-full",
            encode(
                apdf,
                mode_bits::NO_PRIME,
                &(0..100u16)
                    .map(|i| rec(OUT, udp(H1, 5000 + i, SRV, 53, b"")))
                    .chain([rec(IN, udp(SRV, 53, PUB, 5000, b""))])
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "quotas",
            encode(
                apdf,
                mode_bits::QUOTAS | mode_bits::NO_PRIME,
                &(0..12u16)
                    .map(|i| rec(OUT, udp(H1, 5000 + i, SRV, 53, b"")))
                    .chain([rec(OUT, udp(H2, 5000, SRV, 53, b""))])
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "forwards",
            encode(
                apdf,
                mode_bits::FORWARDS,
                &[
                    rec(IN, tcp(SRV, 40000, PUB, 1030, SYN, b"")),
                    rec(OUT, tcp(H1, 22, SRV, 40000, SYN | ACK, b"")),
                    rec(IN, udp(SRV, 53, PUB, 40006, b"q")),
                    rec(
                        IN | STEP_LONG | rec_bits::EXPIRE,
                        udp(SRV2, 53, PUB, 40006, b"q"),
                    ),
                ],
            ),
        ),
        (
            "blocks",
            encode(
                apdf,
                mode_bits::BLOCKS | mode_bits::FORWARDS | mode_bits::NO_PRIME,
                &(0..10u16)
                    .map(|i| rec(OUT, udp(H1, 5000 + i, SRV, 53, b"")))
                    .chain([
                        rec(OUT, tcp(H2, 6000, SRV, 80, SYN, b"")),
                        rec(IN, udp(SRV, 53, PUB, 1024, b"r")),
                        rec(
                            OUT | STEP_LONG | rec_bits::EXPIRE,
                            udp(H2, 6001, SRV, 53, b""),
                        ),
                    ])
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "noise",
            encode(
                apdf,
                0,
                &[rec(
                    OUT,
                    (0..200u32)
                        .map(|i| (i.wrapping_mul(2654435761u32) >> 13) as u8)
                        .collect(),
                )],
            ),
        ),
    ];
    // Each real frame on its own too, both directions: small seeds the fuzzer mutates well.
    let singles: [(&'static str, &Vec<u8>); 6] = [
        ("single-udp", &u_out),
        ("single-udp-in", &u_in),
        ("single-syn", &t_syn),
        ("single-synack-in", &t_synack),
        ("single-echo", &e_req),
        ("single-echo-reply-in", &e_rep),
    ];
    for (name, f) in singles {
        let ctrl = if name.ends_with("-in") { IN } else { OUT };
        v.push((
            name,
            encode(apdf, 0, &[rec(ctrl | rec_bits::FIX_CSUM, f.clone())]),
        ));
    }
    v
}

fn wire_views_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let ctl = |a: u8, b: u8, c: u8, d: u8, f: Vec<u8>| {
        let mut v = vec![a, b, c, d];
        v.extend(f);
        v
    };
    let u = udp(H1, 40000, SRV, 53, b"query");
    let t = tcp(H1, 51000, SRV, 80, ACK, &[9; 1000]);
    let vlan = {
        let mut f = t[..12].to_vec();
        f.extend_from_slice(&[0x81, 0, 0, 5]);
        f.extend_from_slice(&t[12..]);
        f
    };
    let partial = {
        let mut f = t.clone();
        let ph = rnat::wire::checksum::pseudo_header(H1, SRV, 6, (f.len() - 34) as u16);
        f[50..52].copy_from_slice(&rnat::wire::checksum::fold(ph).to_be_bytes());
        f
    };
    let arp = {
        let mut f = u[..14].to_vec();
        f[12] = 8;
        f[13] = 6;
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[
            2, 0, 0, 0, 0, 2, 192, 168, 1, 2, 0, 0, 0, 0, 0, 0, 192, 168, 1, 1,
        ]);
        f
    };
    vec![
        ("udp", ctl(0, 0xdc, 0x05, 10, u.clone())),
        ("udp-truncated", ctl(0, 0, 0, 0, u[..30].to_vec())),
        ("tcp-segment", ctl(14, 0x40, 0x02, 64, t.clone())),
        ("tcp-segment-mss8", ctl(14, 28, 0, 1, t[..200].to_vec())),
        ("tcp-vlan", ctl(18, 0x00, 0x02, 100, vlan)),
        ("tcp-partial", ctl(34, 34, 16, 180, partial)),
        (
            "tcp-options",
            ctl(34, 0, 0, 0, {
                let mut f = tcp(H1, 1, SRV, 2, SYN, &[2, 4, 5, 0xb4]);
                f[46] = 0x60;
                f
            }),
        ),
        (
            "tcp-doff-past-end",
            ctl(34, 0, 0, 0, {
                let mut f = t[..60].to_vec();
                f[46] = 0xf0;
                f
            }),
        ),
        (
            "icmp-echo",
            ctl(34, 0x40, 0, 0, echo_request(H1, SRV, 1, 1)),
        ),
        (
            "icmp-error",
            ctl(
                34,
                0x40,
                0,
                0,
                icmp_error(SRV, PUB, 3, 3, [0; 4], &quote_of(&u, 8)),
            ),
        ),
        ("arp", ctl(14, 0, 0, 0, arp)),
        (
            "ip-options",
            ctl(14, 0x30, 0x02, 0, with_ip_options(&u, &[1, 1, 1, 0])),
        ),
        (
            "ihl-4",
            ctl(14, 0, 0, 0, {
                let mut f = u.clone();
                f[14] = 0x44;
                f
            }),
        ),
        (
            "ihl-15",
            ctl(14, 0, 0, 0, {
                let mut f = u.clone();
                f[14] = 0x4f;
                f
            }),
        ),
        (
            "total-len-lies",
            ctl(14, 0, 0, 0, {
                let mut f = u.clone();
                f[16] = 0xff;
                f
            }),
        ),
        (
            "total-len-short",
            ctl(14, 0, 0, 0, {
                let mut f = u.clone();
                f[17] = 21;
                f
            }),
        ),
        (
            "udp-len-lies",
            ctl(34, 0, 0, 0, {
                let mut f = u.clone();
                f[38] = 0xff;
                f
            }),
        ),
        (
            "fragment-df",
            ctl(0, 0x40, 0x02, 0, {
                let mut f = u.clone();
                f[20] = 0x40;
                f
            }),
        ),
        (
            "fragment-mf",
            ctl(
                0,
                100,
                0,
                0,
                with_frag(&udp(H1, 1, SRV, 2, &[3; 1200]), 0x2001),
            ),
        ),
        (
            "fragment-tiny-mtu",
            ctl(0, 28, 0, 0, udp(H1, 1, SRV, 2, &[3; 300])),
        ),
        (
            "padding",
            ctl(0, 0, 0, 0, {
                let mut f = u.clone();
                f.extend_from_slice(&[0; 20]);
                f
            }),
        ),
        ("empty", vec![0, 0, 0, 0]),
        ("short", vec![1, 2]),
        (
            "ipv6",
            ctl(0, 0, 0, 0, {
                let mut f = u.clone();
                f[12] = 0x86;
                f[13] = 0xdd;
                f[14] = 0x60;
                f
            }),
        ),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus (RNAT_WRITE_CORPUS=1)"]
fn generate_fuzz_corpus() {
    if std::env::var_os("RNAT_WRITE_CORPUS").is_none() {
        eprintln!("set RNAT_WRITE_CORPUS=1 to rewrite fuzz/corpus");
        return;
    }
    for (target, seeds) in [
        ("packet_path", packet_path_seeds()),
        ("wire_views", wire_views_seeds()),
    ] {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}

// ------------------------------------------------------------------ stable fuzz loop

/// xorshift64*: deterministic, seedable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// libFuzzer-like mutations: bit flips, interesting bytes, inserts, deletes, splices.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let n = data.len();
        match rng.below(7) {
            0 if n > 0 => {
                let i = rng.below(n);
                data[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                data[i] = [0, 1, 0x7f, 0x80, 0xff, 0x40, 0x45, 0x11][rng.below(8)];
            }
            2 if n > 0 => {
                let i = rng.below(n);
                data[i] = rng.next() as u8;
            }
            3 => {
                let i = rng.below(n + 1);
                let k = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..k).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            4 if n > 2 => {
                let i = rng.below(n);
                let k = 1 + rng.below((n - i).min(32));
                data.drain(i..i + k);
            }
            5 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                let i = rng.below(n + 1);
                let j = rng.below(other.len() + 1);
                data.truncate(i);
                data.extend_from_slice(&other[j..]);
            }
            _ if n > 1 => {
                let i = rng.below(n - 1);
                let v = (rng.next() as u16).to_be_bytes();
                data[i..i + 2].copy_from_slice(&v);
            }
            _ => data.push(rng.next() as u8),
        }
    }
    data.truncate(8192);
}

#[test]
#[ignore = "bounded stable fuzz loop (RNAT_FUZZ_ITERS, RNAT_FUZZ_SEED); run with --release"]
fn stable_fuzz_loop() {
    let iters: u64 = std::env::var("RNAT_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("RNAT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng(seed | 1);
    for (target, run) in [
        (
            "packet_path",
            (|d: &[u8]| drop(fuzz_harness::packet_path(d))) as fn(&[u8]),
        ),
        ("wire_views", fuzz_harness::wire_views as fn(&[u8])),
    ] {
        let pool: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, d)| d).collect();
        let start = std::time::Instant::now();
        for i in 0..iters {
            let mut d = pool[rng.below(pool.len())].clone();
            mutate(&mut rng, &mut d, &pool);
            if std::panic::catch_unwind(|| run(&d)).is_err() {
                let p = std::env::temp_dir().join(format!("rnat-crash-{target}-{seed}-{i}"));
                fs::write(&p, &d).unwrap();
                panic!(
                    "{target}: crash at iteration {i}, input saved to {}",
                    p.display()
                );
            }
        }
        eprintln!(
            "{target}: {iters} iterations in {:.1} s, no crash",
            start.elapsed().as_secs_f64()
        );
    }
}
