//! Bearer tokens (RFC 6750) for the routes that give out orders.
//!
//! The operator lists the callers in `API_TOKENS_FILE`, one a line:
//!
//! ```text
//! # name:token, or name:sha256:<hex of the token's SHA-256>
//! support-desk:8c1d0e7f4a2b9d6e5f3a1c0b
//! billing:sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
//! ```
//!
//! Every token is kept only as its SHA-256 digest, and a presented token is
//! hashed and compared with each digest in constant time, so neither the
//! memory nor the time an answer takes tells an attacker how close a guess
//! was. The name is what logs and metrics show: it comes from the file,
//! never from the request.
//!
//! A reload (SIGHUP) puts a new file in force at once for every request,
//! and ends the event streams opened with a token the new file no longer
//! lists ([`Revocation`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;

use crate::server::Stopped;

/// The shortest token taken: shorter ones can be guessed.
const MIN_TOKEN_LEN: usize = 16;
/// The longest token taken: a header line must stay small.
const MAX_TOKEN_LEN: usize = 1024;
/// The longest caller name: it is a metric label and a log field.
const MAX_NAME_LEN: usize = 64;

/// The callers a tokens file lists.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    name: Arc<str>,
    digest: [u8; 32],
}

impl fmt::Debug for Tokens {
    /// The names only: a digest is as good as a token to print nowhere.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.name))
            .finish()
    }
}

/// Why a tokens file cannot be used, naming the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokensError(String);

impl fmt::Display for TokensError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokensError {}

impl Tokens {
    /// Reads a tokens file's text: `name:token` or `name:sha256:HEX` a
    /// line; blank lines and lines starting with `#` are skipped. Refuses
    /// the whole file on any bad line (a half-read file would lock out
    /// callers without saying why), on a repeated name or token, and on a
    /// file with no token at all.
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |message: String| TokensError(format!("line {}: {message}", index + 1));
            let (name, secret) = line
                .split_once(':')
                .ok_or_else(|| at("expected name:token or name:sha256:HEX".to_owned()))?;
            check_name(name).map_err(at)?;
            let digest = match secret.strip_prefix("sha256:") {
                Some(hex) => parse_digest(hex).map_err(at)?,
                None => {
                    check_token(secret).map_err(at)?;
                    Sha256::digest(secret.as_bytes()).into()
                }
            };
            if entries.iter().any(|e| &*e.name == name) {
                return Err(at(format!("the name {name:?} is listed twice")));
            }
            if entries.iter().any(|e| e.digest == digest) {
                return Err(at(format!(
                    "{name:?} has the same token as another caller: a token must name one caller"
                )));
            }
            entries.push(Entry {
                name: Arc::from(name),
                digest,
            });
        }
        if entries.is_empty() {
            return Err(TokensError(
                "no token in the file: add a line name:token".to_owned(),
            ));
        }
        Ok(Self { entries })
    }

    /// How many callers the file lists.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file lists no caller (never true of a parsed file).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller whose token this is. Every digest is compared, each in
    /// constant time, whether or not one matched already.
    fn caller(&self, token: &str) -> Option<Caller> {
        let digest = Sha256::digest(token.as_bytes());
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(digest.as_slice())) {
                found = Some(Caller {
                    name: Arc::clone(&entry.name),
                    digest: entry.digest,
                });
            }
        }
        found
    }

    /// Whether this file lists the caller's token under the caller's name:
    /// a token removed, given to another name, or replaced under the same
    /// name is no longer the caller's.
    fn lists(&self, caller: &Caller) -> bool {
        self.entries
            .iter()
            .any(|e| e.name == caller.name && bool::from(e.digest.ct_eq(&caller.digest)))
    }
}

/// Who a request's token names.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The name in the file: what logs and metrics show, and the request's
    /// rate-limit bucket.
    name: Arc<str>,
    /// The token's digest, so that a reloaded file can be asked whether it
    /// still lists this very token under this name.
    digest: [u8; 32],
}

impl Caller {
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }
}

impl fmt::Debug for Caller {
    /// The name only, as for [`Tokens`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Caller").field(&self.name).finish()
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "the name {name:?} must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.'"
        ))
    }
}

/// A token a client can send: RFC 6750's `b64token` characters, and long
/// enough not to be guessed.
fn check_token(token: &str) -> Result<(), String> {
    if !is_b64token(token) {
        return Err(
            "a token may hold only letters, digits and - . _ ~ + / (then = at the end)".to_owned(),
        );
    }
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
        return Err(format!(
            "a token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters long \
             (e.g. openssl rand -hex 32)"
        ));
    }
    Ok(())
}

fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let bad = || "expected sha256: and 64 hex digits (printf %s TOKEN | sha256sum)".to_owned();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(digest)
}

/// RFC 6750 section 2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No bearer credentials at all: the client has to sign in.
    Missing,
    /// An `Authorization` header that is not one well-formed bearer token.
    Malformed,
    /// A well-formed token that is not in the file.
    Unknown,
}

impl Denied {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Malformed => "invalid_request",
            Denied::Unknown => "invalid_token",
        }
    }
}

/// The tokens in force. Shared by every connection; a reload replaces the
/// whole set at once, so a request sees the old file or the new one.
#[derive(Debug)]
pub struct Access {
    in_force: RwLock<InForce>,
}

/// One file's tokens, while they are in force.
#[derive(Debug, Clone)]
struct InForce {
    tokens: Arc<Tokens>,
    /// Cancelled when these tokens are replaced: an event stream waits on
    /// it rather than asking again at every event, so learning of a reload
    /// costs a stream one flag read per event.
    replaced: CancellationToken,
}

impl InForce {
    fn new(tokens: Tokens) -> Self {
        Self {
            tokens: Arc::new(tokens),
            replaced: CancellationToken::new(),
        }
    }
}

impl Access {
    pub fn new(tokens: Tokens) -> Self {
        Self {
            in_force: RwLock::new(InForce::new(tokens)),
        }
    }

    /// Puts a newly read file in force, and tells the event streams opened
    /// with the old one to look again.
    pub fn replace(&self, tokens: Tokens) {
        let fresh = InForce::new(tokens);
        let old = match self.in_force.write() {
            Ok(mut slot) => std::mem::replace(&mut *slot, fresh),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), fresh),
        };
        // After the swap, so a stream that looks again sees the new file.
        old.replaced.cancel();
    }

    fn in_force(&self) -> InForce {
        match self.in_force.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn current(&self) -> Arc<Tokens> {
        match self.in_force.read() {
            Ok(slot) => Arc::clone(&slot.tokens),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().tokens),
        }
    }

    /// The caller, if the request carries one known bearer token.
    #[cfg(test)]
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Result<Caller, Denied> {
        self.caller(bearer(headers)?)
    }

    /// The caller whose token this is (a token [`bearer`] let through).
    pub(crate) fn caller(&self, token: &str) -> Result<Caller, Denied> {
        self.current().caller(token).ok_or(Denied::Unknown)
    }
}

/// The one bearer token a request carries, checked for its form only: no
/// token is looked up yet, so this costs a request nothing it could use to
/// guess.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Denied::Missing);
    };
    if values.next().is_some() {
        return Err(Denied::Malformed);
    }
    let value = value.to_str().map_err(|_| Denied::Malformed)?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Credentials of another scheme are no bearer credentials.
        return Err(Denied::Missing);
    }
    let token = token.trim_start_matches(' ');
    if !is_b64token(token) || token.len() > MAX_TOKEN_LEN {
        return Err(Denied::Malformed);
    }
    Ok(token)
}

/// Ready once the tokens in force no longer list the caller's token under
/// its name: what an event stream opened with that token waits on, so that
/// revoking a token (a reloaded file without it) ends the streams it
/// opened. A reload that keeps the caller's line leaves them open.
pub(crate) struct Revocation {
    access: Arc<Access>,
    caller: Caller,
    /// Ready when the file the caller was last checked against is replaced.
    replaced: Stopped,
    /// Whether that file no longer listed the caller.
    revoked: bool,
}

impl Revocation {
    /// Checked against the file in force now: one reloaded between the
    /// request's sign-in and this call is not missed.
    pub(crate) fn new(access: Arc<Access>, caller: Caller) -> Self {
        let in_force = access.in_force();
        Self {
            revoked: !in_force.tokens.lists(&caller),
            replaced: Stopped::new(in_force.replaced),
            access,
            caller,
        }
    }
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("caller", &self.caller)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

impl Future for Revocation {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        while !this.revoked {
            ready!(Pin::new(&mut this.replaced).poll(cx));
            let in_force = this.access.in_force();
            this.revoked = !in_force.tokens.lists(&this.caller);
            this.replaced = Stopped::new(in_force.replaced);
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use std::time::Duration;
    use tokio::time::timeout;

    const ALICE: &str = "alice-token-0123456789";
    const BOB: &str = "bob-token-abcdefghijkl";

    fn sha256_hex(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    fn access() -> Access {
        let file = format!(
            "# callers\n\nalice:{ALICE}\n  bob:sha256:{}  \n",
            sha256_hex(BOB).to_uppercase()
        );
        Access::new(Tokens::parse(&file).expect("tokens"))
    }

    #[test]
    fn a_listed_token_clear_or_hashed_names_its_caller() {
        let access = access();
        let name = access.authorize(&headers(&[&format!("Bearer {ALICE}")]));
        assert_eq!(name.map(|c| c.name), Ok("alice".into()));
        let name = access.authorize(&headers(&[&format!("bearer  {BOB}")]));
        assert_eq!(name.map(|c| c.name), Ok("bob".into()));
    }

    #[test]
    fn requests_without_bearer_credentials_are_told_to_sign_in() {
        let access = access();
        assert_eq!(access.authorize(&headers(&[])), Err(Denied::Missing));
        assert_eq!(
            access.authorize(&headers(&["Basic YWxpY2U6cGFzcw=="])),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn unknown_and_malformed_tokens_are_told_apart() {
        let access = access();
        for unknown in [
            "Bearer alice-token-0123456788",
            "Bearer YWxpY2UtdG9rZW4=",
            // The digest itself is not the token.
            &format!("Bearer {}", sha256_hex(BOB)),
        ] {
            assert_eq!(
                access.authorize(&headers(&[unknown])),
                Err(Denied::Unknown),
                "{unknown}"
            );
        }
        for malformed in ["Bearer", "Bearer ", "Bearer a b", "Bearer ===", "Bearer é"] {
            assert_eq!(
                access.authorize(&headers(&[malformed])),
                Err(Denied::Malformed),
                "{malformed}"
            );
        }
        let twice = headers(&[&format!("Bearer {ALICE}"), &format!("Bearer {ALICE}")]);
        assert_eq!(access.authorize(&twice), Err(Denied::Malformed));
    }

    #[test]
    fn a_replaced_file_is_in_force_at_once() {
        let access = access();
        access.replace(Tokens::parse(&format!("carol:{BOB}")).expect("tokens"));
        let alice = headers(&[&format!("Bearer {ALICE}")]);
        assert_eq!(access.authorize(&alice), Err(Denied::Unknown));
        let bob = headers(&[&format!("Bearer {BOB}")]);
        assert_eq!(access.authorize(&bob).map(|c| c.name), Ok("carol".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_revokes_the_callers_it_no_longer_lists_and_only_those() {
        let access = Arc::new(access());
        let as_caller = |token: &str| {
            access
                .authorize(&headers(&[&format!("Bearer {token}")]))
                .expect("listed")
        };
        let mut alice = std::pin::pin!(Revocation::new(Arc::clone(&access), as_caller(ALICE)));
        let mut bob = std::pin::pin!(Revocation::new(Arc::clone(&access), as_caller(BOB)));
        let within = Duration::from_secs(1);
        assert!(timeout(within, alice.as_mut()).await.is_err(), "in force");

        // bob's line unchanged, alice's gone.
        access.replace(Tokens::parse(&format!("bob:{BOB}\ncarol:{ALICE}x")).expect("tokens"));

        timeout(within, alice.as_mut())
            .await
            .expect("alice revoked");
        assert!(timeout(within, bob.as_mut()).await.is_err(), "bob kept");

        // Watching goes on after a reload: bob's token now given to another
        // name is no longer bob's.
        access.replace(Tokens::parse(&format!("robert:{BOB}")).expect("tokens"));
        timeout(within, bob.as_mut()).await.expect("bob revoked");

        // A caller gone between its sign-in and its stream's start is
        // revoked at once.
        let robert = as_caller(BOB);
        access.replace(Tokens::parse(&format!("alice:{ALICE}")).expect("tokens"));
        let late = Revocation::new(Arc::clone(&access), robert);
        timeout(within, late).await.expect("revoked at once");
    }

    #[test]
    fn bad_files_are_refused_naming_the_line() {
        for (file, says) in [
            ("", "no token in the file"),
            ("# only a comment\n", "no token in the file"),
            ("alice", "line 1: expected name:token"),
            ("\nalice:short", "line 2: a token must be 16 to 1024"),
            ("alice:has a space in it!!", "line 1: a token may hold only"),
            ("al ice:0123456789abcdef", "line 1: the name \"al ice\""),
            (":0123456789abcdef", "line 1: the name \"\""),
            ("a:sha256:abc", "line 1: expected sha256: and 64 hex digits"),
            (
                "a:0123456789abcdef\na:0123456789abcdeg",
                "line 2: the name \"a\" is listed twice",
            ),
            (
                "a:0123456789abcdef\nb:0123456789abcdef",
                "line 2: \"b\" has the same token",
            ),
        ] {
            let err = Tokens::parse(file).expect_err(file);
            assert!(err.to_string().starts_with(says), "{file:?}: {err}");
        }
    }

    #[test]
    fn printing_the_tokens_shows_names_only() {
        let tokens = Tokens::parse(&format!("alice:{ALICE}")).expect("tokens");
        let printed = format!("{tokens:?}");
        assert_eq!(printed, "[\"alice\"]");
    }
}
