//! [`Backoff`]: growing, jittered pauses between retries.

use std::time::Duration;

use rand::Rng;

/// Pauses that double from `initial` up to `max`. Each pause is drawn from the upper half of
/// its step, so that clients retrying after the same election do not all arrive together.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff { step: initial.min(max), max }
    }

    /// The next pause.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::thread_rng().gen_range(0..=jitter_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_within_jitter_and_stop_at_max() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
        let steps = [50, 100, 200, 400, 400, 400];
        for step in steps {
            let pause = backoff.next_pause();
            let step = Duration::from_millis(step);
            assert!(pause >= step / 2 && pause <= step, "pause {pause:?} outside [{:?}, {step:?}]", step / 2);
        }
    }

    #[test]
    fn initial_longer_than_max_is_capped() {
        let mut backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
        assert!(backoff.next_pause() <= Duration::from_secs(1));
    }
}
