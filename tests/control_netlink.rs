//! Discovery and watcher tests, each in its own network namespace (see `control_common`).

mod control_common;

use control_common::{in_netns, sh};
use rnat::control::netlink::{self, ControlError, NeighState, NextHop, OperState, Watcher};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const VETH: &str = r#"
ip -n "$NS" link add v0 type veth peer name v1
ip -n "$NS" link set v0 address 02:00:00:00:00:01 mtu 1400 up
ip -n "$NS" link set v1 address 02:00:00:00:00:02 up
ip -n "$NS" addr add 10.0.0.1/24 dev v0
ip -n "$NS" addr add 10.0.0.2/24 dev v0
ip -n "$NS" link add d0 type veth peer name d1
"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ifindex(name: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn discovery_finds_veth() {
    in_netns("discovery_finds_veth", VETH, false, || {
        rt().block_on(async {
            let h = netlink::connect().unwrap();
            let snap = netlink::discover(&h).await.unwrap();
            let (v0, a) = snap.ipv4_interface("v0").unwrap();
            assert_eq!(v0.index, ifindex("v0"));
            assert_eq!(v0.mac, Some([2, 0, 0, 0, 0, 1]));
            assert_eq!(v0.mtu, 1400);
            assert!(v0.admin_up);
            assert_eq!(v0.oper, OperState::Up);
            assert!(v0.is_running());
            assert_eq!(
                (a.addr, a.prefix_len, a.secondary),
                (Ipv4Addr::new(10, 0, 0, 1), 24, false)
            );
            assert_eq!(a.prefix().to_string_lossy(), "10.0.0.0/24");
            assert_eq!(v0.addrs.len(), 2);
            assert_eq!(v0.addrs[1].addr, Ipv4Addr::new(10, 0, 0, 2));
            assert!(v0.addrs[1].secondary);
            assert_eq!(snap.interface_by_index(v0.index).unwrap().name, "v0");
            assert!(snap.local_addrs().contains(&Ipv4Addr::new(10, 0, 0, 2)));

            let d0 = snap.interface("d0").unwrap();
            assert!(!d0.admin_up);
            assert!(!d0.is_running());

            let e = snap.interface("nope0").unwrap_err();
            assert!(matches!(e, ControlError::NoSuchInterface(_)));
            assert_eq!(e.to_string(), "interface nope0 does not exist");
            let e = snap.ipv4_interface("v1").unwrap_err();
            assert_eq!(e.to_string(), "interface v1 has no IPv4 address");
        });
    });
}

trait Show {
    fn to_string_lossy(&self) -> String;
}
impl Show for rnat::nat::config::Prefix {
    fn to_string_lossy(&self) -> String {
        format!("{}/{}", self.addr, self.len)
    }
}

#[test]
fn route_lookup_picks_next_hop() {
    let setup = format!(
        "{VETH}{}",
        r#"
ip -n "$NS" addr add 192.168.1.1/24 dev v1
ip -n "$NS" route add default via 10.0.0.254
ip -n "$NS" route add 198.51.100.0/24 via 192.168.1.254
ip -n "$NS" route add 198.51.100.128/25 via 10.0.0.253 metric 20
ip -n "$NS" route add 198.51.100.128/25 via 192.168.1.253 metric 10
ip -n "$NS" route add blackhole 10.9.0.0/16
"#
    );
    in_netns("route_lookup_picks_next_hop", &setup, false, || {
        rt().block_on(async {
            let (v0, v1) = (ifindex("v0"), ifindex("v1"));
            let h = netlink::connect().unwrap();
            let snap = netlink::discover(&h).await.unwrap();
            let t = &snap.routes;
            let via = |i, g: [u8; 4]| {
                Some(NextHop {
                    ifindex: i,
                    gateway: Some(Ipv4Addr::from(g)),
                })
            };
            let cases = [
                (Ipv4Addr::new(203, 0, 113, 9), via(v0, [10, 0, 0, 254])),
                (Ipv4Addr::new(198, 51, 100, 7), via(v1, [192, 168, 1, 254])),
                (
                    Ipv4Addr::new(198, 51, 100, 200),
                    via(v1, [192, 168, 1, 253]),
                ),
                (
                    Ipv4Addr::new(192, 168, 1, 20),
                    Some(NextHop {
                        ifindex: v1,
                        gateway: None,
                    }),
                ),
                (
                    Ipv4Addr::new(10, 0, 0, 77),
                    Some(NextHop {
                        ifindex: v0,
                        gateway: None,
                    }),
                ),
                (Ipv4Addr::new(10, 9, 1, 1), None),
            ];
            for (dst, want) in cases {
                assert_eq!(t.lookup(dst), want, "lookup {dst}");
                // The kernel agrees.
                match want {
                    Some(nh) => assert_eq!(
                        netlink::route_get(&h, dst).await.unwrap(),
                        nh,
                        "route_get {dst}"
                    ),
                    None => assert!(
                        netlink::route_get(&h, dst).await.is_err(),
                        "route_get {dst}"
                    ),
                }
            }
            let (nh, mac) = snap.resolve(Ipv4Addr::new(203, 0, 113, 9)).unwrap();
            assert_eq!(
                nh.neighbour_for(Ipv4Addr::new(203, 0, 113, 9)),
                Ipv4Addr::new(10, 0, 0, 254)
            );
            assert_eq!(mac, None);
        });
    });
}

#[test]
fn neighbour_table_shows_entry() {
    let setup = format!(
        "{VETH}{}",
        r#"
ip -n "$NS" neigh add 10.0.0.99 lladdr 02:00:00:00:00:99 dev v0 nud permanent
ip -n "$NS" neigh add 10.0.0.98 lladdr 02:00:00:00:00:98 dev v0 nud stale
"#
    );
    in_netns("neighbour_table_shows_entry", &setup, false, || {
        rt().block_on(async {
            let v0 = ifindex("v0");
            let h = netlink::connect().unwrap();
            let snap = netlink::discover(&h).await.unwrap();
            let n = snap
                .neighbour(v0, Ipv4Addr::new(10, 0, 0, 99))
                .expect("entry");
            assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 0x99]));
            assert_eq!(n.state, NeighState::Permanent);
            let n = snap
                .neighbour(v0, Ipv4Addr::new(10, 0, 0, 98))
                .expect("entry");
            assert_eq!(n.state, NeighState::Stale);
            let (nh, mac) = snap.resolve(Ipv4Addr::new(10, 0, 0, 99)).unwrap();
            assert_eq!(
                nh,
                NextHop {
                    ifindex: v0,
                    gateway: None
                }
            );
            assert_eq!(mac, Some([2, 0, 0, 0, 0, 0x99]));
        });
    });
}

#[test]
fn watcher_sees_changes() {
    in_netns("watcher_sees_changes", VETH, false, || {
        rt().block_on(async {
            let w = Watcher::start().await.unwrap();
            let mut reader = w.reader();
            let mut rx = w.subscribe();
            let g0 = reader.get().generation;
            assert!(reader.get().interface("v0").is_ok());
            let want = Ipv4Addr::new(10, 0, 5, 1);
            assert!(!reader.get().local_addrs().contains(&want));

            sh("ip addr add 10.0.5.1/24 dev v0");
            let t0 = Instant::now();
            while !reader.get().local_addrs().contains(&want) {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "watcher did not see the new address"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(reader.get().generation > g0);
            eprintln!("address seen after {:?}", t0.elapsed());
            assert!(rx.has_changed().unwrap());
            assert!(rx.borrow_and_update().local_addrs().contains(&want));

            // Routes, links and neighbours too.
            sh(
                "ip route add 198.51.100.0/24 via 10.0.5.254 && ip link set v0 mtu 1300 && \
                ip neigh add 10.0.5.7 lladdr 02:00:00:00:05:07 dev v0",
            );
            let v0 = ifindex("v0");
            let t0 = Instant::now();
            loop {
                let s = reader.get();
                let ok = s
                    .routes
                    .lookup(Ipv4Addr::new(198, 51, 100, 1))
                    .and_then(|n| n.gateway)
                    == Some(Ipv4Addr::new(10, 0, 5, 254))
                    && s.interface("v0").unwrap().mtu == 1300
                    && s.neighbour(v0, Ipv4Addr::new(10, 0, 5, 7)).is_some();
                if ok {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "watcher missed a change: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    });
}
