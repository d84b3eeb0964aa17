//! Who the client is: the TCP peer, or, when the peer is a proxy the
//! operator trusts (`TRUSTED_PROXIES`), the address that proxy says it
//! forwarded the request for (`X-Forwarded-For`, or RFC 7239's
//! `Forwarded: for=`). The rate limit and the access log key on it.
//!
//! Anyone can send these headers, so they are read only from a trusted
//! peer, and only up to the first address a trusted proxy did not itself
//! write: each proxy appends the address it took the request from, so the
//! rightmost address that is not a trusted proxy's is the client, and
//! whatever lies left of it is the client's own claim. A header that
//! cannot be read up to that point, or that hides the address (`unknown`,
//! an obfuscated `_name`), leaves the peer as the client: one bucket for
//! all such requests, never one the sender chose.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use hyper::HeaderMap;
use hyper::header::{FORWARDED, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies whose forwarding headers are believed (`TRUSTED_PROXIES`):
/// CIDR blocks, IPv4 and IPv6. Empty by default: the client is the peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[Cidr]>);

/// One block of addresses, IPv4 held as IPv4-mapped IPv6 (`::ffff:a.b.c.d`,
/// the prefix 96 longer), so that one comparison serves both families and
/// an IPv4 peer seen on a dual-stack listener matches an IPv4 block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: u128,
    prefix: u32,
}

impl Cidr {
    fn contains(self, bits: u128) -> bool {
        (bits ^ self.network) & mask(self.prefix) == 0
    }
}

fn mask(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

/// An address's 128 bits, IPv4 mapped into IPv6 (and an IPv4-mapped IPv6
/// address the same as its IPv4).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// Why `TRUSTED_PROXIES` cannot be used, naming the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProxies(String);

impl fmt::Display for InvalidProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidProxies {}

impl TrustedProxies {
    /// Comma-separated CIDR blocks (`10.0.0.0/8, fd00::/8`), or single
    /// addresses (a block of one); blank entries are skipped, so an empty
    /// list trusts no one. A block with bits set past its prefix
    /// (`10.0.0.1/8`) is refused as the typo it usually is.
    pub fn parse(list: &str) -> Result<Self, InvalidProxies> {
        let mut blocks = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            blocks.push(
                parse_cidr(entry).map_err(|why| InvalidProxies(format!("{entry:?}: {why}")))?,
            );
        }
        Ok(Self(blocks.into()))
    }

    /// Whether no proxy is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let bits = bits(ip);
        self.0.iter().any(|block| block.contains(bits))
    }

    /// The client of a request that came from `peer`. Reads no header
    /// unless the peer is trusted.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.0.is_empty() || !self.trusts(peer) {
            return peer;
        }
        self.forwarded_for(headers).unwrap_or(peer)
    }

    /// The client the forwarding headers name, if they name one. With
    /// both headers, they must agree: a proxy that writes one passes the
    /// other on as the client sent it, and which one a proxy writes is not
    /// known here.
    fn forwarded_for(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let xff = self.walk(headers.get_all(&X_FORWARDED_FOR), Syntax::XForwardedFor);
        let forwarded = self.walk(headers.get_all(FORWARDED), Syntax::Forwarded);
        match (xff, forwarded) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => one,
            (Some(a), Some(b)) => a.filter(|a| Some(*a) == b),
        }
    }

    /// `None` when there is no such header; else the client its chain
    /// names (`Some(None)`: none that can be used).
    fn walk<'a>(
        &self,
        values: impl IntoIterator<Item = &'a HeaderValue>,
        syntax: Syntax,
    ) -> Option<Option<IpAddr>> {
        let mut chain = Chain::default();
        let mut present = false;
        for value in values {
            present = true;
            let Ok(text) = value.to_str() else {
                chain.push(Node::Malformed, self);
                continue;
            };
            // Empty elements are no hops (RFC 9110's list syntax).
            for element in Split::new(text, b',').map(|e| e.trim_matches([' ', '\t'])) {
                let node = match syntax {
                    _ if element.is_empty() => continue,
                    Syntax::XForwardedFor => node(element),
                    Syntax::Forwarded => forwarded_for(element),
                };
                chain.push(node, self);
            }
        }
        present.then(|| chain.client())
    }
}

#[derive(Debug, Clone, Copy)]
enum Syntax {
    /// `X-Forwarded-For: client, proxy1, proxy2`
    XForwardedFor,
    /// RFC 7239: `Forwarded: for=client;proto=https, for="[2001:db8::1]:443"`
    Forwarded,
}

/// One hop of a forwarding chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Addr(IpAddr),
    /// `unknown`, an obfuscated name, or a `Forwarded` element without
    /// `for`: a hop whose address is not told.
    Hidden,
    /// Not a node at all.
    Malformed,
}

/// The chain read left to right, keeping what the rightmost-untrusted
/// rule needs without storing the chain.
#[derive(Debug, Default)]
struct Chain {
    /// The first element, for a chain of trusted proxies alone.
    first: Option<Node>,
    /// The rightmost element so far that is not a trusted proxy's address.
    candidate: Option<Node>,
    /// Whether an element right of the candidate (or, with none, any) is
    /// malformed: the chain cannot be read up to the client.
    broken: bool,
}

impl Chain {
    fn push(&mut self, node: Node, trusted: &TrustedProxies) {
        if self.first.is_none() {
            self.first = Some(node);
        }
        match node {
            Node::Malformed => self.broken = true,
            Node::Addr(ip) if trusted.trusts(ip) => {}
            Node::Addr(_) | Node::Hidden => {
                self.candidate = Some(node);
                self.broken = false;
            }
        }
    }

    /// The rightmost address not a trusted proxy's; with every address
    /// trusted, the leftmost.
    fn client(&self) -> Option<IpAddr> {
        if self.broken {
            return None;
        }
        match self.candidate.or(self.first)? {
            Node::Addr(ip) => Some(ip.to_canonical()),
            Node::Hidden | Node::Malformed => None,
        }
    }
}

/// The `for` of one `Forwarded` element (`for=x;proto=https;by=y`): pairs
/// split on `;` outside quotes, names case-insensitive, values a token or
/// a quoted string. No `for` is a hop that does not say.
fn forwarded_for(element: &str) -> Node {
    let mut found = None;
    for pair in Split::new(element, b';').map(|p| p.trim_matches([' ', '\t'])) {
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return Node::Malformed;
        };
        let Some(value) = unquote(value) else {
            return Node::Malformed;
        };
        if name.eq_ignore_ascii_case("for") {
            if found.is_some() {
                return Node::Malformed;
            }
            found = Some(node(value));
        }
    }
    found.unwrap_or(Node::Hidden)
}

/// A token as is, or a quoted string's inside; `None` for a quote out of
/// place. Escapes are left in: no node holds a backslash, so a node with
/// one is malformed.
fn unquote(value: &str) -> Option<&str> {
    let Some(rest) = value.strip_prefix('"') else {
        return (!value.contains('"')).then_some(value);
    };
    let inner = rest.strip_suffix('"')?;
    let mut escaped = false;
    for byte in inner.bytes() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return None,
            _ => {}
        }
    }
    (!escaped).then_some(inner)
}

/// A node: an address (IPv6 bare or in brackets), with or without a port
/// (`1.2.3.4:80`, `[::1]:80`, or an obfuscated `_port`), or `unknown`, or an
/// obfuscated `_name`.
fn node(text: &str) -> Node {
    if text.eq_ignore_ascii_case("unknown") || is_obfuscated(text) {
        return Node::Hidden;
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Node::Addr(ip);
    }
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, "")) => (v6, None),
            Some((v6, port)) => match port.strip_prefix(':') {
                Some(port) => (v6, Some(port)),
                None => return Node::Malformed,
            },
            None => return Node::Malformed,
        },
        None => match text.rsplit_once(':') {
            // IPv4 with a port; a bare IPv6 address parsed above.
            Some((v4, port)) if !v4.contains(':') => (v4, Some(port)),
            _ => return Node::Malformed,
        },
    };
    let port_ok = port.is_none_or(|p| {
        (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())) || is_obfuscated(p)
    });
    let bracketed = text.starts_with('[');
    match (port_ok, bracketed) {
        (true, true) => host
            .parse::<Ipv6Addr>()
            .map_or(Node::Malformed, |v6| Node::Addr(v6.into())),
        (true, false) => host
            .parse::<std::net::Ipv4Addr>()
            .map_or(Node::Malformed, |v4| Node::Addr(v4.into())),
        (false, _) => Node::Malformed,
    }
}

/// RFC 7239's `obfnode` / `obfport`: `_` then letters, digits, `.`, `_`, `-`.
fn is_obfuscated(text: &str) -> bool {
    text.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

/// Splits on `separator` outside double quotes (a backslash escapes the
/// next character inside them). Borrows; allocates nothing.
struct Split<'a> {
    rest: Option<&'a str>,
    separator: u8,
}

impl<'a> Split<'a> {
    fn new(text: &'a str, separator: u8) -> Self {
        Self {
            rest: Some(text),
            separator,
        }
    }
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (at, byte) in text.bytes().enumerate() {
            match byte {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b if b == self.separator && !quoted => {
                    // The separator is ASCII: `at` and `at + 1` are char
                    // boundaries.
                    self.rest = text.get(at + 1..);
                    return text.get(..at);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(text)
    }
}

fn parse_cidr(entry: &str) -> Result<Cidr, String> {
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (entry, None),
    };
    let ip: IpAddr = address.parse().map_err(|_| {
        "expected an address or a CIDR block (10.0.0.0/8, 192.168.1.10, fd00::/8)".to_owned()
    })?;
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => width,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|p| *p <= width && !raw.starts_with('+'))
            .ok_or_else(|| format!("the prefix must be a whole number from 0 to {width}"))?,
    };
    // IPv4 sits in the last 32 of the 128 bits.
    let prefix_of_128 = prefix + (128 - width);
    let block = Cidr {
        network: bits(ip) & mask(prefix_of_128),
        prefix: prefix_of_128,
    };
    if block.network != bits(ip) {
        let network = match ip {
            IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(block.network as u32)),
            IpAddr::V6(_) => IpAddr::from(Ipv6Addr::from(block.network)),
        };
        return Err(format!(
            "has bits set past the /{prefix} prefix (the block is {network}/{prefix})"
        ));
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &str) -> TrustedProxies {
        TrustedProxies::parse(list).expect("a valid list")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    /// The client of a request from `peer` with these header lines.
    fn client(trusted: &TrustedProxies, peer: &str, lines: &[(&str, &[u8])]) -> IpAddr {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("a name"),
                HeaderValue::from_bytes(value).expect("a value"),
            );
        }
        trusted.client(ip(peer), &headers)
    }

    #[test]
    fn blocks_of_both_families_parse_and_hold_their_addresses() {
        let list = proxies(" 10.0.0.0/8, 192.168.1.10 ,fd00::/8,, 2001:db8::1 ");
        for inside in [
            "10.1.2.3",
            "192.168.1.10",
            "fd12::1",
            "2001:db8::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(list.trusts(ip(inside)), "{inside}");
        }
        for outside in [
            "11.0.0.1",
            "192.168.1.11",
            "fe80::1",
            "2001:db8::2",
            "::a00:1",
        ] {
            assert!(!list.trusts(ip(outside)), "{outside}");
        }
        assert!(proxies("").is_empty() && proxies(" , ").is_empty());
        assert!(proxies("0.0.0.0/0").trusts(ip("203.0.113.7")));
        assert!(
            !proxies("0.0.0.0/0").trusts(ip("2001:db8::7")),
            "IPv4's /0 is IPv4 only"
        );
        assert!(proxies("::/0").trusts(ip("2001:db8::7")));
    }

    #[test]
    fn malformed_blocks_are_refused_naming_the_entry() {
        for (list, says) in [
            ("10.0.0.0/8,nope", "\"nope\": expected an address"),
            (
                "10.0.0.0/33",
                "\"10.0.0.0/33\": the prefix must be a whole number from 0 to 32",
            ),
            ("fd00::/129", "from 0 to 128"),
            ("10.0.0.0/", "the prefix must be"),
            ("10.0.0.0/+8", "the prefix must be"),
            ("10.0.0.0/8/8", "the prefix must be"),
            (
                "10.0.0.1/8",
                "\"10.0.0.1/8\": has bits set past the /8 prefix (the block is 10.0.0.0/8)",
            ),
            ("fd00::1/8", "(the block is fd00::/8)"),
            ("10.0.0.0 /8", "expected an address"),
            ("[::1]", "expected an address"),
        ] {
            let err = TrustedProxies::parse(list).expect_err(list).to_string();
            assert!(err.contains(says), "{list}: {err}");
        }
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_forwarded_address() {
        let trusted = proxies("10.0.0.0/8");
        let xff = |value: &'static str| [("x-forwarded-for", value.as_bytes())];
        let seen = |value| client(&trusted, "10.0.0.1", &xff(value));
        assert_eq!(seen("203.0.113.7"), ip("203.0.113.7"));
        // A forged start is left of the client, never read past it.
        assert_eq!(seen("1.1.1.1, 203.0.113.7"), ip("203.0.113.7"));
        assert_eq!(seen("garbage, 203.0.113.7, 10.0.0.2"), ip("203.0.113.7"));
        // Proxies of our own are skipped; all of them: the leftmost.
        assert_eq!(seen("203.0.113.7,10.0.0.3 , 10.0.0.2"), ip("203.0.113.7"));
        assert_eq!(seen("10.0.0.3, 10.0.0.2"), ip("10.0.0.3"));
        // Ports, brackets, IPv6, IPv4-mapped.
        assert_eq!(seen("203.0.113.7:5555"), ip("203.0.113.7"));
        assert_eq!(seen("[2001:db8::7]:443"), ip("2001:db8::7"));
        assert_eq!(seen("2001:db8::7"), ip("2001:db8::7"));
        assert_eq!(seen("::ffff:203.0.113.7"), ip("203.0.113.7"));
        // From a peer not trusted, the headers are not read at all.
        assert_eq!(
            client(&trusted, "192.0.2.1", &xff("203.0.113.7")),
            ip("192.0.2.1")
        );
        assert_eq!(
            client(&proxies(""), "10.0.0.1", &xff("203.0.113.7")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn repeated_headers_are_one_list_in_their_order() {
        let trusted = proxies("10.0.0.0/8");
        let lines: [(&str, &[u8]); 3] = [
            ("x-forwarded-for", b"198.51.100.1"),
            ("x-forwarded-for", b"203.0.113.7, 10.0.0.4"),
            ("x-forwarded-for", b"10.0.0.3"),
        ];
        assert_eq!(client(&trusted, "10.0.0.1", &lines), ip("203.0.113.7"));
        let lines: [(&str, &[u8]); 2] = [
            ("x-forwarded-for", b"203.0.113.7"),
            ("x-forwarded-for", b"10.0.0.3, 198.51.100.1"),
        ];
        assert_eq!(client(&trusted, "10.0.0.1", &lines), ip("198.51.100.1"));
    }

    #[test]
    fn forwarded_is_read_as_rfc_7239_writes_it() {
        let trusted = proxies("10.0.0.0/8, fd00::/8");
        let seen = |value: &str| client(&trusted, "10.0.0.1", &[("forwarded", value.as_bytes())]);
        assert_eq!(seen("for=203.0.113.7"), ip("203.0.113.7"));
        assert_eq!(
            seen("For=\"203.0.113.7:80\";proto=https"),
            ip("203.0.113.7")
        );
        assert_eq!(
            seen("for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\""),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            seen("for=203.0.113.7, for=\"[fd00::2]\";by=x"),
            ip("203.0.113.7")
        );
        assert_eq!(
            seen("proto=https;host=\"a,b;c\";for=203.0.113.7"),
            ip("203.0.113.7")
        );
        assert_eq!(seen("for=203.0.113.7:_hidden-port"), ip("203.0.113.7"));
        // A hop that hides its client: the peer, not an address to the left.
        for hidden in [
            "for=203.0.113.7, for=unknown",
            "for=203.0.113.7, for=_gazonk",
            "for=203.0.113.7, proto=https",
            "for=\"_x.y\"",
        ] {
            assert_eq!(seen(hidden), ip("10.0.0.1"), "{hidden}");
        }
    }

    #[test]
    fn hostile_forwarding_headers_fall_back_to_the_peer_and_never_panic() {
        let trusted = proxies("10.0.0.0/8, fd00::/8");
        let peer = ip("10.0.0.1");
        let huge_garbage = "x,".repeat(8_000);
        let huge_trusted = "10.0.0.9, ".repeat(1_500) + "10.0.0.8";
        let huge_forged = "1.2.3.4, ".repeat(1_500) + "203.0.113.7";
        let cases: Vec<(&str, Vec<u8>, IpAddr)> = vec![
            ("x-forwarded-for", b"".to_vec(), peer),
            ("x-forwarded-for", b" , ,".to_vec(), peer),
            ("x-forwarded-for", b"203.0.113.7, garbage".to_vec(), peer),
            (
                "x-forwarded-for",
                b"203.0.113.7, 10.0.0.2 extra".to_vec(),
                peer,
            ),
            ("x-forwarded-for", b"999.1.1.1".to_vec(), peer),
            ("x-forwarded-for", b"203.0.113.7:99999999".to_vec(), peer),
            ("x-forwarded-for", b"203.0.113.7:".to_vec(), peer),
            ("x-forwarded-for", b"[2001:db8::7".to_vec(), peer),
            ("x-forwarded-for", b"[2001:db8::7]x".to_vec(), peer),
            ("x-forwarded-for", b"[203.0.113.7]".to_vec(), peer),
            ("x-forwarded-for", b"2001:db8::7:80:1:2:3:4".to_vec(), peer),
            ("x-forwarded-for", b"unknown".to_vec(), peer),
            (
                "x-forwarded-for",
                "203.0.113.7, \u{0660}.1.1.1".as_bytes().to_vec(),
                peer,
            ),
            ("x-forwarded-for", b"\xff\xfe".to_vec(), peer),
            ("x-forwarded-for", huge_garbage.into_bytes(), peer),
            ("x-forwarded-for", huge_trusted.into_bytes(), ip("10.0.0.9")),
            (
                "x-forwarded-for",
                huge_forged.into_bytes(),
                ip("203.0.113.7"),
            ),
            ("forwarded", b"for=".to_vec(), peer),
            ("forwarded", b"for".to_vec(), peer),
            ("forwarded", b"for=\"203.0.113.7".to_vec(), peer),
            ("forwarded", b"for=203.0.113.7\"".to_vec(), peer),
            ("forwarded", b"for=\"\\\"\"".to_vec(), peer),
            ("forwarded", b"for=\"[2001:db8::7]:80\\\"\"".to_vec(), peer),
            (
                "forwarded",
                b"for=203.0.113.7;for=198.51.100.1".to_vec(),
                peer,
            ),
            (
                "forwarded",
                b"for=[2001:db8::7]".to_vec(),
                ip("2001:db8::7"),
            ),
            ("forwarded", b";;;,,,\"".to_vec(), peer),
            ("forwarded", b"\"".to_vec(), peer),
            ("forwarded", b"for=\"\\".to_vec(), peer),
        ];
        for (name, value, want) in cases {
            let shown = String::from_utf8_lossy(&value)
                .chars()
                .take(60)
                .collect::<String>();
            assert_eq!(
                client(&trusted, "10.0.0.1", &[(name, &value)]),
                want,
                "{name}: {shown}"
            );
        }
    }

    #[test]
    fn both_headers_must_agree() {
        let trusted = proxies("10.0.0.0/8");
        let both = |xff: &'static str, fwd: &'static str| {
            client(
                &trusted,
                "10.0.0.1",
                &[
                    ("x-forwarded-for", xff.as_bytes()),
                    ("forwarded", fwd.as_bytes()),
                ],
            )
        };
        assert_eq!(both("203.0.113.7", "for=203.0.113.7"), ip("203.0.113.7"));
        // A proxy that writes one passes the other on as the client sent it.
        assert_eq!(both("203.0.113.7", "for=198.51.100.1"), ip("10.0.0.1"));
        assert_eq!(both("203.0.113.7", "for=unknown"), ip("10.0.0.1"));
    }
}
