//! Scoring-plane credentials: two keys (`auth_mode: key`) or signed, expiring tokens
//! (`auth_mode: aml_token`). Every comparison is constant-time, and nothing here ever
//! formats a key or token into a message.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
pub(crate) const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The endpoint's secrets. Persisted with the control-plane state; never logged.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    /// Which secret a caller presents.
    auth_mode: AuthMode,
    /// Primary key (`key` mode).
    primary_key: String,
    /// Secondary key (`key` mode).
    secondary_key: String,
    /// Signing secret of `aml_token` tokens.
    token_secret: String,
    /// Lifetime of newly issued tokens, in seconds.
    token_lifetime_secs: u64,
    /// `--secrets-dir` only: secrets still accepted besides the ones above (a `token-verify-key`,
    /// and keys that left the folder, until their grace period ends). Never saved: the folder
    /// owns them, and a restart reads it again.
    #[serde(skip)]
    extra: Vec<ExtraSecret>,
}

/// A secret accepted besides the current ones (see [`Credentials::extra`]).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ExtraSecret {
    kind: SecretKind,
    secret: String,
    /// `None`: for as long as the folder holds it; `Some(t)`: retired, accepted until `t`.
    until: Option<Instant>,
}

/// What an accepted secret authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretKind {
    /// An endpoint key (`auth_mode: key`).
    Key,
    /// A token signing secret (`auth_mode: aml_token`): tokens it signed are accepted.
    TokenSigning,
}

/// The secrets a `--secrets-dir` folder holds, validated (see `control::secrets`).
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecrets {
    pub primary_key: String,
    pub secondary_key: String,
    /// Signs new tokens (and verifies them).
    pub token_signing_key: String,
    /// Verifies tokens but never signs: the step of a signing-key rotation where every replica
    /// must already accept the next key (or still accept the previous one).
    pub token_verify_key: Option<String>,
}

impl std::fmt::Debug for SharedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSecrets").finish_non_exhaustive()
    }
}

impl SharedSecrets {
    /// A short, non-reversible digest of every secret, so replicas can be compared (`show`'s
    /// `secrets_dir.fingerprint`) without showing a key.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut h = Sha256::new();
        for part in [&self.primary_key, &self.secondary_key, &self.token_signing_key] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        if let Some(v) = &self.token_verify_key {
            h.update(v.as_bytes());
        }
        hex::encode(&h.finalize()[..6])
    }
}

/// Most retired secrets kept at once (a folder edited many times within a grace period keeps
/// the newest ones).
const MAX_RETIRED: usize = 16;

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("auth_mode", &self.auth_mode).finish_non_exhaustive()
    }
}

/// A newly issued token, as `get-credentials` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    pub access_token: String,
    pub expiry_time_utc: String,
    pub refresh_after_time_utc: String,
    pub token_type: &'static str,
}

/// Which key `regenerate-keys` replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Primary,
    Secondary,
}

/// 32 random bytes as 64 hex characters.
pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not recoverable for a server that must issue keys.
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    hex::encode(bytes)
}

impl Credentials {
    /// Which secret a caller presents.
    pub fn auth_mode(&self) -> AuthMode {
        self.auth_mode
    }

    /// The primary and secondary keys (`key` mode; `get-credentials` shows them).
    pub fn keys(&self) -> (&str, &str) {
        (&self.primary_key, &self.secondary_key)
    }

    /// Fresh secrets for a new endpoint.
    pub fn generate(auth_mode: AuthMode, token_lifetime: Duration) -> Self {
        Self {
            auth_mode,
            primary_key: random_secret(),
            secondary_key: random_secret(),
            token_secret: random_secret(),
            token_lifetime_secs: token_lifetime.as_secs().max(1),
            extra: Vec::new(),
        }
    }

    /// The credentials a `--secrets-dir` folder defines.
    pub fn from_shared(auth_mode: AuthMode, token_lifetime: Duration, shared: &SharedSecrets) -> Self {
        let mut c = Self {
            auth_mode,
            primary_key: shared.primary_key.clone(),
            secondary_key: shared.secondary_key.clone(),
            token_secret: shared.token_signing_key.clone(),
            token_lifetime_secs: token_lifetime.as_secs().max(1),
            extra: Vec::new(),
        };
        c.set_verify_key(shared);
        c
    }

    /// Moves to the secrets of an edited `--secrets-dir` folder. New secrets are accepted at
    /// once; a secret the folder no longer holds stays accepted until `now + grace` (a replica
    /// whose Secret volume updated first must not refuse clients that still use the old key),
    /// unless it comes back. `grace` zero revokes at once.
    pub fn rotate_to(&mut self, shared: &SharedSecrets, grace: Duration, now: Instant) {
        let mut accepted = vec![
            (SecretKind::Key, std::mem::take(&mut self.primary_key)),
            (SecretKind::Key, std::mem::take(&mut self.secondary_key)),
            (SecretKind::TokenSigning, std::mem::take(&mut self.token_secret)),
        ];
        accepted.extend(self.extra.iter().filter(|e| e.until.is_none()).map(|e| (e.kind, e.secret.clone())));
        self.primary_key = shared.primary_key.clone();
        self.secondary_key = shared.secondary_key.clone();
        self.token_secret = shared.token_signing_key.clone();
        let current = |kind: SecretKind, secret: &str| match kind {
            SecretKind::Key => secret == shared.primary_key || secret == shared.secondary_key,
            SecretKind::TokenSigning => {
                secret == shared.token_signing_key || shared.token_verify_key.as_deref() == Some(secret)
            }
        };
        // Retired secrets that are still in grace and not current again.
        let mut retired: Vec<ExtraSecret> = std::mem::take(&mut self.extra)
            .into_iter()
            .filter(|e| e.until.is_some_and(|t| t > now) && !current(e.kind, &e.secret))
            .collect();
        if !grace.is_zero() {
            for (kind, secret) in accepted {
                if !current(kind, &secret) && !retired.iter().any(|r| r.kind == kind && r.secret == secret) {
                    retired.push(ExtraSecret { kind, secret, until: Some(now + grace) });
                }
            }
        }
        let excess = retired.len().saturating_sub(MAX_RETIRED);
        retired.drain(..excess);
        self.extra = retired;
        self.set_verify_key(shared);
    }

    fn set_verify_key(&mut self, shared: &SharedSecrets) {
        if let Some(v) = &shared.token_verify_key {
            self.extra.push(ExtraSecret { kind: SecretKind::TokenSigning, secret: v.clone(), until: None });
        }
    }

    /// The extra secrets of `kind` accepted at `now`.
    fn extra_secrets(&self, kind: SecretKind, now: Instant) -> impl Iterator<Item = &str> {
        self.extra.iter().filter(move |e| e.kind == kind && e.until.is_none_or(|t| t > now)).map(|e| e.secret.as_str())
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
                let p = same_secret(presented, self.primary_key.as_bytes());
                let s = same_secret(presented, self.secondary_key.as_bytes());
                let mut ok = p | s;
                // Only `--secrets-dir` has extra secrets: no clock read on the common path.
                if !self.extra.is_empty() {
                    for extra in self.extra_secrets(SecretKind::Key, Instant::now()) {
                        ok |= same_secret(presented, extra.as_bytes());
                    }
                }
                ok.into()
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
        let signature = hex::encode(sign(&self.token_secret, payload.as_bytes()));
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
        let mut signed = sign(&self.token_secret, payload.as_bytes()).as_slice().ct_eq(&signature);
        for extra in self.extra_secrets(SecretKind::TokenSigning, Instant::now()) {
            signed |= sign(extra, payload.as_bytes()).as_slice().ct_eq(&signature);
        }
        if !bool::from(signed) {
            return false;
        }
        let Some(expiry) = payload.split('.').next().and_then(|s| s.parse::<u64>().ok()) else {
            return false;
        };
        now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() < expiry).unwrap_or(false)
    }
}

/// HMAC-SHA256 of `payload` under `secret`.
fn sign(secret: &str, payload: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

/// `Bearer <secret>` → `<secret>` (scheme case-insensitive, as RFC 6750 allows).
pub(crate) fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
        Some(value[7..].trim_ascii())
    } else {
        None
    }
}

/// Whether a presented key equals a secret, in time that does not depend on where they differ
/// (a length difference answers at once, as `subtle`'s slice comparison does: key lengths are
/// not secret). `subtle`'s slice `ct_eq` sends every byte through an optimisation barrier,
/// ~700 instructions for a 44-byte key, and a request checks two keys; here the difference of
/// the two is folded 8 bytes at a time and only the folded word passes the barrier, once per
/// word, which is what keeps the compiler from stopping at the first difference.
fn same_secret(presented: &[u8], secret: &[u8]) -> subtle::Choice {
    if presented.len() != secret.len() {
        return subtle::Choice::from(0);
    }
    let (words_a, rest_a) = presented.as_chunks::<8>();
    let (words_b, rest_b) = secret.as_chunks::<8>();
    let mut diff = 0u64;
    for (a, b) in words_a.iter().zip(words_b) {
        diff = std::hint::black_box(diff | (u64::from_ne_bytes(*a) ^ u64::from_ne_bytes(*b)));
    }
    for (a, b) in rest_a.iter().zip(rest_b) {
        diff = std::hint::black_box(diff | u64::from(a ^ b));
    }
    diff.ct_eq(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_secret_compares_every_byte() {
        let key = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";
        assert!(bool::from(same_secret(key, key)));
        assert!(bool::from(same_secret(b"", b"")));
        for i in 0..key.len() {
            let mut other = *key;
            other[i] ^= 0x01;
            assert!(!bool::from(same_secret(&other, key)), "a difference at byte {i} is seen");
        }
        assert!(!bool::from(same_secret(&key[..43], key)));
        assert!(!bool::from(same_secret(b"abcdefghi", b"abcdefgh")));
    }

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

    fn shared(p: &str, s: &str, t: &str, v: Option<&str>) -> SharedSecrets {
        SharedSecrets {
            primary_key: p.into(),
            secondary_key: s.into(),
            token_signing_key: t.into(),
            token_verify_key: v.map(String::from),
        }
    }

    fn bearer(secret: &str) -> String {
        format!("Bearer {secret}")
    }

    #[test]
    fn a_rotated_key_is_accepted_at_once_and_the_old_one_until_its_grace_ends() {
        let mut c = Credentials::from_shared(AuthMode::Key, DEFAULT_TOKEN_LIFETIME, &shared("p1", "s1", "t1", None));
        let now = Instant::now();
        c.rotate_to(&shared("p1", "s2", "t1", None), Duration::from_secs(3600), now);
        for key in ["p1", "s1", "s2"] {
            assert!(c.allows(Some(bearer(key).as_bytes())), "{key}");
        }
        // A later rotation keeps what is still in grace; a key that comes back is current again.
        c.rotate_to(&shared("s1", "s2", "t1", None), Duration::from_secs(3600), now);
        assert_eq!(c.extra.len(), 1, "p1 retired; s1 current again");
        // Grace zero revokes what leaves at once (p1 keeps the deadline it retired with).
        c.rotate_to(&shared("p3", "s3", "t1", None), Duration::ZERO, now);
        assert_eq!(c.extra.len(), 1);
        for key in ["s1", "s2"] {
            assert!(!c.allows(Some(bearer(key).as_bytes())), "{key}");
        }
        assert!(c.allows(Some(bearer("p1").as_bytes())));
        assert!(c.allows(Some(bearer("s3").as_bytes())));
    }

    #[test]
    fn retired_keys_expire_and_are_bounded() {
        let mut c = Credentials::from_shared(AuthMode::Key, DEFAULT_TOKEN_LIFETIME, &shared("p0", "s0", "t", None));
        let past = Instant::now() - Duration::from_secs(10);
        c.rotate_to(&shared("p1", "s1", "t", None), Duration::from_secs(5), past);
        assert!(!c.allows(Some(bearer("p0").as_bytes())), "its grace ended 5 s ago");
        for i in 2..40 {
            c.rotate_to(
                &shared(&format!("p{i}"), &format!("s{i}"), "t", None),
                Duration::from_secs(60),
                Instant::now(),
            );
        }
        assert!(c.extra.len() <= MAX_RETIRED);
        assert!(c.allows(Some(bearer("p38").as_bytes())), "the newest retired keys are kept");
    }

    #[test]
    fn tokens_verify_with_the_verify_key_and_across_replicas() {
        let now = SystemTime::now();
        let old = shared("p", "s", "t-old", None);
        let next = shared("p", "s", "t-old", Some("t-new"));
        // Two replicas of one Secret: a token one signs, the other accepts.
        let a = Credentials::from_shared(AuthMode::AmlToken, DEFAULT_TOKEN_LIFETIME, &old);
        let b = Credentials::from_shared(AuthMode::AmlToken, DEFAULT_TOKEN_LIFETIME, &next);
        let by_a = a.issue_token(now).access_token;
        assert!(b.token_valid(by_a.as_bytes(), now));
        // Step 2 of a signing-key rotation: b signs with the new key, which a does not know yet
        // -- why step 1 (token-verify-key) must reach every replica first.
        let mut b2 = b.clone();
        b2.rotate_to(&shared("p", "s", "t-new", Some("t-old")), Duration::ZERO, Instant::now());
        let by_b2 = b2.issue_token(now).access_token;
        assert!(b.token_valid(by_b2.as_bytes(), now));
        assert!(b2.token_valid(by_a.as_bytes(), now), "the old key verifies as token-verify-key");
        assert!(!a.token_valid(by_b2.as_bytes(), now));
    }
}
