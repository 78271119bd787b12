//! Client settings: timeouts, retries and back-off, with documented defaults and one
//! [`ClientConfig::validate`] that names the bad field.

use std::time::Duration;

use crate::error::{Error, Result};

/// How calls are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included; 1 turns retries off. Default 100 (the deadline is
    /// what usually ends a call's retries).
    pub max_attempts: u32,
    /// Time budget of one call over all its attempts. Default 10 s.
    pub deadline: Duration,
    /// Back-off before the second attempt; doubles per attempt. Default 20 ms.
    pub initial_backoff: Duration,
    /// Back-off cap. Default 100 ms. NB: while the leader fails over, each failed attempt asks
    /// the resolver to look again; a cap above the election time (~0.3 s) would leave the client
    /// waiting after the new leader is known.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 100,
            deadline: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// No retries: every error reaches the caller.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The back-off before attempt `attempt` (1-based; attempt 1 has none).
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (attempt - 2).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Settings of a [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Timeout of one attempt of a unary call. Default 5 s.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection to a member. Default 1 s.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval on idle connections. Default 20 s.
    pub keep_alive: Duration,
    /// How long a member whose connection failed is passed over by Consume. Default 1 s.
    pub eject_for: Duration,
    /// Retries of Produce, Consume and the resume of ConsumeStream. Default: [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Exactly-once Produce (the idempotent producer): records carry a producer id and sequence
    /// numbers, so a retry of a record the cluster already committed gets its original offset
    /// instead of a second copy. Default true; false gives at-least-once delivery (no
    /// `InitProducer` call, no producer state on the cluster).
    pub idempotent: bool,
    /// TLS to the members (see [`crate::conn::tls_from_files`]); `None` dials plaintext.
    /// Default `None`.
    pub tls: Option<proglog_tls::ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            keep_alive: Duration::from_secs(20),
            eject_for: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            idempotent: true,
            tls: None,
        }
    }
}

impl ClientConfig {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(Error::Config {
                field,
                reason: reason.into(),
            })
        };
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must be > 0");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be > 0");
        }
        if self.retry.max_attempts == 0 {
            return bad("retry.max_attempts", "must be >= 1 (1 means no retries)");
        }
        if self.retry.initial_backoff > self.retry.max_backoff {
            return bad("retry.initial_backoff", "must not exceed retry.max_backoff");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::ZERO);
        assert_eq!(p.backoff(2), Duration::from_millis(20));
        assert_eq!(p.backoff(3), Duration::from_millis(40));
        assert_eq!(p.backoff(4), Duration::from_millis(80));
        assert_eq!(p.backoff(10), Duration::from_millis(100));
        assert_eq!(p.backoff(1000), Duration::from_millis(100));
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = ClientConfig::default();
        c.retry.max_attempts = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("retry.max_attempts"), "{e}");
        assert!(ClientConfig::default().validate().is_ok());
    }
}
