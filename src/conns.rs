//! Connection admission: who gets one of the server's connection slots.
//!
//! Two rules keep one client from taking every slot with connections that never send a
//! request (headers trickled in, or nothing at all):
//!
//! - **Per client address**: at most `max_connections_per_ip` open connections per IPv4
//!   address or IPv6 network (`rate_limits.ipv6_prefix`); a connection beyond it is closed at
//!   once. `trusted_proxies` are exempt: one proxy carries many clients.
//! - **Globally**: at `max_connections`, the oldest connection that has not yet delivered a
//!   whole request is closed to make room for the newcomer. Connections that have delivered
//!   one are not shed: a newcomer is refused only when every open connection has (then the
//!   server is simply full of real clients, and idle ones leave within `header_read_timeout`).
//!
//! Every operation takes one short lock and is O(log n).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its address already holds `max_connections_per_ip` connections.
    PerAddress,
    /// The server is at `max_connections` and every connection has delivered a request.
    Full,
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
    /// Connections that have not delivered a request yet, oldest first, with the sender that
    /// closes each.
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
    /// Connections told to close for a newcomer and no longer counted in `open`, until their
    /// task drops them.
    shed: HashSet<u64>,
}

/// One admitted connection. Dropping it gives its slot back.
#[derive(Debug)]
pub(crate) struct Admitted {
    registry: Arc<Connections>,
    id: u64,
    address: Option<IpAddr>,
    served: AtomicBool,
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
            // The oldest connection still waiting for its first request makes room. Its slot
            // is counted free from now on, whenever its task gets to closing it (so a burst of
            // newcomers sheds one connection each, not one per newcomer per pending close).
            let Some((shed, close)) = state.waiting.pop_first() else {
                return Err(Refused::Full);
            };
            let _ = close.send(());
            state.shed.insert(shed);
            state.open -= 1;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.open += 1;
        if let Some(address) = address {
            *state.per_address.entry(address).or_default() += 1;
        }
        let (close, closed) = oneshot::channel();
        state.waiting.insert(id, close);
        drop(state);
        let admitted = Admitted {
            registry: self.clone(),
            id,
            address,
            served: AtomicBool::new(false),
        };
        Ok((admitted, closed))
    }

    /// Open connections.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).open
    }
}

impl Admitted {
    /// The connection delivered a whole request: it is no longer the first to be shed.
    /// Cheap after the first call.
    pub(crate) fn served(&self) {
        if !self.served.swap(true, Ordering::Relaxed) {
            let mut state = self
                .registry
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            state.waiting.remove(&self.id);
        }
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
        if !state.shed.remove(&self.id) {
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
        first.served();
        let (fourth, _) = conns.admit(ip("192.0.2.4")).unwrap();
        assert!(
            second_closed.try_recv().is_ok(),
            "the oldest waiting one is told to close"
        );
        assert!(first_closed.try_recv().is_err() && third_closed.try_recv().is_err());
        assert_eq!(conns.open(), 3, "the shed one no longer counts");
        drop(second);
        assert_eq!(conns.open(), 3);
        // With every connection served, a newcomer is refused rather than a client cut off.
        third.served();
        fourth.served();
        assert_eq!(conns.admit(ip("192.0.2.5")).unwrap_err(), Refused::Full);
        drop(first);
        assert!(conns.admit(ip("192.0.2.5")).is_ok());
    }
}
