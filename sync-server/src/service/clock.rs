//! How the server stamps its own writes (reviews, comments' authors, published forms).
//!
//! The server's clock lives in the database and is read and advanced inside the writing
//! transaction, so two server processes never issue the same `(hlc, replica)`. A device's
//! stamp far ahead of the server's wall clock is kept (and the device flagged), but it never
//! drags the server's clock past `wall + FAR_FUTURE_MS`: the server observes only stamps within
//! that bound.

use tejido_core::crdt::FAR_FUTURE_MS;
use tejido_core::Hlc;

/// The greatest stamp the server observes at this wall-clock time.
pub fn bound(wall_ms: u64) -> Hlc {
    Hlc::new(wall_ms.saturating_add(FAR_FUTURE_MS), u16::MAX)
}

/// Whether a device's stamp lies beyond the bound (the device's clock is far ahead).
pub fn is_far_future(stamp: Hlc, wall_ms: u64) -> bool {
    stamp > bound(wall_ms)
}

/// The server's next stamp: after everything it issued (`stored`), after what it observed
/// within the bound (`observed`, e.g. the document it writes to), and no earlier than the
/// wall clock.
pub fn next_stamp(stored: Hlc, observed: Option<Hlc>, wall_ms: u64) -> Hlc {
    let mut last = stored;
    if let Some(o) = observed.filter(|o| *o <= bound(wall_ms)) {
        last = last.max(o);
    }
    Hlc::new(wall_ms, 0).max(last.successor())
}

/// Whether a stored clock is beyond what the bound allows now: left by an older server that
/// let devices move it. The server then takes a new replica id, so the stamps it issues from
/// the wall clock can never repeat one it issued before.
pub fn is_poisoned(stored: Hlc, wall_ms: u64) -> bool {
    stored > bound(wall_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_far_future_observation_does_not_move_the_clock() {
        let s = next_stamp(Hlc::new(NOW - 5, 0), Some(Hlc(u64::MAX)), NOW);
        assert_eq!(s, Hlc::new(NOW, 0));
        let fifty_years = Hlc::new(NOW + 50 * 365 * 86_400_000, 0);
        assert_eq!(next_stamp(Hlc::ZERO, Some(fifty_years), NOW), Hlc::new(NOW, 0));
        assert!(is_far_future(fifty_years, NOW) && !is_far_future(Hlc::new(NOW + 1000, 0), NOW));
    }

    #[test]
    fn stamps_pass_what_was_issued_and_observed_within_the_bound() {
        let issued = Hlc::new(NOW, 3);
        assert_eq!(next_stamp(issued, None, NOW), Hlc::new(NOW, 4));
        let near = Hlc::new(NOW + 60_000, 0);
        assert_eq!(next_stamp(issued, Some(near), NOW), Hlc::new(NOW + 60_000, 1));
        // The wall clock going back never makes a stamp repeat.
        assert_eq!(next_stamp(issued, None, NOW - 10_000), Hlc::new(NOW, 4));
        assert!(is_poisoned(Hlc(u64::MAX), NOW) && !is_poisoned(issued, NOW));
    }
}
