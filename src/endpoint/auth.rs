//! Scoring-plane credentials: two keys (`auth_mode: key`) or signed, expiring tokens
//! (`auth_mode: aml_token`). Every comparison is constant-time, and nothing here ever
//! formats a key or token into a message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::spec::AuthMode;

/// How long an `aml_token` is valid (Azure's tokens live about an hour too).
#[cfg(test)]
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest token lifetime: `serve --token-lifetime-secs` refuses more, and a larger value
/// from an older state file is clamped to it when a token is issued.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The endpoint's secrets. Persisted with the control-plane state; never logged.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    /// Which secret a caller presents.
    pub auth_mode: AuthMode,
    /// Primary key (`key` mode).
    pub primary_key: String,
    /// Secondary key (`key` mode).
    pub secondary_key: String,
    /// Signing secret of `aml_token` tokens.
    pub token_secret: String,
    /// Lifetime of newly issued tokens, in seconds.
    pub token_lifetime_secs: u64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("auth_mode", &self.auth_mode).finish_non_exhaustive()
    }
}

/// A newly issued token, as `get-credentials` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    pub access_token: String,
    pub expiry_time_utc: String,
    pub refresh_after_time_utc: String,
    pub token_type: &'static str,
}

/// Which key `regenerate-keys` replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Primary,
    Secondary,
}

/// 32 random bytes as 64 hex characters.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not recoverable for a server that must issue keys.
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    hex::encode(bytes)
}

impl Credentials {
    /// Fresh secrets for a new endpoint.
    pub fn generate(auth_mode: AuthMode, token_lifetime: Duration) -> Self {
        Self {
            auth_mode,
            primary_key: random_secret(),
            secondary_key: random_secret(),
            token_secret: random_secret(),
            token_lifetime_secs: token_lifetime.as_secs().max(1),
        }
    }

    /// Replaces one key; the other keeps working.
    pub fn regenerate(&mut self, which: KeyType) {
        match which {
            KeyType::Primary => self.primary_key = random_secret(),
            KeyType::Secondary => self.secondary_key = random_secret(),
        }
        // Tokens are signed with their own secret; rotating it with the primary key revokes
        // every token issued so far, as rotating Azure's keys does.
        if which == KeyType::Primary && self.auth_mode == AuthMode::AmlToken {
            self.token_secret = random_secret();
        }
    }

    /// Checks an `Authorization` header value.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(presented) = strip_bearer(value) else {
            return false;
        };
        match self.auth_mode {
            AuthMode::Key => {
                let p = presented.ct_eq(self.primary_key.as_bytes());
                let s = presented.ct_eq(self.secondary_key.as_bytes());
                (p | s).into()
            }
            AuthMode::AmlToken => self.token_valid(presented, SystemTime::now()),
        }
    }

    /// Issues a token valid for the configured lifetime from `now`. Never panics: the
    /// lifetime is clamped to [`MAX_TOKEN_LIFETIME`] (a saved state may carry any number) and
    /// the clock arithmetic is checked (`SystemTime + Duration` panics on overflow, and so does
    /// formatting a date past the year 9999).
    pub fn issue_token(&self, now: SystemTime) -> IssuedToken {
        let lifetime = Duration::from_secs(self.token_lifetime_secs.clamp(1, MAX_TOKEN_LIFETIME.as_secs()));
        // Past 9999-12-31 a date cannot be written in RFC 3339: such a clock gets a token that
        // expires at once rather than a panic.
        let latest = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
        let expiry = now.checked_add(lifetime).unwrap_or(latest).min(latest);
        let refresh = now.checked_add(lifetime / 2).unwrap_or(latest).min(latest);
        let expiry_secs = expiry.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let nonce = &random_secret()[..16];
        let payload = format!("{expiry_secs}.{nonce}");
        let signature = hex::encode(self.sign(payload.as_bytes()));
        IssuedToken {
            access_token: format!("{payload}.{signature}"),
            expiry_time_utc: humantime::format_rfc3339_seconds(expiry).to_string(),
            refresh_after_time_utc: humantime::format_rfc3339_seconds(refresh).to_string(),
            token_type: "Bearer",
        }
    }

    fn token_valid(&self, token: &[u8], now: SystemTime) -> bool {
        let Ok(token) = std::str::from_utf8(token) else {
            return false;
        };
        let Some((payload, signature)) = token.rsplit_once('.') else {
            return false;
        };
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        let expected = self.sign(payload.as_bytes());
        if !bool::from(expected.as_slice().ct_eq(&signature)) {
            return false;
        }
        let Some(expiry) = payload.split('.').next().and_then(|s| s.parse::<u64>().ok()) else {
            return false;
        };
        now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() < expiry).unwrap_or(false)
    }

    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256>>::new_from_slice(self.token_secret.as_bytes()).expect("HMAC accepts keys of any length");
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }
}

/// `Bearer <secret>` → `<secret>` (scheme case-insensitive, as RFC 6750 allows).
pub fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
        Some(value[7..].trim_ascii())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_both_work_and_rotate_independently() {
        let mut c = Credentials::generate(AuthMode::Key, DEFAULT_TOKEN_LIFETIME);
        let primary = format!("Bearer {}", c.primary_key);
        let secondary = format!("bearer {}", c.secondary_key);
        assert!(c.allows(Some(primary.as_bytes())));
        assert!(c.allows(Some(secondary.as_bytes())));
        assert!(!c.allows(None));
        assert!(!c.allows(Some(b"Bearer nope")));
        assert!(!c.allows(Some(c.primary_key.clone().as_bytes())), "the Bearer scheme is required");
        c.regenerate(KeyType::Primary);
        assert!(!c.allows(Some(primary.as_bytes())));
        assert!(c.allows(Some(secondary.as_bytes())));
    }

    #[test]
    fn tokens_expire_and_cannot_be_forged() {
        let c = Credentials::generate(AuthMode::AmlToken, Duration::from_secs(60));
        let now = SystemTime::now();
        let t = c.issue_token(now);
        assert!(c.token_valid(t.access_token.as_bytes(), now));
        assert!(!c.token_valid(t.access_token.as_bytes(), now + Duration::from_secs(61)));
        let forged = t.access_token.replacen(|ch: char| ch.is_ascii_digit(), "9", 1);
        assert!(!c.token_valid(forged.as_bytes(), now));
        let other = Credentials::generate(AuthMode::AmlToken, Duration::from_secs(60));
        assert!(!other.token_valid(t.access_token.as_bytes(), now));
    }

    #[test]
    fn huge_lifetimes_do_not_panic() {
        let mut c = Credentials::generate(AuthMode::AmlToken, Duration::from_secs(60));
        let now = SystemTime::now();
        for secs in [1_000_000_000_000, u64::MAX] {
            c.token_lifetime_secs = secs;
            let t = c.issue_token(now);
            assert!(c.token_valid(t.access_token.as_bytes(), now), "clamped to a year, still valid now");
            assert!(!c.token_valid(t.access_token.as_bytes(), now + MAX_TOKEN_LIFETIME + Duration::from_secs(1)));
        }
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_000);
        let _ = c.issue_token(far);
    }
}
