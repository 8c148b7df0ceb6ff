//! The one retry policy of hopper's clients: exponential backoff from
//! 100 ms, doubling to at most 5 s, within a time budget. Reads, plans and
//! cache fills retry a flight-server or segment that is down with it; the
//! budget is [`retry_budget`] unless a caller has its own.

use std::time::{Duration, Instant};

/// Environment variable: seconds a client keeps retrying a flight-server or
/// segment that is down (default 60).
pub const RETRY_ENV: &str = "HOPPER_READ_RETRY_SECONDS";

/// First pause between attempts.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// How long a client retries an unreachable flight-server or segment:
/// `HOPPER_READ_RETRY_SECONDS`, else 60 s (the env passes from `mop train`
/// to the trainers it spawns).
pub fn retry_budget() -> Duration {
    std::env::var(RETRY_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(60), Duration::from_secs_f64)
}

/// Pauses between the attempts of one operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    budget: Duration,
    deadline: Instant,
    delay: Duration,
    attempts: u32,
}

impl Backoff {
    /// Attempts until `budget` from now is spent.
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            deadline: Instant::now() + budget,
            delay: FIRST_DELAY,
            attempts: 1,
        }
    }

    /// Within [`retry_budget`].
    pub fn from_env() -> Self {
        Self::new(retry_budget())
    }

    /// After a failed attempt: waits before the next one and returns true,
    /// or returns false at once when that wait would end past the budget.
    pub async fn wait(&mut self) -> bool {
        match self.next_pause(Instant::now()) {
            Some(pause) => {
                tokio::time::sleep(pause).await;
                true
            }
            None => false,
        }
    }

    /// The decision of [`Backoff::wait`] at time `now`, without the wait:
    /// the pause before the next attempt (counted as made), or `None` when
    /// that pause would end past the budget.
    fn next_pause(&mut self, now: Instant) -> Option<Duration> {
        if now + self.delay > self.deadline {
            return None;
        }
        let pause = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        self.attempts += 1;
        Some(pause)
    }

    /// Attempts made so far (the first counts).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The whole budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_and_stop_before_the_budget_is_spent() {
        // The schedule on a clock the test moves: exact, however loaded
        // the machine.
        let mut b = Backoff::new(Duration::from_millis(350));
        let start = b.deadline - b.budget;
        let mut now = start;
        let mut pauses = Vec::new();
        while let Some(p) = b.next_pause(now) {
            pauses.push(p);
            now += p;
        }
        // 0.1 s, then 0.2 s; the next 0.4 s would end past 0.35 s.
        assert_eq!(
            pauses,
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(b.attempts(), 3);
        // Time an attempt takes counts against the budget too.
        let mut slow = Backoff::new(Duration::from_millis(350));
        let start = slow.deadline - slow.budget;
        assert!(slow
            .next_pause(start + Duration::from_millis(260))
            .is_none());
        assert_eq!(slow.attempts(), 1);
    }

    #[tokio::test]
    async fn wait_sleeps_the_pause_it_decides() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let started = Instant::now();
        assert!(b.wait().await);
        // A lower bound only: a loaded machine sleeps longer, never shorter.
        assert!(started.elapsed() >= FIRST_DELAY);
    }
}
