//! Property tests (proptest, with shrinking) of the parsers every request and configuration
//! goes through: they never panic on any input, and what they accept round-trips (issue 17,
//! point 2: the domain parsers). The session state machine's properties come next.

use std::time::Duration;

use keygate::config::{Rate, format_duration, parse_duration, parse_rate};
use keygate::domain::{Email, Password, SessionId, Username, login_key};
use keygate::token::{LinkToken, MAX_REFRESH_TOKEN_LEN, RefreshToken};
use proptest::prelude::*;

/// Any text, weighted towards what the parsers look at (ASCII punctuation, dots and `@`,
/// look-alike letters, full-width forms, controls).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        "[a-zA-Z0-9._%+-]{1,20}@[a-zA-Z0-9.-]{1,20}(\\.[a-z]{2,6})?",
        "[\\PC&&[^ ]]{0,10}@[\\PC]{0,10}",
        "[аеорсухАЕОРСХa-z０-９Ａ-Ｚ]{1,12}@[a-zａ-ｚ]{1,10}\\.[a-z]{2,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The revocation feed's cursor (issue 27, point 5): any text parses or not without a
    /// panic, and a cursor the server gave parses back to itself.
    #[test]
    fn feed_cursors_never_panic_and_round_trip(raw in text(), after in 0i64.., known in 0usize..100_000) {
        let _ = keygate::auth::FeedCursor::parse(&raw);
        let cursor = keygate::auth::FeedCursor { after, known };
        prop_assert_eq!(keygate::auth::FeedCursor::parse(&cursor.to_string()), Some(cursor));
    }

    #[test]
    fn emails_never_panic_and_normalise_once(raw in text()) {
        if let Ok(email) = Email::parse(&raw) {
            // Normalising the stored form again changes nothing.
            let again = Email::parse(email.as_str()).expect("a stored address parses");
            prop_assert_eq!(again.as_str(), email.as_str());
            prop_assert!(email.as_str().len() <= Email::MAX_LEN);
            prop_assert!(!email.as_str().chars().any(char::is_control));
            // Login looks an address up by exactly its stored form.
            prop_assert_eq!(login_key(&raw), email.as_str());
        } else {
            let _ = login_key(&raw);
        }
    }

    #[test]
    fn ascii_emails_are_case_insensitive(local in "[a-zA-Z0-9._+-]{1,20}", domain in "[a-zA-Z0-9-]{1,20}\\.[a-zA-Z]{2,6}") {
        let raw = format!("{local}@{domain}");
        let lower = Email::parse(&raw.to_ascii_lowercase());
        let upper = Email::parse(&raw.to_ascii_uppercase());
        prop_assert_eq!(lower.map(|e| e.as_str().to_owned()).ok(), upper.map(|e| e.as_str().to_owned()).ok());
    }

    #[test]
    fn usernames_never_panic_and_normalise_once(raw in text()) {
        if let Ok(name) = Username::parse(&raw) {
            let again = Username::parse(name.as_str()).expect("a stored username parses");
            prop_assert_eq!(again.as_str(), name.as_str());
            prop_assert!((3..=32).contains(&name.as_str().chars().count()));
            prop_assert!(name.as_str().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c)));
        }
    }

    #[test]
    fn password_length_is_counted_in_characters(raw in any::<String>(), min in 0usize..20, extra in 0usize..40) {
        let max = min + extra;
        let n = raw.chars().count();
        prop_assert_eq!(Password::new(&raw, min, max).is_ok(), (min..=max).contains(&n));
        prop_assert_eq!(Password::presented(&raw, max).is_ok(), n <= max);
    }

    #[test]
    fn durations_round_trip(secs in 0u64..10_000_000_000, millis in 0u32..1000, ms_precision in any::<bool>()) {
        let d = if ms_precision {
            Duration::from_secs(secs) + Duration::from_millis(u64::from(millis))
        } else {
            Duration::from_secs(secs)
        };
        prop_assert_eq!(parse_duration(&format_duration(d)), Some(d));
    }

    #[test]
    fn duration_and_rate_parsers_never_panic(raw in text()) {
        if let Some(d) = parse_duration(&raw) {
            prop_assert_eq!(parse_duration(&format_duration(d)), Some(d));
        }
        if let Some(rate) = parse_rate(&raw) {
            prop_assert!(rate.count > 0 && !rate.period.is_zero());
            prop_assert_eq!(parse_rate(&rate.to_string()), Some(rate));
        }
    }

    #[test]
    fn rates_round_trip(count in 1u32.., secs in 1u64..100_000_000) {
        let rate = Rate { count, period: Duration::from_secs(secs) };
        prop_assert_eq!(parse_rate(&rate.to_string()), Some(rate));
    }

    #[test]
    fn refresh_and_link_tokens_never_panic_and_round_trip(raw in text(), long in "[a-f0-9.]{129,300}") {
        let _ = RefreshToken::parse(&raw);
        let _ = LinkToken::parse(&raw);
        prop_assert!(RefreshToken::parse(&long).is_none());
        prop_assert!(LinkToken::parse(&long).is_none());
        let token = RefreshToken::generate(SessionId::new());
        let text = token.expose();
        prop_assert!(text.len() <= MAX_REFRESH_TOKEN_LEN);
        let parsed = RefreshToken::parse(&text).expect("its own text parses");
        prop_assert_eq!(parsed.expose(), text);
        prop_assert!(parsed.hash().matches(&token.hash()));
        let link = LinkToken::generate();
        let parsed = LinkToken::parse(&link.expose()).expect("its own text parses");
        prop_assert_eq!(parsed.id(), link.id());
        prop_assert!(parsed.hash().matches(&link.hash()));
    }

    #[test]
    fn a_flipped_character_is_another_token(index in 0usize..76) {
        let token = RefreshToken::generate(SessionId::new());
        let mut text = token.expose().into_bytes();
        let i = index % text.len();
        text[i] = if text[i] == b'A' { b'B' } else { b'A' };
        let text = String::from_utf8(text).unwrap();
        // Unparseable, or another session or secret: never the same token (base64 with
        // non-canonical trailing bits is refused, so no two texts decode alike).
        if let Some(other) = RefreshToken::parse(&text) {
            prop_assert!(
                other.session_id() != token.session_id() || !other.hash().matches(&token.hash())
            );
        }
    }

    #[test]
    fn access_token_verification_never_panics(raw in text(), parts in prop::collection::vec("[A-Za-z0-9_-]{0,60}", 0..5)) {
        let verifier = keygate_verify::Verifier::hs256(
            &[b"0123456789abcdef0123456789abcdef".as_slice()],
            "https://auth.example.com",
            &["keygate"],
        )
        .expect("verifier");
        prop_assert!(verifier.verify(&raw, 1_800_000_000).is_err());
        prop_assert!(verifier.verify(&parts.join("."), 1_800_000_000).is_err());
    }
}

/// Found by `a_flipped_character_is_another_token`: the id's hex was read case-insensitively,
/// so `…A…` and `…a…` were one token under two spellings. Only the canonical one parses now.
#[test]
fn an_upper_case_spelling_of_a_token_is_not_the_token() {
    let token = RefreshToken::generate(SessionId::new());
    let text = token.expose();
    let (id, secret) = text.split_once('.').unwrap();
    let shouted = format!("{}.{secret}", id.to_ascii_uppercase());
    assert_ne!(
        shouted, text,
        "the id has hex letters in some position: {id}"
    );
    assert!(RefreshToken::parse(&shouted).is_none());
    let link = LinkToken::generate().expose();
    let (id, secret) = link.split_once('.').unwrap();
    assert!(
        LinkToken::parse(&format!("{}.{secret}", id.to_ascii_uppercase())).is_none()
            || !id.bytes().any(|b| b.is_ascii_alphabetic())
    );
}
