//! Failed-attempt throttling per client address (pure: the clock is an
//! argument).
//!
//! An address (an IPv6 address by its /64, which one client typically
//! holds whole) that has failed `max_failures` times within `window` is
//! throttled until the oldest of those failures leaves the window: every
//! request from it is refused without being checked, so guessing runs at
//! most `max_failures` per `window`. Memory is bounded: at most
//! `max_addresses` addresses are tracked; when full, addresses whose
//! failures have all left the window are forgotten first, then the one
//! whose last failure is oldest.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The key an address is counted under.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::from(s)
            }
        },
    }
}

#[derive(Debug)]
pub struct Throttle {
    max_failures: usize,
    window: Duration,
    max_addresses: usize,
    failures: HashMap<IpAddr, VecDeque<Instant>>,
}

impl Throttle {
    pub fn new(max_failures: usize, window: Duration, max_addresses: usize) -> Throttle {
        Throttle {
            max_failures: max_failures.max(1),
            window,
            max_addresses: max_addresses.max(1),
            failures: HashMap::new(),
        }
    }

    fn expire(&mut self, ip: IpAddr, now: Instant) -> usize {
        let window = self.window;
        match self.failures.get_mut(&ip) {
            Some(q) => {
                while q.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
                    q.pop_front();
                }
                let n = q.len();
                if n == 0 {
                    self.failures.remove(&ip);
                }
                n
            }
            None => 0,
        }
    }

    /// `Err(wait)` when `ip` is throttled: how long until it may try again.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = key(ip);
        if self.expire(ip, now) < self.max_failures {
            return Ok(());
        }
        let oldest = self.failures.get(&ip).and_then(|q| q.front()).copied().unwrap_or(now);
        Err(self.window.saturating_sub(now.saturating_duration_since(oldest)).max(Duration::from_secs(1)))
    }

    /// Records a failed attempt by `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        let ip = key(ip);
        self.expire(ip, now);
        if !self.failures.contains_key(&ip) && self.failures.len() >= self.max_addresses {
            let window = self.window;
            self.failures.retain(|_, q| q.back().is_some_and(|t| now.saturating_duration_since(*t) < window));
            if self.failures.len() >= self.max_addresses {
                let stalest = self.failures.iter().min_by_key(|(_, q)| q.back().copied()).map(|(k, _)| *k);
                if let Some(k) = stalest {
                    self.failures.remove(&k);
                }
            }
        }
        let q = self.failures.entry(ip).or_default();
        q.push_back(now);
        while q.len() > self.max_failures {
            q.pop_front();
        }
    }

    /// Addresses tracked.
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_failure_within_a_minute_is_throttled_until_the_first_leaves_the_window() {
        let mut t = Throttle::new(10, Duration::from_secs(60), 100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(t.check(a, t0 + Duration::from_secs(i)), Ok(()), "attempt {}", i + 1);
            t.failed(a, t0 + Duration::from_secs(i));
        }
        let wait = t.check(a, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(t.check(b, t0 + Duration::from_secs(10)), Ok(()), "other addresses are not affected");
        assert!(t.check(a, t0 + Duration::from_secs(59)).is_err());
        assert_eq!(t.check(a, t0 + Duration::from_secs(60)), Ok(()), "the first failure left the window");
    }

    #[test]
    fn ipv6_counts_by_64_and_memory_is_bounded() {
        let mut t = Throttle::new(2, Duration::from_secs(60), 3);
        let now = Instant::now();
        t.failed("2001:db8::1".parse().unwrap(), now);
        t.failed("2001:db8::ffff:2".parse().unwrap(), now);
        assert!(t.check("2001:db8::3".parse().unwrap(), now).is_err(), "one /64");
        assert!(t.check("2001:db8:0:1::3".parse().unwrap(), now).is_ok());
        for i in 0..10u8 {
            t.failed(IpAddr::from([10, 0, 0, i]), now + Duration::from_millis(u64::from(i)));
        }
        assert!(t.tracked() <= 3);
    }
}
