//! RFC 6238 TOTP written for the tests (aws-lc's HMAC-SHA1 and RFC 4226's dynamic
//! truncation), independent of the server's implementation (totp-rs), and checked against the
//! RFC's test vectors. Shared by the suite and the browser tests.

/// RFC 4648 base32 (no padding), as authenticator apps read the secret.
pub(crate) fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u64 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').chars() {
        let v = ALPHABET.find(c.to_ascii_uppercase()).expect("base32") as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// The 6-digit TOTP code of `key` at `unix` seconds (RFC 6238: HMAC-SHA1, 30 s steps,
/// RFC 4226's dynamic truncation).
pub(crate) fn totp(key: &[u8], unix: i64) -> String {
    use aws_lc_rs::hmac;
    let counter = (unix / 30) as u64;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let h = tag.as_ref();
    let offset = usize::from(h[19] & 0x0f);
    let bin = u32::from_be_bytes([
        h[offset] & 0x7f,
        h[offset + 1],
        h[offset + 2],
        h[offset + 3],
    ]);
    format!("{:06}", bin % 1_000_000)
}

#[test]
fn the_tests_totp_matches_rfc_6238_appendix_b() {
    let key = b"12345678901234567890";
    for (t, eight) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(totp(key, t), eight[2..]);
    }
    assert_eq!(
        base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
        b"12345678901234567890"
    );
}
