//! Hybrid logical clock (Kulkarni et al.): 48 bits of milliseconds since the Unix epoch and
//! 16 bits of counter in one `u64`, so timestamps compare as plain integers.
//!
//! The clock never goes backwards and always passes every timestamp it has observed, so an edit
//! made after seeing a value orders after it whatever the phone's wall clock says. When the
//! counter overflows it carries into the millisecond bits: the clock runs slightly ahead of the
//! wall clock instead of failing.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A remote timestamp further ahead of the local wall clock than this is accepted but reported.
pub const FAR_FUTURE_MS: u64 = 24 * 60 * 60 * 1000;

const COUNTER_BITS: u32 = 16;
const MAX_MS: u64 = (1 << 48) - 1;

/// A hybrid logical timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hlc(pub u64);

impl Hlc {
    pub const ZERO: Hlc = Hlc(0);

    pub fn new(ms: u64, counter: u16) -> Hlc {
        Hlc((ms.min(MAX_MS) << COUNTER_BITS) | u64::from(counter))
    }

    /// Milliseconds since the Unix epoch.
    pub fn ms(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    pub fn counter(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }

    /// The next timestamp after this one; saturates at the end of time instead of wrapping.
    pub fn successor(self) -> Hlc {
        Hlc(self.0.saturating_add(1))
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:04x}", self.ms(), self.counter())
    }
}

/// The physical clock an [`HybridClock`] reads; injectable so tests can run phones whose clocks
/// are a year off.
pub trait WallClock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A replica's hybrid logical clock.
#[derive(Debug, Clone)]
pub struct HybridClock {
    last: Hlc,
    wall: Arc<dyn WallClock>,
}

impl HybridClock {
    pub fn new(wall: Arc<dyn WallClock>, last: Hlc) -> HybridClock {
        HybridClock { last, wall }
    }

    /// The greatest timestamp this clock has issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A fresh timestamp for a local write: greater than anything issued or observed before.
    pub fn tick(&mut self) -> Hlc {
        let wall = Hlc::new(self.wall.now_ms(), 0);
        self.last = wall.max(self.last.successor());
        self.last
    }

    /// Takes a remote timestamp into account. Returns `true` when it lies more than
    /// [`FAR_FUTURE_MS`] ahead of the local wall clock: it is still observed (a later local edit
    /// must still order after it), but the caller should report the writer's clock.
    pub fn observe(&mut self, remote: Hlc) -> bool {
        if remote > self.last {
            self.last = remote;
        }
        remote.ms() > self.wall.now_ms().saturating_add(FAR_FUTURE_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug)]
    struct Fixed(AtomicU64);
    impl WallClock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn clock(ms: u64) -> (Arc<Fixed>, HybridClock) {
        let wall = Arc::new(Fixed(AtomicU64::new(ms)));
        (wall.clone(), HybridClock::new(wall, Hlc::ZERO))
    }

    #[test]
    fn ticks_strictly_increase_even_when_the_wall_clock_stands_still_or_goes_back() {
        let (wall, mut c) = clock(1_000);
        let a = c.tick();
        let b = c.tick();
        wall.0.store(500, Ordering::SeqCst);
        let d = c.tick();
        assert!(a < b && b < d);
        assert_eq!(a, Hlc::new(1_000, 0));
        assert_eq!(b, Hlc::new(1_000, 1));
    }

    #[test]
    fn a_clock_a_year_behind_still_orders_its_edit_after_what_it_saw() {
        let year = 365 * 24 * 3600 * 1000;
        let (_, mut behind) = clock(1_700_000_000_000 - year);
        let seen = Hlc::new(1_700_000_000_000, 7);
        // From a clock a year behind, everyone else looks far ahead: reported, still observed.
        assert!(behind.observe(seen));
        assert!(behind.tick() > seen);
    }

    #[test]
    fn far_future_timestamps_are_observed_and_reported() {
        let (_, mut c) = clock(1_000_000);
        let future = Hlc::new(1_000_000 + FAR_FUTURE_MS + 1, 0);
        assert!(c.observe(future));
        assert_eq!(c.last(), future);
        assert!(c.tick() > future);
        assert!(!c.observe(Hlc::new(1_000_000 + FAR_FUTURE_MS, 0)));
    }

    #[test]
    fn counter_overflow_carries_into_the_milliseconds() {
        let (_, mut c) = clock(10);
        c.observe(Hlc::new(10, u16::MAX));
        let t = c.tick();
        assert_eq!(t, Hlc::new(11, 0));
        assert!(t > Hlc::new(10, u16::MAX));
    }

    #[test]
    fn the_end_of_time_saturates() {
        let (_, mut c) = clock(10);
        c.observe(Hlc(u64::MAX));
        assert_eq!(c.tick(), Hlc(u64::MAX));
    }
}
