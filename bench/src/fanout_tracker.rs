//! [`FanoutTracker`]: which member streams each group message in flight has reached.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The messages in flight of a fan-out run, each with the set of members whose stream has
/// received it. A message is complete when every one of the group's members has it, the
/// sender included (its own stream gets the message too, as a MUC echoes it to its sender).
#[derive(Debug)]
pub struct FanoutTracker {
    members: usize,
    pending: HashMap<u64, Pending>,
}

#[derive(Debug)]
struct Pending {
    /// When the send started.
    sent: Instant,
    /// Index of the sending member (whose window slot the message holds).
    sender: usize,
    /// One bit per member: reached already.
    reached: Vec<u64>,
    /// Members not reached yet.
    missing: usize,
}

/// What one member's receipt of a message meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// Not a message in flight (an abandoned one, an earlier run's), a member out of range,
    /// or a second receipt by the same member: nothing counts.
    Ignored,
    /// A member received it, `latency` after the send started; others still miss it.
    Delivered { latency: Duration },
    /// The last member received it: the fan-out is complete, `latency` after the send
    /// started, and `sender`'s window slot is free.
    Completed { latency: Duration, sender: usize },
}

/// A message given up on: its send failed, or it did not reach every member in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned {
    pub id: u64,
    pub sender: usize,
    /// Members it had not reached.
    pub missing: usize,
}

impl FanoutTracker {
    /// A tracker for a group of `members` members.
    pub fn new(members: usize) -> Self {
        FanoutTracker { members, pending: HashMap::new() }
    }

    /// Message `id` from member `sender` starts now (`sent`).
    pub fn start(&mut self, id: u64, sender: usize, sent: Instant) {
        let words = self.members.div_ceil(64);
        self.pending.insert(id, Pending { sent, sender, reached: vec![0; words], missing: self.members });
    }

    /// Member `member`'s stream received message `id` at `at`.
    pub fn receipt(&mut self, id: u64, member: usize, at: Instant) -> Receipt {
        if member >= self.members {
            return Receipt::Ignored;
        }
        let Some(pending) = self.pending.get_mut(&id) else { return Receipt::Ignored };
        let (word, bit) = (member / 64, 1u64 << (member % 64));
        if pending.reached[word] & bit != 0 {
            return Receipt::Ignored;
        }
        pending.reached[word] |= bit;
        pending.missing -= 1;
        let latency = at.saturating_duration_since(pending.sent);
        if pending.missing > 0 {
            return Receipt::Delivered { latency };
        }
        let sender = pending.sender;
        self.pending.remove(&id);
        Receipt::Completed { latency, sender }
    }

    /// Gives up on message `id` (its send failed); `None` if it is not in flight.
    pub fn abandon(&mut self, id: u64) -> Option<Abandoned> {
        self.pending.remove(&id).map(|p| Abandoned { id, sender: p.sender, missing: p.missing })
    }

    /// Gives up on every message started more than `timeout` before `now`, oldest first.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Abandoned> {
        let mut late: Vec<(Instant, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.sent) > timeout)
            .map(|(id, p)| (p.sent, *id))
            .collect();
        late.sort_unstable();
        late.into_iter().filter_map(|(_, id)| self.abandon(id)).collect()
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_message_completes_when_the_last_member_receives_it() {
        let t0 = Instant::now();
        let mut tracker = FanoutTracker::new(3);
        tracker.start(7, 1, t0);
        assert_eq!(tracker.receipt(7, 2, t0 + ms(1)), Receipt::Delivered { latency: ms(1) });
        assert_eq!(tracker.receipt(7, 0, t0 + ms(2)), Receipt::Delivered { latency: ms(2) });
        assert_eq!(tracker.receipt(7, 1, t0 + ms(5)), Receipt::Completed { latency: ms(5), sender: 1 });
        assert_eq!(tracker.in_flight(), 0);
        // A late duplicate of a completed message counts for nothing.
        assert_eq!(tracker.receipt(7, 1, t0 + ms(6)), Receipt::Ignored);
    }

    #[test]
    fn a_member_counts_once_per_message() {
        let t0 = Instant::now();
        let mut tracker = FanoutTracker::new(2);
        tracker.start(1, 0, t0);
        assert_eq!(tracker.receipt(1, 0, t0 + ms(1)), Receipt::Delivered { latency: ms(1) });
        assert_eq!(tracker.receipt(1, 0, t0 + ms(2)), Receipt::Ignored, "the same member again");
        assert_eq!(tracker.receipt(1, 1, t0 + ms(3)), Receipt::Completed { latency: ms(3), sender: 0 });
    }

    #[test]
    fn unknown_messages_and_members_are_ignored() {
        let t0 = Instant::now();
        let mut tracker = FanoutTracker::new(2);
        tracker.start(1, 0, t0);
        assert_eq!(tracker.receipt(2, 0, t0), Receipt::Ignored, "never started");
        assert_eq!(tracker.receipt(1, 2, t0), Receipt::Ignored, "no member 2 in a group of 2");
        assert_eq!(tracker.in_flight(), 1);
    }

    #[test]
    fn messages_interleave_and_members_past_64_are_tracked() {
        // 130 members: three words of bits; two messages delivered in opposite orders.
        let t0 = Instant::now();
        let mut tracker = FanoutTracker::new(130);
        tracker.start(1, 0, t0);
        tracker.start(2, 5, t0 + ms(1));
        let mut completed = vec![];
        for m in 0..130 {
            for (id, member) in [(1, m), (2, 129 - m)] {
                if let Receipt::Completed { sender, .. } = tracker.receipt(id, member, t0 + ms(10)) {
                    completed.push((id, sender));
                }
            }
        }
        assert_eq!(completed, vec![(1, 0), (2, 5)]);
        assert_eq!(tracker.in_flight(), 0);
    }

    #[test]
    fn abandoned_and_expired_messages_free_their_sender() {
        let t0 = Instant::now();
        let mut tracker = FanoutTracker::new(3);
        tracker.start(1, 0, t0);
        tracker.start(2, 1, t0 + ms(100));
        tracker.start(3, 2, t0 + ms(5_000));
        tracker.receipt(2, 0, t0 + ms(200));
        assert_eq!(tracker.abandon(3), Some(Abandoned { id: 3, sender: 2, missing: 3 }));
        assert_eq!(tracker.abandon(3), None);
        let expired = tracker.expire(t0 + ms(2_150), ms(2_000));
        assert_eq!(
            expired,
            vec![Abandoned { id: 1, sender: 0, missing: 3 }, Abandoned { id: 2, sender: 1, missing: 2 }]
        );
        assert_eq!(tracker.in_flight(), 0);
        assert_eq!(tracker.receipt(1, 1, t0 + ms(2_200)), Receipt::Ignored, "too late to count");
    }
}
