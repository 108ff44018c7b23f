//! Discovery over rtnetlink, and a watcher that keeps an immutable snapshot up to date.
//!
//! [`discover`] dumps, in one go, every link (ifindex, name, MAC, MTU, operational state), every IPv4
//! address (primary addresses before secondary ones), the IPv4 routes of the main table (as a
//! [`RouteTable`] with longest-prefix match done here, so the datapath never asks the kernel per
//! destination) and the IPv4 neighbour (ARP) table. The result is a [`Snapshot`]: plain data, never
//! mutated once built.
//!
//! [`Watcher::start`] subscribes to the `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV4_ROUTE`
//! and `RTNLGRP_NEIGH` multicast groups *before* the first dump (so no change is lost between the
//! two), then re-dumps after every burst of notifications (coalesced for [`DEBOUNCE`]) and every
//! [`RESYNC`] as a safety net (a multicast socket that overflows drops notifications), and publishes
//! the new snapshot when it differs from the previous one.
//!
//! Publication: a [`SnapshotCell`] holds the current `Arc<Snapshot>` behind a `parking_lot::Mutex`
//! and a generation counter in an `AtomicU64`. A packet worker keeps a [`SnapshotReader`]: its
//! [`SnapshotReader::get`] costs one atomic load when nothing changed and takes the mutex only once per
//! change, to clone the `Arc`. This needs no new dependency (arc-swap would save the mutex on the rare
//! change path only) and the workers never contend with each other on the fast path.
//! Async control-plane consumers use [`Watcher::subscribe`] (a `tokio::sync::watch`) instead.
//!
//! For a one-off question the kernel can also be asked directly: [`route_get`] sends an
//! `RTM_GETROUTE` for one destination (it honours policy routing, which [`RouteTable`] does not: the
//! table only models the main table).

use crate::nat::config::Prefix;
use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use parking_lot::Mutex;
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long the watcher waits for more notifications before it re-dumps.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// The watcher re-dumps at least this often, even without notifications.
pub const RESYNC: Duration = Duration::from_secs(30);

/// What can go wrong in discovery.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("interface {0} has no IPv4 address")]
    NoIpv4Address(String),
    #[error("interface {0} has no Ethernet (MAC) address")]
    NoMacAddress(String),
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink request failed: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("no route to {0}")]
    NoRoute(Ipv4Addr),
}

/// Operational state of a link (`IF_OPER_*`, RFC 2863).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
    Other(u8),
}

impl From<State> for OperState {
    fn from(s: State) -> Self {
        match s {
            State::Unknown => OperState::Unknown,
            State::NotPresent => OperState::NotPresent,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::Up => OperState::Up,
            other => OperState::Other(u8::from(other)),
        }
    }
}

/// One IPv4 address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub broadcast: Option<Ipv4Addr>,
    /// A secondary address (`IFA_F_SECONDARY`); primaries come first in [`Interface::addrs`].
    pub secondary: bool,
}

impl IfAddr {
    /// The connected prefix (host bits cleared).
    pub fn prefix(&self) -> Prefix {
        let p = Prefix {
            addr: self.addr,
            len: self.prefix_len,
        };
        Prefix {
            addr: Ipv4Addr::from(u32::from(self.addr) & p.mask()),
            len: self.prefix_len,
        }
    }
}

/// One link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    /// `None` for links without a 6-byte hardware address (loopback reports zeros, tunnels none).
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub oper: OperState,
    /// `IFF_UP`: administratively up.
    pub admin_up: bool,
    /// `IFF_LOWER_UP`: carrier.
    pub lower_up: bool,
    /// IPv4 addresses, primary addresses first.
    pub addrs: Vec<IfAddr>,
}

impl Interface {
    /// The first primary IPv4 address.
    pub fn primary_ipv4(&self) -> Option<&IfAddr> {
        self.addrs.first()
    }
    /// Whether the link can carry traffic (operationally up, or `unknown` with carrier as veth and
    /// tun devices report before their peer is up).
    pub fn is_running(&self) -> bool {
        self.admin_up
            && (self.oper == OperState::Up || (self.oper == OperState::Unknown && self.lower_up))
    }
}

/// Where a packet to some destination goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    /// The router to send to; `None`: the destination is on-link (ARP for the destination itself).
    pub gateway: Option<Ipv4Addr>,
}

impl NextHop {
    /// The address to resolve with ARP for destination `dst`.
    pub fn neighbour_for(&self, dst: Ipv4Addr) -> Ipv4Addr {
        self.gateway.unwrap_or(dst)
    }
}

/// One route of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Prefix,
    pub metric: u32,
    /// `None` for blackhole / unreachable / prohibit routes: they stop the lookup with no result.
    pub next_hop: Option<NextHop>,
}

/// The IPv4 unicast routes of the main table, with longest-prefix match.
///
/// Routes are grouped by prefix length into hash maps (the best metric wins per prefix); a lookup
/// probes the lengths present, longest first: at most 33 hash probes, usually a handful.
///
/// Besides the whole table, it keeps one such table per outgoing interface (that interface's
/// routes plus the reject routes) for [`RouteTable::lookup_via`]: rnat routes a translated packet
/// only among the routes of the interface it must leave by (RFC 4787 REQ-7), since a remote may
/// sit in a prefix the host routes inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// (prefix length, network -> best route), longest first.
    by_len: ByLen,
    /// The same per outgoing interface: (ifindex, its routes and the reject routes).
    by_if: Vec<(u32, ByLen)>,
}

type ByLen = Vec<(u8, HashMap<u32, Route>)>;

/// Groups routes (sorted longest prefix first, then by network and metric) by prefix length.
fn group<'a>(routes: impl Iterator<Item = &'a Route>) -> ByLen {
    let mut by_len: ByLen = Vec::new();
    for r in routes {
        let net = u32::from(r.dst.addr) & r.dst.mask();
        if by_len.last().is_none_or(|(l, _)| *l != r.dst.len) {
            by_len.push((r.dst.len, HashMap::new()));
        }
        let map = &mut by_len.last_mut().expect("just pushed").1;
        map.entry(net).or_insert(*r); // sorted by metric: the first one is the best
    }
    by_len
}

/// Longest-prefix match in a grouped table.
fn probe(by_len: &ByLen, dst: Ipv4Addr) -> Option<&Route> {
    let d = u32::from(dst);
    by_len.iter().find_map(|(len, map)| {
        let mask = if *len == 0 {
            0
        } else {
            u32::MAX << (32 - *len as u32)
        };
        map.get(&(d & mask))
    })
}

impl RouteTable {
    /// Builds a table from routes in any order.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.dst.len),
                u32::from(r.dst.addr),
                r.metric,
            )
        });
        let by_len = group(routes.iter());
        let mut ifs: Vec<u32> = routes
            .iter()
            .filter_map(|r| r.next_hop.map(|n| n.ifindex))
            .collect();
        ifs.sort_unstable();
        ifs.dedup();
        let by_if = ifs
            .into_iter()
            .map(|i| {
                let mine = routes
                    .iter()
                    .filter(|r| r.next_hop.is_none_or(|n| n.ifindex == i));
                (i, group(mine))
            })
            .collect();
        RouteTable {
            routes,
            by_len,
            by_if,
        }
    }

    /// Longest-prefix match for `dst`; `None` if no route or the best route rejects (blackhole,
    /// unreachable, prohibit).
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<NextHop> {
        self.lookup_route(dst).and_then(|r| r.next_hop)
    }

    /// The matching route itself.
    pub fn lookup_route(&self, dst: Ipv4Addr) -> Option<&Route> {
        probe(&self.by_len, dst)
    }

    /// Longest-prefix match for `dst` among the routes that leave through interface `ifindex`
    /// (and the reject routes, which still stop a lookup where they are more specific): where a
    /// packet to `dst` would go if it had to leave by that interface. `None` if that interface
    /// has no route to `dst`, or a reject route wins.
    pub fn lookup_via(&self, dst: Ipv4Addr, ifindex: u32) -> Option<NextHop> {
        let (_, t) = self.by_if.iter().find(|(i, _)| *i == ifindex)?;
        probe(t, dst).and_then(|r| r.next_hop)
    }

    /// All routes, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// ARP cache entry state (`NUD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    Incomplete,
    Reachable,
    Stale,
    Delay,
    Probe,
    Failed,
    Noarp,
    Permanent,
    None,
    Other(u16),
}

impl NeighState {
    /// Whether the MAC may be used to send (like the kernel, which also sends to stale entries).
    pub fn is_usable(&self) -> bool {
        matches!(
            self,
            NeighState::Reachable
                | NeighState::Stale
                | NeighState::Delay
                | NeighState::Probe
                | NeighState::Permanent
                | NeighState::Noarp
        )
    }
}

impl From<NeighbourState> for NeighState {
    fn from(s: NeighbourState) -> Self {
        match s {
            NeighbourState::Incomplete => NeighState::Incomplete,
            NeighbourState::Reachable => NeighState::Reachable,
            NeighbourState::Stale => NeighState::Stale,
            NeighbourState::Delay => NeighState::Delay,
            NeighbourState::Probe => NeighState::Probe,
            NeighbourState::Failed => NeighState::Failed,
            NeighbourState::Noarp => NeighState::Noarp,
            NeighbourState::Permanent => NeighState::Permanent,
            NeighbourState::None => NeighState::None,
            NeighbourState::Other(v) => NeighState::Other(v),
            _ => NeighState::Other(u16::from(s)),
        }
    }
}

/// One IPv4 neighbour (ARP) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    /// `None` while unresolved (incomplete, failed).
    pub mac: Option<[u8; 6]>,
    pub state: NeighState,
}

/// Everything discovery learned, at one point in time. Immutable once published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bumped by each publication of a [`SnapshotCell`] (0 for a snapshot never published).
    pub generation: u64,
    /// All links, by ifindex.
    pub interfaces: Vec<Interface>,
    pub routes: RouteTable,
    /// IPv4 neighbours, by (ifindex, address).
    pub neighbours: HashMap<(u32, Ipv4Addr), Neighbour>,
}

impl Snapshot {
    /// The link called `name`.
    pub fn interface(&self, name: &str) -> Result<&Interface, ControlError> {
        self.interfaces
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| ControlError::NoSuchInterface(name.to_string()))
    }

    /// The link called `name` and its primary IPv4 address: the usual start-up check.
    pub fn ipv4_interface(&self, name: &str) -> Result<(&Interface, &IfAddr), ControlError> {
        let i = self.interface(name)?;
        let a = i
            .primary_ipv4()
            .ok_or_else(|| ControlError::NoIpv4Address(name.to_string()))?;
        Ok((i, a))
    }

    /// The link with this ifindex.
    pub fn interface_by_index(&self, index: u32) -> Option<&Interface> {
        self.interfaces
            .binary_search_by_key(&index, |i| i.index)
            .ok()
            .map(|n| &self.interfaces[n])
    }

    /// The ARP entry for `ip` on link `ifindex`.
    pub fn neighbour(&self, ifindex: u32, ip: Ipv4Addr) -> Option<&Neighbour> {
        self.neighbours.get(&(ifindex, ip))
    }

    /// Route lookup plus ARP: the next hop for `dst` and, if the cache holds a usable entry, its MAC.
    pub fn resolve(&self, dst: Ipv4Addr) -> Option<(NextHop, Option<[u8; 6]>)> {
        let nh = self.routes.lookup(dst)?;
        let mac = self
            .neighbour(nh.ifindex, nh.neighbour_for(dst))
            .filter(|n| n.state.is_usable())
            .and_then(|n| n.mac);
        Some((nh, mac))
    }

    /// Every IPv4 address of the host, plus each address's directed broadcast: the destinations
    /// that belong to the gateway itself.
    pub fn local_addrs(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = Vec::new();
        for i in &self.interfaces {
            for a in &i.addrs {
                v.push(a.addr);
                v.extend(a.broadcast);
            }
        }
        v.sort();
        v.dedup();
        v
    }
}

/// Opens an rtnetlink socket and spawns its connection task on the current tokio runtime.
pub fn connect() -> Result<Handle, ControlError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(ControlError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn mac6(bytes: &[u8]) -> Option<[u8; 6]> {
    <[u8; 6]>::try_from(bytes).ok().filter(|m| m != &[0; 6])
}

fn parse_link(m: &LinkMessage) -> Interface {
    let mut i = Interface {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        oper: OperState::Unknown,
        admin_up: m.header.flags.contains(LinkFlags::Up),
        lower_up: m.header.flags.contains(LinkFlags::LowerUp),
        addrs: Vec::new(),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => i.name = n.clone(),
            LinkAttribute::Address(b) => i.mac = mac6(b),
            LinkAttribute::Mtu(v) => i.mtu = *v,
            LinkAttribute::OperState(s) => i.oper = (*s).into(),
            _ => {}
        }
    }
    i
}

fn parse_addr(m: &AddressMessage) -> Option<(u32, IfAddr)> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    let (mut local, mut address, mut broadcast) = (None, None, None);
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(v)) => local = Some(*v),
            AddressAttribute::Address(IpAddr::V4(v)) => address = Some(*v),
            AddressAttribute::Broadcast(v) => broadcast = Some(*v),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
    let addr = local.or(address)?;
    Some((
        m.header.index,
        IfAddr {
            addr,
            prefix_len: m.header.prefix_len,
            broadcast,
            secondary: m.header.flags.contains(AddressHeaderFlags::Secondary),
        },
    ))
}

fn parse_route(m: &RouteMessage) -> Option<Route> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut table = m.header.table as u32;
    let (mut dst, mut gateway, mut oif, mut metric) = (Ipv4Addr::UNSPECIFIED, None, None, 0);
    let mut multipath = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::MultiPath(hops) => multipath = hops.first().cloned(),
            _ => {}
        }
    }
    if table != RouteHeader::RT_TABLE_MAIN as u32 {
        return None;
    }
    // Multipath: the first hop only (no ECMP hashing here).
    if let (None, Some(h)) = (oif, multipath) {
        oif = Some(h.interface_index);
        gateway = h.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
            _ => None,
        });
    }
    let dst = Prefix {
        addr: dst,
        len: m.header.destination_prefix_length,
    };
    let next_hop = match m.header.kind {
        RouteType::Unicast => Some(NextHop {
            ifindex: oif?,
            gateway,
        }),
        RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit => None,
        _ => return None, // local, broadcast, multicast, ...: not in the main table anyway
    };
    Some(Route {
        dst,
        metric,
        next_hop,
    })
}

fn parse_neighbour(m: &NeighbourMessage) -> Option<Neighbour> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
            NeighbourAttribute::LinkLayerAddress(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex: m.header.ifindex,
        ip: ip?,
        mac,
        state: m.header.state.into(),
    })
}

/// Dumps all links.
pub async fn dump_links(handle: &Handle) -> Result<Vec<Interface>, ControlError> {
    let msgs: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    Ok(msgs.iter().map(parse_link).collect())
}

/// Dumps all IPv4 addresses as (ifindex, address), primaries first per interface.
pub async fn dump_addrs(handle: &Handle) -> Result<Vec<(u32, IfAddr)>, ControlError> {
    let mut req = handle.address().get();
    req.message_mut().header.family = AddressFamily::Inet;
    let msgs: Vec<AddressMessage> = req.execute().try_collect().await?;
    let mut v: Vec<_> = msgs.iter().filter_map(parse_addr).collect();
    v.sort_by_key(|(i, a)| (*i, a.secondary)); // stable: keeps the kernel's order otherwise
    Ok(v)
}

/// Dumps the IPv4 main routing table.
pub async fn dump_routes(handle: &Handle) -> Result<RouteTable, ControlError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let msgs: Vec<RouteMessage> = handle.route().get(msg).execute().try_collect().await?;
    Ok(RouteTable::new(
        msgs.iter().filter_map(parse_route).collect(),
    ))
}

/// Dumps the IPv4 neighbour (ARP) table.
pub async fn dump_neighbours(handle: &Handle) -> Result<Vec<Neighbour>, ControlError> {
    let msgs: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await?;
    Ok(msgs.iter().filter_map(parse_neighbour).collect())
}

/// Dumps links, addresses, routes and neighbours into a [`Snapshot`] (generation 0).
pub async fn discover(handle: &Handle) -> Result<Snapshot, ControlError> {
    let mut interfaces = dump_links(handle).await?;
    interfaces.sort_by_key(|i| i.index);
    for (index, addr) in dump_addrs(handle).await? {
        if let Ok(n) = interfaces.binary_search_by_key(&index, |i| i.index) {
            interfaces[n].addrs.push(addr);
        }
    }
    let routes = dump_routes(handle).await?;
    let neighbours = dump_neighbours(handle)
        .await?
        .into_iter()
        .map(|n| ((n.ifindex, n.ip), n))
        .collect();
    Ok(Snapshot {
        generation: 0,
        interfaces,
        routes,
        neighbours,
    })
}

/// Asks the kernel (`RTM_GETROUTE`, like `ip route get`) where a packet to `dst` goes. Honours
/// policy routing; `Err(NoRoute)` when the kernel has none.
pub async fn route_get(handle: &Handle, dst: Ipv4Addr) -> Result<NextHop, ControlError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .build();
    let mut stream = handle.route().get(msg).execute();
    let reply = match stream.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(ControlError::NoRoute(dst)),
        Err(rtnetlink::Error::NetlinkError(e)) if e.code.is_some() => {
            // ENETUNREACH and friends.
            return Err(ControlError::NoRoute(dst));
        }
        Err(e) => return Err(e.into()),
    };
    let mut oif = None;
    let mut gateway = None;
    for a in &reply.attributes {
        match a {
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            _ => {}
        }
    }
    match (reply.header.kind, oif) {
        (RouteType::Unicast, Some(ifindex)) => Ok(NextHop { ifindex, gateway }),
        _ => Err(ControlError::NoRoute(dst)),
    }
}

/// The current snapshot plus a generation counter, shared by the watcher and the workers.
#[derive(Debug)]
pub struct SnapshotCell {
    generation: AtomicU64,
    current: Mutex<Arc<Snapshot>>,
}

impl SnapshotCell {
    /// A cell holding `snap` as generation 1.
    pub fn new(mut snap: Snapshot) -> Self {
        snap.generation = 1;
        SnapshotCell {
            generation: AtomicU64::new(1),
            current: Mutex::new(Arc::new(snap)),
        }
    }

    /// Publishes `snap` as the next generation; returns that generation.
    pub fn publish(&self, mut snap: Snapshot) -> u64 {
        let mut cur = self.current.lock();
        snap.generation = cur.generation + 1;
        let g = snap.generation;
        *cur = Arc::new(snap);
        self.generation.store(g, Ordering::Release);
        g
    }

    /// The current snapshot (takes the mutex: not for per-packet use, see [`SnapshotReader`]).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.lock().clone()
    }

    /// The generation of the current snapshot (one atomic load).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// A worker's cached view of a [`SnapshotCell`]: one atomic load per [`get`](Self::get), the mutex
/// only when a new snapshot was published.
#[derive(Debug, Clone)]
pub struct SnapshotReader {
    cell: Arc<SnapshotCell>,
    cached: Arc<Snapshot>,
}

impl SnapshotReader {
    pub fn new(cell: Arc<SnapshotCell>) -> Self {
        let cached = cell.load();
        SnapshotReader { cell, cached }
    }

    /// The newest snapshot. Call it once per batch of frames and keep the reference for the batch.
    #[inline]
    pub fn get(&mut self) -> &Arc<Snapshot> {
        if self.cell.generation.load(Ordering::Acquire) != self.cached.generation {
            self.cached = self.cell.load();
        }
        &self.cached
    }

    /// Whether a newer snapshot than the cached one was published.
    pub fn changed(&self) -> bool {
        self.cell.generation.load(Ordering::Acquire) != self.cached.generation
    }
}

/// The background task that keeps a [`SnapshotCell`] current. Stops when dropped.
pub struct Watcher {
    cell: Arc<SnapshotCell>,
    tx: tokio::sync::watch::Sender<Arc<Snapshot>>,
    task: tokio::task::JoinHandle<()>,
    handle: Handle,
}

impl Watcher {
    /// Subscribes to link, IPv4 address, IPv4 route and neighbour changes, takes the first snapshot
    /// and spawns the watch task on the current tokio runtime. Fails if the first dump fails.
    pub async fn start() -> Result<Watcher, ControlError> {
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Neigh,
        ];
        let (conn, handle, mut events) =
            rtnetlink::new_multicast_connection(&groups).map_err(ControlError::Socket)?;
        let conn_task = tokio::spawn(conn);
        // Subscribed first, then dumped: a change between the two shows up as an event.
        let first = match discover(&handle).await {
            Ok(s) => s,
            Err(e) => {
                conn_task.abort();
                return Err(e);
            }
        };
        let cell = Arc::new(SnapshotCell::new(first));
        let (tx, _) = tokio::sync::watch::channel(cell.load());
        let (cell2, tx2, handle2) = (cell.clone(), tx.clone(), handle.clone());
        let task = tokio::spawn(async move {
            use futures::StreamExt;
            loop {
                let ev = tokio::time::timeout(RESYNC, events.next()).await;
                if let Ok(None) = ev {
                    tracing::error!(
                        "netlink notification socket closed; snapshot no longer updated"
                    );
                    break;
                }
                // Coalesce a burst of notifications (an interface going down sends dozens).
                let deadline = tokio::time::Instant::now() + DEBOUNCE;
                while let Ok(Some(_)) = tokio::time::timeout_at(deadline, events.next()).await {}
                match discover(&handle2).await {
                    Ok(snap) => {
                        let cur = cell2.load();
                        let same = Snapshot {
                            generation: cur.generation,
                            ..snap.clone()
                        } == *cur;
                        if !same {
                            let g = cell2.publish(snap);
                            tracing::debug!(generation = g, "network state changed");
                            tx2.send_replace(cell2.load());
                        }
                    }
                    Err(e) => {
                        tracing::warn!("netlink re-dump failed: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            conn_task.abort();
        });
        Ok(Watcher {
            cell,
            tx,
            task,
            handle,
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.cell.load()
    }

    /// A cached reader for a packet worker (cheap to clone, `Send`).
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader::new(self.cell.clone())
    }

    /// The shared cell.
    pub fn cell(&self) -> Arc<SnapshotCell> {
        self.cell.clone()
    }

    /// An async receiver woken on every new snapshot.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// The rtnetlink handle the watcher uses (for [`route_get`] and other one-off requests).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn lpm_prefers_longest_then_metric() {
        let gw = |g: [u8; 4]| Some(Ipv4Addr::from(g));
        let t = RouteTable::new(vec![
            Route {
                dst: p("0.0.0.0/0"),
                metric: 100,
                next_hop: Some(NextHop {
                    ifindex: 2,
                    gateway: gw([203, 0, 113, 254]),
                }),
            },
            Route {
                dst: p("0.0.0.0/0"),
                metric: 50,
                next_hop: Some(NextHop {
                    ifindex: 3,
                    gateway: gw([198, 51, 100, 1]),
                }),
            },
            Route {
                dst: p("10.0.0.0/8"),
                metric: 0,
                next_hop: Some(NextHop {
                    ifindex: 4,
                    gateway: None,
                }),
            },
            Route {
                dst: p("10.1.0.0/16"),
                metric: 0,
                next_hop: Some(NextHop {
                    ifindex: 5,
                    gateway: gw([10, 0, 0, 1]),
                }),
            },
            Route {
                dst: p("10.2.0.0/16"),
                metric: 0,
                next_hop: None,
            },
        ]);
        assert_eq!(t.lookup(Ipv4Addr::new(8, 8, 8, 8)).unwrap().ifindex, 3);
        assert_eq!(
            t.lookup(Ipv4Addr::new(10, 9, 9, 9)),
            Some(NextHop {
                ifindex: 4,
                gateway: None
            })
        );
        assert_eq!(t.lookup(Ipv4Addr::new(10, 1, 2, 3)).unwrap().ifindex, 5);
        assert_eq!(t.lookup(Ipv4Addr::new(10, 2, 2, 3)), None);
        assert!(
            RouteTable::default()
                .lookup(Ipv4Addr::new(10, 0, 0, 1))
                .is_none()
        );
    }

    #[test]
    fn rfc4787_req7_lookup_via_uses_only_that_interfaces_routes() {
        let gw = |g: [u8; 4]| Some(Ipv4Addr::from(g));
        let (outside, inside) = (2, 3);
        let t = RouteTable::new(vec![
            // Default route out; the inside network and a wider inside route; a blackhole.
            Route {
                dst: p("0.0.0.0/0"),
                metric: 0,
                next_hop: Some(NextHop {
                    ifindex: outside,
                    gateway: gw([203, 0, 113, 254]),
                }),
            },
            Route {
                dst: p("203.0.113.0/24"),
                metric: 0,
                next_hop: Some(NextHop {
                    ifindex: outside,
                    gateway: None,
                }),
            },
            Route {
                dst: p("10.1.0.0/24"),
                metric: 0,
                next_hop: Some(NextHop {
                    ifindex: inside,
                    gateway: None,
                }),
            },
            Route {
                dst: p("10.0.0.0/8"),
                metric: 0,
                next_hop: Some(NextHop {
                    ifindex: inside,
                    gateway: gw([10, 1, 0, 254]),
                }),
            },
            Route {
                dst: p("10.66.0.0/16"),
                metric: 0,
                next_hop: None,
            },
        ]);
        let remote = Ipv4Addr::new(10, 9, 0, 5);
        // The whole table sends the remote inside...
        assert_eq!(t.lookup(remote).unwrap().ifindex, inside);
        // ...but leaving by the outside interface, the default route applies.
        assert_eq!(
            t.lookup_via(remote, outside),
            Some(NextHop {
                ifindex: outside,
                gateway: gw([203, 0, 113, 254])
            })
        );
        // On-link outside stays on-link; inside destinations resolve among inside routes.
        assert_eq!(
            t.lookup_via(Ipv4Addr::new(203, 0, 113, 9), outside)
                .unwrap()
                .gateway,
            None
        );
        assert_eq!(
            t.lookup_via(Ipv4Addr::new(10, 1, 0, 7), inside)
                .unwrap()
                .gateway,
            None
        );
        assert_eq!(
            t.lookup_via(Ipv4Addr::new(10, 200, 0, 7), inside)
                .unwrap()
                .gateway,
            gw([10, 1, 0, 254])
        );
        // No inside route to a public address; an unknown interface has no routes.
        assert_eq!(t.lookup_via(Ipv4Addr::new(8, 8, 8, 8), inside), None);
        assert_eq!(t.lookup_via(remote, 99), None);
        // A more specific reject route still stops the lookup on every interface.
        assert_eq!(t.lookup_via(Ipv4Addr::new(10, 66, 1, 1), outside), None);
        assert_eq!(t.lookup_via(Ipv4Addr::new(10, 66, 1, 1), inside), None);
    }

    #[test]
    fn reader_follows_publications() {
        let cell = Arc::new(SnapshotCell::new(Snapshot::default()));
        let mut r = SnapshotReader::new(cell.clone());
        assert_eq!(r.get().generation, 1);
        assert!(!r.changed());
        cell.publish(Snapshot::default());
        assert!(r.changed());
        assert_eq!(r.get().generation, 2);
    }

    #[test]
    fn ifaddr_prefix_clears_host_bits() {
        let a = IfAddr {
            addr: Ipv4Addr::new(10, 1, 2, 3),
            prefix_len: 24,
            broadcast: None,
            secondary: false,
        };
        assert_eq!(a.prefix(), p("10.1.2.0/24"));
    }
}
