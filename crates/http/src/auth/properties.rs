//! Properties of the `Authorization` header's parsing and of the tokens
//! file, on generated input: schemes in any case, any run of spaces, tokens
//! of every length around the bounds (0, 15, 16, 1024, 1025), near misses
//! of a listed token, bytes that are not ASCII, repeated headers. A request
//! is let in only with exactly a listed token; every refusal is one of the
//! three RFC 6750 answers; nothing panics.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use super::*;

/// The default 256 cases; failures are not persisted next to the source.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob/token+ABCDEFGHIJ==";

fn access() -> Access {
    Access::new(Tokens::parse(&format!("alice:{ALICE}\nbob:{BOB}\n")).expect("tokens"))
}

/// A token as a client may send one: a listed one, a near miss of it, or
/// b64token characters (and others) of a length around the bounds.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![ALICE, BOB]).prop_map(str::to_owned),
        (
            prop::sample::select(vec![ALICE, BOB]),
            any::<prop::sample::Index>(),
            any::<char>()
        )
            .prop_map(|(t, at, c)| {
                let mut chars: Vec<char> = t.chars().collect();
                let i = at.index(chars.len());
                chars[i] = c;
                chars.into_iter().collect()
            }),
        (
            prop::sample::select(vec![0usize, 1, 15, 16, 17, 1023, 1024, 1025, 4096]),
            "[A-Za-z0-9._~+/-]"
        )
            .prop_map(|(n, c)| c.repeat(n)),
        "[A-Za-z0-9._~+/=-]{0,40}",
        any::<String>(),
    ]
}

/// An `Authorization` value: a scheme in any case (or none), spaces or a
/// tab, and a token.
fn authorization() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            "Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearer:", "", "Token",
        ]),
        prop::sample::select(vec!["", " ", "  ", "\t", " \t"]),
        token(),
    )
        .prop_map(|(scheme, gap, token)| format!("{scheme}{gap}{token}").into_bytes())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn only_exactly_a_listed_token_names_a_caller(
        values in prop::collection::vec(authorization(), 0..3),
    ) {
        let mut headers = HeaderMap::new();
        for value in &values {
            // hyper lets in no value with control characters but tab.
            if let Ok(value) = hyper::header::HeaderValue::from_bytes(value) {
                headers.append(AUTHORIZATION, value);
            }
        }

        let outcome = access().authorize(&headers);

        let sent: Vec<&[u8]> = headers.get_all(AUTHORIZATION).iter().map(|v| v.as_bytes()).collect();
        match outcome {
            Ok(name) => {
                prop_assert_eq!(sent.len(), 1);
                let text = std::str::from_utf8(sent[0]).expect("ASCII");
                let (scheme, rest) = text.split_once(' ').expect("a scheme and a token");
                prop_assert!(scheme.eq_ignore_ascii_case("bearer"), "{}", text);
                let listed = if &**name.name() == "alice" { ALICE } else { BOB };
                prop_assert_eq!(rest.trim_start_matches(' '), listed);
            }
            Err(denied) => {
                prop_assert!(!denied.label().is_empty());
                if sent.is_empty() {
                    prop_assert_eq!(denied, Denied::Missing);
                }
                if sent.len() > 1 {
                    prop_assert_eq!(denied, Denied::Malformed);
                }
                if denied == Denied::Unknown {
                    // A well-formed bearer token, but none of the listed ones.
                    let text = std::str::from_utf8(sent[0]).expect("ASCII");
                    let token = text.split_once(' ').map_or("", |(_, t)| t.trim_start_matches(' '));
                    prop_assert!(token != ALICE && token != BOB, "{} refused", text);
                }
            }
        }
    }

    #[test]
    fn a_tokens_file_is_read_whole_or_refused_naming_the_line(
        lines in prop::collection::vec(
            prop_oneof![
                ("[a-z][a-z0-9_.-]{0,8}", token()).prop_map(|(n, t)| format!("{n}:{t}")),
                ("[a-z]{1,8}", "[0-9a-fA-F]{60,68}").prop_map(|(n, h)| format!("{n}:sha256:{h}")),
                prop::sample::select(vec!["", "# a comment", "   ", "no-colon", ":", "a:", "\u{0}:x"])
                    .prop_map(str::to_owned),
                any::<String>(),
            ],
            0..6,
        ),
    ) {
        let text = lines.join("\n");

        match Tokens::parse(&text) {
            Ok(tokens) => {
                prop_assert!(!tokens.is_empty());
                // Printing shows names, never a token or its digest.
                let printed = format!("{tokens:?}");
                for line in text.lines() {
                    if let Some((_, secret)) = line.trim().split_once(':') {
                        prop_assert!(!printed.contains(secret), "{} printed", secret);
                    }
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(
                    message.starts_with("line ") || message.starts_with("no token in the file"),
                    "{}",
                    message
                );
            }
        }
    }
}
