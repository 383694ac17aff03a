//! Who may open a session, decided on accept before a byte is read: a cap on all sessions, a share of it that
//! only this machine (loopback) may use, so that OBS can still publish while the network floods the port, and
//! a cap per remote address (an IPv4 address, or an IPv6 /64, which one home usually gets whole).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_sessions` are open.
    Full,
    /// `max_remote_sessions` are held by other machines.
    RemoteFull,
    /// This address holds `max_sessions_per_address`.
    PerAddress,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    remote: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The caps and what is open now. Shared by the accept loop and the sessions' tickets.
#[derive(Debug)]
pub(crate) struct Admission {
    counts: Mutex<Counts>,
    max_total: usize,
    max_remote: usize,
    per_address: usize,
}

/// A session's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    /// The remote address key, `None` for loopback.
    key: Option<IpAddr>,
}

/// The key `ip` is counted under: `None` for loopback (not limited per address), the IPv4 address for an
/// IPv4-mapped IPv6 one, the /64 prefix for other IPv6 addresses.
pub(crate) fn address_key(ip: IpAddr) -> Option<IpAddr> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        return None;
    }
    Some(match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    })
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_remote: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Admission {
            counts: Mutex::default(),
            max_total,
            max_remote: max_remote.min(max_total),
            per_address,
        })
    }

    /// A place for a connection from `ip`, or why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let key = address_key(ip);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.max_total {
            return Err(Refusal::Full);
        }
        if let Some(k) = key {
            if c.remote >= self.max_remote {
                return Err(Refusal::RemoteFull);
            }
            let n = c.by_address.entry(k).or_default();
            if *n >= self.per_address {
                return Err(Refusal::PerAddress);
            }
            *n += 1;
            c.remote += 1;
        }
        c.total += 1;
        Ok(Ticket {
            admission: self.clone(),
            key,
        })
    }

    /// Sessions open now: (all, remote, addresses holding any).
    #[cfg(test)]
    fn open(&self) -> (usize, usize, usize) {
        let c = self.counts.lock().unwrap();
        (c.total, c.remote, c.by_address.len())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(k) = self.key {
            c.remote -= 1;
            if let Some(n) = c.by_address.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    c.by_address.remove(&k);
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
    fn keys_group_ipv6_by_64_and_unmap_ipv4() {
        assert_eq!(address_key(ip("127.0.0.1")), None);
        assert_eq!(address_key(ip("::1")), None);
        assert_eq!(address_key(ip("::ffff:127.0.0.1")), None);
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), Some(ip("192.0.2.7")));
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn per_address_cap_and_release() {
        let a = Admission::new(10, 8, 2);
        let t1 = a.admit(ip("192.0.2.7")).unwrap();
        let _t2 = a.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.7")).unwrap_err(), Refusal::PerAddress);
        let _other = a.admit(ip("192.0.2.8")).unwrap();
        drop(t1);
        let _t3 = a.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(a.open(), (3, 3, 2));
    }

    #[test]
    fn loopback_keeps_its_share_when_remote_peers_fill_theirs() {
        let a = Admission::new(4, 2, 10);
        let _r1 = a.admit(ip("192.0.2.1")).unwrap();
        let _r2 = a.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.3")).unwrap_err(), Refusal::RemoteFull);
        // Loopback is never limited per address and has the rest.
        let l1 = a.admit(ip("127.0.0.1")).unwrap();
        let _l2 = a.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(a.admit(ip("127.0.0.1")).unwrap_err(), Refusal::Full);
        drop(l1);
        assert!(a.admit(ip("127.0.0.1")).is_ok());
        assert_eq!(a.open(), (3, 2, 2));
    }
}
