//! Connection admission: who gets one of the server's connection slots, and which connection
//! makes room for a newcomer.
//!
//! Two rules keep one client from taking every slot:
//!
//! - **Per client address**: at most `max_connections_per_ip` open connections per IPv4
//!   address or IPv6 network (`rate_limits.ipv6_prefix`, the networks the rate limits count
//!   by); a connection beyond it is closed at once. `trusted_proxies` are exempt: one proxy
//!   carries many clients.
//! - **Globally**: at `max_connections`, a newcomer takes the place of the oldest connection
//!   that has not yet delivered a whole request (headers trickled in, or nothing at all), else
//!   of the connection idle the longest (a keep-alive or HTTP/2 connection with no request in
//!   flight). Only when every connection has a request in flight is a newcomer refused: the
//!   server is then simply busy with real work.
//!
//! Each connection's [`Activity`] (requests in flight, when the last one ended) is kept with
//! atomics, so a request costs two atomic updates and no lock after its connection's first;
//! the registry's lock is taken to admit, to drop, and (at the cap only) to choose whom to shed
//! with one pass over the open connections.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its address already holds `max_connections_per_ip` connections.
    PerAddress,
    /// The server is at `max_connections` and every connection has a request in flight.
    Full,
}

/// The process's reference instant for [`Activity`]'s millisecond stamps.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What one connection is doing: requests in flight and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since [`epoch`] when the connection opened or a request ended.
    last: AtomicU64,
    /// Whether it has delivered a whole request yet.
    served: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(millis_since_epoch()),
            served: AtomicBool::new(false),
        }
    }

    /// How long it has had no request in flight; `None` while one is.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.last.load(Ordering::Acquire);
        Some(Duration::from_millis(
            millis_since_epoch().saturating_sub(last),
        ))
    }
}

/// The open connections, by address and by age.
#[derive(Debug)]
pub(crate) struct Connections {
    max: usize,
    max_per_address: usize,
    ipv6_prefix: u8,
    trusted: Vec<ipnet::IpNet>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    open: usize,
    per_address: HashMap<IpAddr, usize>,
    /// Every open connection (not yet shed), oldest first: its activity and the sender that
    /// closes it.
    live: BTreeMap<u64, (Arc<Activity>, oneshot::Sender<()>)>,
    /// The open connections that have not delivered a request yet, oldest first: the first
    /// to make room (found without a pass over `live`).
    waiting: BTreeSet<u64>,
}

/// One admitted connection. Dropping it gives its slot back.
#[derive(Debug)]
pub(crate) struct Admitted {
    registry: Arc<Connections>,
    id: u64,
    address: Option<IpAddr>,
    activity: Arc<Activity>,
}

/// A request in flight on a connection; dropping it marks the end of the request.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last.store(millis_since_epoch(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    pub(crate) fn new(
        max: usize,
        max_per_address: usize,
        ipv6_prefix: u8,
        trusted: Vec<ipnet::IpNet>,
    ) -> Connections {
        Connections {
            max,
            max_per_address,
            ipv6_prefix,
            trusted,
            state: Mutex::default(),
        }
    }

    /// The key a peer's connections are counted under: its IPv4 address (an IPv4-mapped IPv6
    /// peer included) or its IPv6 network; `None` for a trusted proxy (not counted).
    fn address_of(&self, peer: IpAddr) -> Option<IpAddr> {
        let peer = peer.to_canonical();
        if self.max_per_address == 0 || self.trusted.iter().any(|net| net.contains(&peer)) {
            return None;
        }
        Some(match peer {
            IpAddr::V4(_) => peer,
            IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, self.ipv6_prefix)
                .map_or(peer, |net| IpAddr::V6(net.trunc().addr())),
        })
    }

    /// Admits a connection from `peer`, or says why not. The receiver fires when the
    /// connection is shed for a newcomer: close it then.
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
    ) -> Result<(Admitted, oneshot::Receiver<()>), Refused> {
        let address = self.address_of(peer);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(address) = address
            && state.per_address.get(&address).copied().unwrap_or(0) >= self.max_per_address
        {
            return Err(Refused::PerAddress);
        }
        if state.open >= self.max {
            // Its slot is counted free from now on, whenever its task gets to closing it (so
            // a burst of newcomers sheds one connection each, not one per newcomer per pending
            // close).
            let shed = match state.waiting.pop_first() {
                Some(id) => id,
                None => idlest(&state.live).ok_or(Refused::Full)?,
            };
            if let Some((_, close)) = state.live.remove(&shed) {
                let _ = close.send(());
            }
            state.open -= 1;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.open += 1;
        if let Some(address) = address {
            *state.per_address.entry(address).or_default() += 1;
        }
        let (close, closed) = oneshot::channel();
        let activity = Arc::new(Activity::new());
        state.live.insert(id, (activity.clone(), close));
        state.waiting.insert(id);
        drop(state);
        let admitted = Admitted {
            registry: self.clone(),
            id,
            address,
            activity,
        };
        Ok((admitted, closed))
    }

    /// Open connections.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).open
    }
}

/// The connection idle the longest, when every connection has delivered a request (one pass,
/// at the cap only); `None` when every one has a request in flight.
fn idlest(live: &BTreeMap<u64, (Arc<Activity>, oneshot::Sender<()>)>) -> Option<u64> {
    let mut idlest: Option<(Duration, u64)> = None;
    for (id, (activity, _)) in live {
        if let Some(idle) = activity.idle_for()
            && idlest.is_none_or(|(longest, _)| idle > longest)
        {
            idlest = Some((idle, *id));
        }
    }
    idlest.map(|(_, id)| id)
}

impl Admitted {
    /// A request arrived whole: it is in flight until the returned guard drops. The first
    /// takes the connection off the waiting list (one lock per connection; later requests
    /// take none).
    pub(crate) fn busy(&self) -> Busy {
        self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        if !self.activity.served.swap(true, Ordering::AcqRel) {
            let mut state = self
                .registry
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            state.waiting.remove(&self.id);
        }
        Busy(self.activity.clone())
    }

    /// The connection's activity (for its idle timeout).
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self
            .registry
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        state.waiting.remove(&self.id);
        // A shed connection's slot was already given to the newcomer it made room for.
        if state.live.remove(&self.id).is_some() {
            state.open = state.open.saturating_sub(1);
        }
        if let Some(address) = self.address {
            match state.per_address.get_mut(&address) {
                Some(n) if *n > 1 => *n -= 1,
                _ => {
                    state.per_address.remove(&address);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_share_and_no_more() {
        let conns = Arc::new(Connections::new(
            100,
            2,
            64,
            vec!["10.0.0.0/8".parse().unwrap()],
        ));
        let a = conns.admit(ip("192.0.2.1")).unwrap();
        let _b = conns.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            conns.admit(ip("192.0.2.1")).unwrap_err(),
            Refused::PerAddress
        );
        // Another address, a trusted proxy (uncounted), and the same /64 (counted together).
        assert!(conns.admit(ip("192.0.2.2")).is_ok());
        let proxied: Vec<_> = (0..5)
            .map(|_| conns.admit(ip("10.1.2.3")).unwrap())
            .collect();
        let _c = conns.admit(ip("2001:db8::1")).unwrap();
        let _d = conns.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(
            conns.admit(ip("2001:db8::3")).unwrap_err(),
            Refused::PerAddress
        );
        assert!(conns.admit(ip("2001:db8:0:1::1")).is_ok());
        drop(a);
        assert!(
            conns.admit(ip("192.0.2.1")).is_ok(),
            "a closed connection frees its place"
        );
        drop(proxied);
    }

    #[test]
    fn at_the_cap_the_oldest_connection_without_a_request_is_shed() {
        let conns = Arc::new(Connections::new(3, 0, 64, vec![]));
        let (first, mut first_closed) = conns.admit(ip("192.0.2.1")).unwrap();
        let (second, mut second_closed) = conns.admit(ip("192.0.2.2")).unwrap();
        let (third, mut third_closed) = conns.admit(ip("192.0.2.3")).unwrap();
        // The first has delivered a request: the second is the oldest still waiting.
        let first_busy = first.busy();
        let (fourth, _) = conns.admit(ip("192.0.2.4")).unwrap();
        assert!(
            second_closed.try_recv().is_ok(),
            "the oldest waiting one is told to close"
        );
        assert!(first_closed.try_recv().is_err() && third_closed.try_recv().is_err());
        assert_eq!(conns.open(), 3, "the shed one no longer counts");
        drop(second);
        assert_eq!(conns.open(), 3);
        // With a request in flight on every connection, a newcomer is refused rather than a
        // request cut off.
        let third_busy = third.busy();
        let fourth_busy = fourth.busy();
        assert_eq!(conns.admit(ip("192.0.2.5")).unwrap_err(), Refused::Full);
        // Once a request ends, its connection is idle: it makes room.
        drop(third_busy);
        let (fifth, _) = conns.admit(ip("192.0.2.5")).unwrap();
        assert!(
            third_closed.try_recv().is_ok(),
            "the idle one is told to close"
        );
        assert!(first_closed.try_recv().is_err());
        drop((first_busy, fourth_busy, fifth, first, third));
    }

    #[test]
    fn the_connection_idle_the_longest_makes_room() {
        let conns = Arc::new(Connections::new(2, 0, 64, vec![]));
        let (a, mut a_closed) = conns.admit(ip("192.0.2.1")).unwrap();
        let (b, mut b_closed) = conns.admit(ip("192.0.2.2")).unwrap();
        drop(a.busy());
        std::thread::sleep(Duration::from_millis(20));
        drop(b.busy());
        assert!(a.activity().idle_for().unwrap() > b.activity().idle_for().unwrap());
        let (_c, _) = conns.admit(ip("192.0.2.3")).unwrap();
        assert!(a_closed.try_recv().is_ok(), "idle the longest");
        assert!(b_closed.try_recv().is_err());
        let busy = b.busy();
        assert!(b.activity().idle_for().is_none());
        drop(busy);
        assert!(b.activity().idle_for().is_some());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_the_configured_network() {
        // rate_limits.ipv6_prefix = 56: a whole /56 shares one allowance.
        let conns = Arc::new(Connections::new(100, 2, 56, vec![]));
        let _a = conns.admit(ip("2001:db8:0:1::1")).unwrap();
        let _b = conns.admit(ip("2001:db8:0:ff::1")).unwrap();
        assert_eq!(
            conns.admit(ip("2001:db8:0:42::1")).unwrap_err(),
            Refused::PerAddress
        );
        assert!(conns.admit(ip("2001:db8:0:100::1")).is_ok());
    }
}
