//! Replay protection for one device: a sliding window over its datagrams' `seq`
//! numbers (as IPsec and DTLS keep), pure. A datagram is accepted once: a copy
//! replayed later, or one older than the window, is refused; datagrams reordered
//! within the window are still accepted.

/// How far behind the newest `seq` a late datagram may still be accepted.
pub const WINDOW: u64 = 64;

/// The newest `seq` seen and which of the [`WINDOW`] before it were seen.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// The highest `seq` accepted (0: none yet; `seq` 0 is never accepted).
    newest: u64,
    /// Bit `n` set: `newest - n` was accepted (bit 0 is `newest` itself).
    seen: u64,
}

impl ReplayWindow {
    /// Whether a datagram numbered `seq` is new; if so it is remembered.
    pub fn accept(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.newest {
            let shift = seq - self.newest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.newest = seq;
            return true;
        }
        let behind = self.newest - seq;
        if behind >= WINDOW {
            return false;
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_is_accepted_once() {
        let mut window = ReplayWindow::default();
        assert!(!window.accept(0));
        assert!(window.accept(1));
        assert!(!window.accept(1));
        assert!(window.accept(5));
        assert!(window.accept(3), "reordered within the window");
        assert!(!window.accept(3));
        assert!(window.accept(2));
        assert!(window.accept(4));
        assert!(!window.accept(5));
    }

    #[test]
    fn too_old_to_tell_is_refused() {
        let mut window = ReplayWindow::default();
        assert!(window.accept(1000));
        assert!(window.accept(1000 - (WINDOW - 1)));
        assert!(!window.accept(1000 - WINDOW));
        assert!(window.accept(1000 + WINDOW * 3), "a jump clears the window");
        assert!(!window.accept(1000));
    }

    #[test]
    fn matches_a_set_of_everything_seen_within_the_window() {
        // A pseudo-random walk of numbers around a growing front, against the obvious
        // model: accepted iff never seen and not older than the window.
        let mut window = ReplayWindow::default();
        let mut seen = std::collections::HashSet::new();
        let mut newest = 0u64;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let front = newest + 3;
            let seq = front.saturating_sub(state % 90).max(1);
            let expected = !seen.contains(&seq) && (seq > newest || newest - seq < WINDOW);
            assert_eq!(window.accept(seq), expected, "seq {seq}, newest {newest}");
            if expected {
                seen.insert(seq);
                newest = newest.max(seq);
            }
        }
    }
}
