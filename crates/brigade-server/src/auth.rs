//! Who is calling, and what they may do.
//!
//! Callers present `Authorization: Bearer <token>`, where the token is either a
//! static secret from the auth file (kept in memory only as its SHA-256) or a
//! short-lived access token issued by `POST /v1/auth/token` (HMAC-SHA256 signed
//! by a key of this server). With no tokens configured the server runs open:
//! everyone is an admin.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Roles of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Submit and read its own jobs.
    Client,
    /// The worker protocol only.
    Worker,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "client" => Ok(Role::Client),
            "worker" => Ok(Role::Worker),
            other => Err(format!("{other:?} is not a role: admin, client or worker")),
        }
    }
}

impl Role {
    /// The role's name as written in the auth file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Client => "client",
            Role::Worker => "worker",
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name; owns the jobs it submits and the workers it registers.
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// Allow only these roles (admin always passes).
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("the {} role may not do this", self.role.as_str()),
            ))
        }
    }

    /// Jobs this caller may see: admins all, clients their own.
    pub fn owner_filter(&self) -> Option<String> {
        (self.role != Role::Admin).then(|| self.name.clone())
    }

    /// Whether the caller may read or change a job owned by `owner`.
    pub fn may_touch(&self, owner: &str) -> bool {
        self.role == Role::Admin || self.name == owner
    }
}

/// Errors reading the auth file.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file could not be read.
    #[error("cannot read the auth file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("the auth file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong (never a secret).
        message: String,
    },
}

/// One `[[token]]` of the auth file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    role: Role,
    secret: Option<String>,
    secret_hash: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    token: Vec<FileEntry>,
}

/// A configured static token: its name, role and the SHA-256 of its secret.
#[derive(Clone)]
pub struct TokenEntry {
    /// Who it is.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random secret (32 bytes, base64url) and the hex SHA-256 to put in the auth file.
pub fn generate_secret() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hex::encode(hash_secret(&secret));
    (secret, hash)
}

/// Read an auth file: `[[token]]` entries with `name`, `role` and `secret` or `secret_hash`.
/// Plain secrets are hashed at once; only hashes are kept.
pub fn load_auth_file(path: &Path) -> Result<Vec<TokenEntry>, AuthFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let parse_err = |message: String| AuthFileError::Parse {
        path: shown.clone(),
        message,
    };
    // toml's messages quote the offending line, which may hold a secret: keep only the first line.
    let file: AuthFile = toml::from_str(&text).map_err(|e| {
        parse_err(
            e.message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_owned()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
        )
    })?;
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(file.token.len());
    for (i, t) in file.token.into_iter().enumerate() {
        let at = format!("token[{i}]");
        if t.name.is_empty() || t.name.len() > 128 {
            return Err(parse_err(format!("{at}.name must be 1 to 128 bytes")));
        }
        if !names.insert(t.name.clone()) {
            return Err(parse_err(format!(
                "{at}: the name {:?} is used twice",
                t.name
            )));
        }
        let hash = match (t.secret, t.secret_hash) {
            (Some(s), None) if s.len() >= 16 => hash_secret(&s),
            (Some(_), None) => {
                return Err(parse_err(format!(
                    "{at}.secret must be at least 16 characters"
                )));
            }
            (None, Some(h)) => {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(h.trim(), &mut hash).map_err(|_| {
                    parse_err(format!("{at}.secret_hash must be 64 hex digits (SHA-256)"))
                })?;
                hash
            }
            _ => {
                return Err(parse_err(format!(
                    "{at} needs exactly one of secret or secret_hash"
                )));
            }
        };
        out.push(TokenEntry {
            name: t.name,
            role: t.role,
            hash,
        });
    }
    Ok(out)
}

/// Claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    /// Expiry, seconds since the epoch.
    exp: i64,
}

const ACCESS_PREFIX: &str = "bga.";

/// Authentication settings of a server.
#[derive(Clone)]
pub struct AuthConfig {
    /// Static tokens; none means open mode.
    pub tokens: Vec<TokenEntry>,
    /// HMAC key for access tokens.
    pub signing_key: Vec<u8>,
    /// Lifetime of issued access tokens, seconds.
    pub access_token_ttl_s: u64,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &self.tokens)
            .field("access_token_ttl_s", &self.access_token_ttl_s)
            .finish_non_exhaustive()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self::new(Vec::new(), None)
    }
}

impl AuthConfig {
    /// Settings with these tokens; a random signing key unless one is given.
    pub fn new(tokens: Vec<TokenEntry>, signing_key: Option<Vec<u8>>) -> Self {
        let signing_key = signing_key.unwrap_or_else(|| {
            let mut k = vec![0u8; 32];
            rand::rng().fill_bytes(&mut k);
            k
        });
        Self {
            tokens,
            signing_key,
            access_token_ttl_s: 3600,
        }
    }

    /// No tokens configured: everyone is an admin.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The static token whose secret is `secret`, compared in constant time.
    fn by_secret(&self, secret: &str) -> Option<&TokenEntry> {
        let h = hash_secret(secret);
        let mut found = None;
        // Look at every entry so the time taken does not tell which one matched.
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&h)) {
                found = Some(t);
            }
        }
        found
    }

    /// Check client credentials (`client_id`, `client_secret`).
    pub fn check_credentials(&self, name: &str, secret: &str) -> Option<&TokenEntry> {
        self.by_secret(secret).filter(|t| t.name == name)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        match Hmac::<Sha256>::new_from_slice(&self.signing_key) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        }
    }

    /// Issue an access token for `entry`, valid `access_token_ttl_s` from `now_ms`.
    pub fn issue(&self, entry: &TokenEntry, now_ms: i64) -> String {
        let claims = Claims {
            sub: entry.name.clone(),
            role: entry.role,
            // Rounded up: a token lives at least its TTL (rounding down made a
            // 1 s token issued late in a second expire within milliseconds).
            exp: (now_ms + self.access_token_ttl_s as i64 * 1000 + 999) / 1000,
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signed = format!("{ACCESS_PREFIX}{payload}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{sig}")
    }

    /// The caller a bearer token stands for, or why it is refused.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<Caller, &'static str> {
        if let Some(rest) = token.strip_prefix(ACCESS_PREFIX) {
            let (payload, sig) = rest.rsplit_once('.').ok_or("malformed access token")?;
            let sig = URL_SAFE_NO_PAD
                .decode(sig)
                .map_err(|_| "malformed access token")?;
            let mut mac = self.mac();
            mac.update(ACCESS_PREFIX.as_bytes());
            mac.update(payload.as_bytes());
            mac.verify_slice(&sig)
                .map_err(|_| "the access token's signature is not valid")?;
            let claims: Claims = URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or("malformed access token")?;
            if claims.exp * 1000 <= now_ms {
                return Err("the access token has expired");
            }
            return Ok(Caller {
                name: claims.sub,
                role: claims.role,
            });
        }
        self.by_secret(token)
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
            })
            .ok_or("the token is not valid")
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // `Hmac::new_from_slice` accepts keys of every length; this cannot happen.
    std::process::abort()
}

/// A per-caller token bucket limiter.
#[derive(Debug)]
pub struct RateLimiter {
    /// (rate per second, burst) for clients and admins; 0 rate = unlimited.
    general: (f64, f64),
    /// (rate per second, burst) for workers.
    workers: (f64, f64),
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `per_s` requests a second (bursts of twice that) per caller,
    /// and `worker_per_s` for workers. 0 means no limit.
    pub fn new(per_s: u32, worker_per_s: u32) -> Self {
        let f = |r: u32| (f64::from(r), f64::from(r) * 2.0);
        Self {
            general: f(per_s),
            workers: f(worker_per_s),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request from `caller`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn check(&self, caller: &Caller) -> Result<(), u64> {
        let (rate, burst) = if caller.role == Role::Worker {
            self.workers
        } else {
            self.general
        };
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (tokens, last) = buckets.entry(caller.name.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// 401 (answered with `WWW-Authenticate: Bearer`).
pub fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, detail)
}

/// The bearer token of a request: the `Authorization` header, or on the event
/// streams (which browsers open without headers) `?access_token=`.
fn bearer(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    if parts.uri.path().starts_with("/v1/events") {
        let q = parts.uri.query()?;
        return q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "access_token").then(|| percent_decode(v))
        });
    }
    None
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What authenticating a request needs of the server's state.
#[derive(Clone)]
pub struct AuthState {
    /// Tokens and the access-token key.
    pub config: std::sync::Arc<crate::config::ServerConfig>,
    /// Per-caller rate limits.
    pub limiter: std::sync::Arc<RateLimiter>,
    /// Time, for access-token expiry.
    pub clock: std::sync::Arc<dyn brigade_core::Clock>,
}

impl AuthState {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Authenticate and rate-limit the caller of a request.
pub fn authenticate(parts: &Parts, state: &AuthState) -> Result<Caller, ApiError> {
    let auth = &state.config.auth;
    if auth.is_open() {
        // Open mode (loopback or --insecure, no tokens configured): everyone is an admin.
        return Ok(Caller {
            name: String::new(),
            role: Role::Admin,
        });
    }
    let token = bearer(parts)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("this route needs Authorization: Bearer <token>"))?;
    let caller = auth
        .authenticate(&token, state.now())
        .map_err(unauthorized)?;
    if let Err(secs) = state.limiter.check(&caller) {
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{} is over its rate limit; slow down", caller.name),
        );
        err.retry_after = Some(secs);
        return Err(err);
    }
    Ok(caller)
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AuthState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts, &AuthState::from_ref(state))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn access_tokens_round_trip_and_expire() {
        let (secret, _) = generate_secret();
        let entry = TokenEntry {
            name: "alice".into(),
            role: Role::Client,
            hash: hash_secret(&secret),
        };
        let auth = AuthConfig::new(vec![entry.clone()], None);
        let t = auth.issue(&entry, 1_000_000);
        let c = auth.authenticate(&t, 1_000_000).unwrap();
        assert_eq!((c.name.as_str(), c.role), ("alice", Role::Client));
        assert!(auth.authenticate(&t, 1_000_000 + 3_600_000).is_err());
        // Issued late in a second, a token still lives its whole TTL.
        let late = auth.issue(&entry, 1_000_999);
        assert!(auth.authenticate(&late, 1_000_999 + 3_599_999).is_ok());
        let mut forged = t.clone();
        forged.push('A');
        assert!(auth.authenticate(&forged, 1_000_000).is_err());
        assert_eq!(auth.authenticate(&secret, 0).unwrap().name, "alice");
        assert!(auth.authenticate("nope", 0).is_err());
        assert_eq!(percent_decode("a%2Fb+c%"), "a/b c%");
    }
}
