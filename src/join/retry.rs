//! Retrying a fallible async step until a deadline: exponential backoff with
//! jitter, one [`Attempt`] report per try so the caller can record each one
//! in the host's history. Shared by the SSH join and the Infrastructure
//! client.
//!
//! This module decides *when* to try again, never *whether* an error is
//! worth retrying: the caller's classification decides that. It never sleeps
//! past the deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::RngExt as _;

/// Exponential backoff: `initial`, doubled per failed attempt, capped at
/// `max`, each delay scaled by a random factor in [0.5, 1.0) so that many
/// hosts failing together do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay after the `failures`-th failed attempt (1-based), before
    /// jitter.
    pub fn base_delay(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay after the `failures`-th failed attempt, with jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let base = self.base_delay(failures);
        base.mul_f64(rand::rng().random_range(0.5..1.0))
    }
}

/// What happened in one attempt, reported to the caller's `on_attempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// How long this attempt took.
    pub elapsed: Duration,
    pub outcome: AttemptOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    /// The error (already redacted) is retryable; the next try follows after
    /// `retry_in`.
    WillRetry {
        error: String,
        retry_in: Duration,
    },
    /// No further attempt: the error is permanent, or the deadline leaves no
    /// room for another try.
    GaveUp {
        error: String,
        reason: GiveUpReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    Permanent,
    Deadline,
}

/// Runs `op` until it succeeds, fails permanently (`is_retryable` says no),
/// or the deadline would pass before the next try. Returns the last result.
pub(crate) async fn retry<T, E, Op, Fut>(
    backoff: Backoff,
    deadline: Instant,
    mut on_attempt: impl FnMut(&Attempt),
    is_retryable: impl Fn(&E) -> bool,
    mut op: Op,
) -> Result<T, E>
where
    E: std::fmt::Display,
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut number = 0u32;
    loop {
        number = number.saturating_add(1);
        let started = Instant::now();
        let result = op().await;
        let elapsed = started.elapsed();
        let error = match result {
            Ok(value) => {
                on_attempt(&Attempt {
                    number,
                    elapsed,
                    outcome: AttemptOutcome::Succeeded,
                });
                return Ok(value);
            }
            Err(error) => error,
        };
        let message = error.to_string();
        if !is_retryable(&error) {
            on_attempt(&Attempt {
                number,
                elapsed,
                outcome: AttemptOutcome::GaveUp {
                    error: message,
                    reason: GiveUpReason::Permanent,
                },
            });
            return Err(error);
        }
        let retry_in = backoff.delay(number);
        let now = Instant::now();
        if now.checked_add(retry_in).is_none_or(|t| t >= deadline) {
            on_attempt(&Attempt {
                number,
                elapsed,
                outcome: AttemptOutcome::GaveUp {
                    error: message,
                    reason: GiveUpReason::Deadline,
                },
            });
            return Err(error);
        }
        on_attempt(&Attempt {
            number,
            elapsed,
            outcome: AttemptOutcome::WillRetry {
                error: message,
                retry_in,
            },
        });
        tokio::time::sleep(retry_in).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.base_delay(1), Duration::from_secs(1));
        assert_eq!(b.base_delay(2), Duration::from_secs(2));
        assert_eq!(b.base_delay(5), Duration::from_secs(16));
        assert_eq!(b.base_delay(6), Duration::from_secs(30));
        assert_eq!(b.base_delay(400), Duration::from_secs(30));
        for n in 1..40 {
            let d = b.delay(n);
            assert!(d >= b.base_delay(n) / 2 && d < b.base_delay(n) + Duration::from_millis(1));
        }
    }

    #[tokio::test]
    async fn retries_only_retryable_errors_until_success() {
        let backoff = Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut calls = 0;
        let r: Result<u32, String> = retry(
            backoff,
            deadline,
            |a| seen.push(a.clone()),
            |e: &String| e == "transient",
            || {
                calls += 1;
                let c = calls;
                async move {
                    if c < 3 {
                        Err("transient".to_string())
                    } else {
                        Ok(c)
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Ok(3));
        assert_eq!(seen.len(), 3);
        assert!(matches!(seen[0].outcome, AttemptOutcome::WillRetry { .. }));
        assert_eq!(seen[2].outcome, AttemptOutcome::Succeeded);

        let mut seen = Vec::new();
        let r: Result<u32, String> = retry(
            backoff,
            deadline,
            |a| seen.push(a.clone()),
            |e: &String| e == "transient",
            || async { Err("fatal".to_string()) },
        )
        .await;
        assert_eq!(r, Err("fatal".to_string()));
        assert_eq!(seen.len(), 1);
        assert!(matches!(
            seen[0].outcome,
            AttemptOutcome::GaveUp {
                reason: GiveUpReason::Permanent,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn stops_at_the_deadline() {
        let backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(40),
        };
        let started = Instant::now();
        let deadline = started + Duration::from_millis(200);
        let mut last = None;
        let r: Result<(), String> = retry(
            backoff,
            deadline,
            |a| last = Some(a.clone()),
            |_| true,
            || async { Err("down".to_string()) },
        )
        .await;
        assert!(r.is_err());
        assert!(started.elapsed() < Duration::from_millis(400));
        assert!(matches!(
            last.map(|a| a.outcome),
            Some(AttemptOutcome::GaveUp {
                reason: GiveUpReason::Deadline,
                ..
            })
        ));
    }
}
