//! Request signing of the `/v1` API (`JCS-HMAC-SHA256`, in the manner of AWS SigV4): the
//! pure algorithm shared by the gateway (which verifies) and clients (which sign). The
//! specification, with a worked example, is in `docs/api.md` ("Authentication"); the test
//! `worked_example_of_the_docs` checks that example.
//!
//! ```text
//! canonical request = METHOD \n CANONICAL_URI \n CANONICAL_QUERY \n
//!                     CANONICAL_HEADERS (name:value\n each) \n SIGNED_HEADERS \n PAYLOAD_HASH
//! string to sign    = "JCS-HMAC-SHA256" \n X-JCS-DATE \n YYYYMMDD/jcs \n hex(sha256(canonical request))
//! signing key       = HMAC(HMAC("JCS" + secret, YYYYMMDD), "jcs_request")
//! signature         = hex(HMAC(signing key, string to sign))
//! Authorization: JCS-HMAC-SHA256 Credential=<id>/<YYYYMMDD>/jcs, SignedHeaders=<h1;h2;…>, Signature=<hex>
//! ```

use std::fmt::Write as _;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The algorithm name: first word of `Authorization` and first line of the string to sign.
pub const ALGORITHM: &str = "JCS-HMAC-SHA256";
/// Header with the request time, `YYYYMMDDTHHMMSSZ` (UTC).
pub const DATE_HEADER: &str = "x-jcs-date";
/// Header with the lower-case hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
pub const CONTENT_SHA256_HEADER: &str = "x-jcs-content-sha256";
/// Payload hash of a body that is not hashed (streamed uploads).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Last part of the credential scope.
pub const SERVICE: &str = "jcs";
/// Terminator of the signing-key derivation.
pub const TERMINATOR: &str = "jcs_request";
/// Headers every signature must cover.
pub const REQUIRED_SIGNED_HEADERS: [&str; 3] = ["host", CONTENT_SHA256_HEADER, DATE_HEADER];
/// Lower-case hex SHA-256 of the empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Whether `b` is left as is by [`uri_encode`]: `A-Z a-z 0-9 - . _ ~`.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encode every byte except the unreserved ones (and `/` when `keep_slash`), with
/// upper-case hex digits.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decode `%XX` escapes (and `+` as a space when `plus_is_space`); a `%` not followed by two
/// hex digits stays as is.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
                let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical URI: the path percent-decoded, then encoded with [`uri_encode`] keeping `/`
/// (so `/v1/a%20b` and `/v1/a b` sign alike); `/` when empty.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    uri_encode(&percent_decode(path, false), true)
}

/// The canonical query: `&`-separated pairs split at the first `=` (a missing `=` means an
/// empty value), names and values decoded as `application/x-www-form-urlencoded` (`+` is a
/// space) and re-encoded with [`uri_encode`], sorted by name then value, joined by `&`.
/// Empty pairs are dropped.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(n, true), false),
                uri_encode(&percent_decode(v, true), false),
            )
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(n);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// A header value as signed: surrounding whitespace trimmed, inner runs of spaces and tabs
/// collapsed to one space.
pub fn canonical_header_value(value: &str) -> String {
    value
        .split([' ', '\t'])
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What is signed of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestParts<'a> {
    /// `GET`, `POST`, … (upper case).
    pub method: &'a str,
    /// The path as sent (may be percent-encoded).
    pub path: &'a str,
    /// The raw query string without `?` (empty when none).
    pub query: &'a str,
    /// The signed headers: lower-case names with their values (several values of one name
    /// joined by `,`), in any order.
    pub headers: Vec<(String, String)>,
    /// The value of `x-jcs-content-sha256`.
    pub payload_hash: &'a str,
}

/// The canonical request of `parts` and its `SignedHeaders` list.
pub fn canonical_request(parts: &RequestParts<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), canonical_header_value(v)))
        .collect();
    headers.sort();
    let signed = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical = String::new();
    canonical.push_str(&parts.method.to_ascii_uppercase());
    canonical.push('\n');
    canonical.push_str(&canonical_uri(parts.path));
    canonical.push('\n');
    canonical.push_str(&canonical_query(parts.query));
    canonical.push('\n');
    for (n, v) in &headers {
        canonical.push_str(n);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(parts.payload_hash);
    (canonical, signed)
}

/// The string to sign for a canonical request made at `date_time` (`YYYYMMDDTHHMMSSZ`).
pub fn string_to_sign(date_time: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{date_time}\n{}\n{}",
        scope(day_of(date_time)),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The credential scope `YYYYMMDD/jcs`.
pub fn scope(day: &str) -> String {
    format!("{day}/{SERVICE}")
}

/// The `YYYYMMDD` part of `YYYYMMDDTHHMMSSZ` (the whole text when shorter).
pub fn day_of(date_time: &str) -> &str {
    date_time.get(..8).unwrap_or(date_time)
}

/// `HMAC(HMAC("JCS" + secret, day), "jcs_request")`.
pub fn signing_key(secret: &Secret, day: &str) -> Vec<u8> {
    let k_date = hmac(format!("JCS{}", secret.expose()).as_bytes(), day.as_bytes());
    hmac(&k_date, TERMINATOR.as_bytes())
}

/// Hex signature of `string_to_sign` under `secret` for `day`.
pub fn signature(secret: &Secret, day: &str, string_to_sign: &str) -> String {
    hex::encode(hmac(&signing_key(secret, day), string_to_sign.as_bytes()))
}

/// Constant-time check of a hex `signature` (as sent) against `string_to_sign`.
pub fn verify(secret: &Secret, day: &str, string_to_sign: &str, signature: &str) -> bool {
    let Ok(given) = hex::decode(signature) else {
        return false;
    };
    let mut m = HmacSha256::new_from_slice(&signing_key(secret, day))
        .expect("HMAC accepts keys of any length");
    m.update(string_to_sign.as_bytes());
    m.verify_slice(&given).is_ok()
}

/// The `Authorization` value of a signature.
pub fn authorization(access_key_id: &str, day: &str, signed_headers: &str, sig: &str) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={signed_headers}, Signature={sig}",
        scope(day)
    )
}

/// Sign `parts` (whose headers must include `host`, `x-jcs-date` and
/// `x-jcs-content-sha256`) at `date_time`: the `Authorization` header value.
pub fn sign(
    access_key_id: &str,
    secret: &Secret,
    date_time: &str,
    parts: &RequestParts<'_>,
) -> String {
    let (canonical, signed) = canonical_request(parts);
    let day = day_of(date_time);
    let sts = string_to_sign(date_time, &canonical);
    authorization(access_key_id, day, &signed, &signature(secret, day, &sts))
}

/// A parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub day: String,
    /// Lower-case header names, in the order given.
    pub signed_headers: Vec<String>,
    /// Hex signature as sent.
    pub signature: String,
}

/// Parse `JCS-HMAC-SHA256 Credential=<id>/<day>/jcs, SignedHeaders=<a;b>, Signature=<hex>`;
/// the error says what is wrong (never echoing the signature).
pub fn parse_authorization(value: &str) -> Result<Authorization, String> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| format!("Authorization must start with \"{ALGORITHM} \""))?;
    let (mut credential, mut signed, mut sig) = (None, None, None);
    for field in rest.split(',') {
        let field = field.trim();
        let (name, v) = field
            .split_once('=')
            .ok_or_else(|| "Authorization fields are Name=value pairs".to_owned())?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return Err(format!("unknown Authorization field {name:?}")),
        };
        if slot.replace(v).is_some() {
            return Err(format!("Authorization field {name} given twice"));
        }
    }
    let credential = credential.ok_or("Authorization lacks Credential")?;
    let signed = signed.ok_or("Authorization lacks SignedHeaders")?;
    let sig = sig.ok_or("Authorization lacks Signature")?;
    let mut cred = credential.split('/');
    let (Some(id), Some(day), Some(service), None) =
        (cred.next(), cred.next(), cred.next(), cred.next())
    else {
        return Err("Credential must be <access key id>/<YYYYMMDD>/jcs".to_owned());
    };
    if id.is_empty()
        || day.len() != 8
        || !day.bytes().all(|b| b.is_ascii_digit())
        || service != SERVICE
    {
        return Err("Credential must be <access key id>/<YYYYMMDD>/jcs".to_owned());
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err("SignedHeaders must be lower-case names separated by ';'".to_owned());
    }
    Ok(Authorization {
        access_key_id: id.to_owned(),
        day: day.to_owned(),
        signed_headers,
        signature: sig.to_owned(),
    })
}

/// `YYYYMMDDTHHMMSSZ` of Unix seconds.
pub fn format_date_time(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (y, m, d) = crate::time::civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Unix seconds of `YYYYMMDDTHHMMSSZ`; `None` when malformed.
pub fn parse_date_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = crate::time::days_from_civil(y, mo, d);
    if crate::time::civil_from_days(days) != (y, mo, d) {
        return None;
    }
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

/// Now as `YYYYMMDDTHHMMSSZ`.
pub fn now_date_time() -> String {
    format_date_time(crate::time::now_ms().div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> RequestParts<'static> {
        RequestParts {
            method: "GET",
            path: "/v1/object/listByPath",
            query: "path=dir%2Fa+b.txt&packageID=7&isPrefix=true",
            headers: vec![
                ("Host".into(), "127.0.0.1:7890".into()),
                ("x-jcs-date".into(), "20260130T120000Z".into()),
                ("x-jcs-content-sha256".into(), EMPTY_SHA256.into()),
            ],
            payload_hash: EMPTY_SHA256,
        }
    }

    /// The worked example of docs/api.md, value by value.
    #[test]
    fn worked_example_of_the_docs() {
        let (canonical, signed) = canonical_request(&example());
        assert_eq!(
            canonical,
            "GET\n/v1/object/listByPath\nisPrefix=true&packageID=7&path=dir%2Fa%20b.txt\n\
             host:127.0.0.1:7890\n\
             x-jcs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-jcs-date:20260130T120000Z\n\n\
             host;x-jcs-content-sha256;x-jcs-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "host;x-jcs-content-sha256;x-jcs-date");
        let sts = string_to_sign("20260130T120000Z", &canonical);
        assert_eq!(
            sts,
            "JCS-HMAC-SHA256\n20260130T120000Z\n20260130/jcs\n\
             e58405c92085f401183323b10ac8ff272d30126114732415413c834966189572"
        );
        let secret = Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let auth = sign(
            "JCSKEXAMPLE0000001",
            &secret,
            "20260130T120000Z",
            &example(),
        );
        assert_eq!(auth, EXAMPLE_AUTHORIZATION);
        let parsed = parse_authorization(&auth).unwrap();
        assert_eq!(parsed.access_key_id, "JCSKEXAMPLE0000001");
        assert_eq!(parsed.day, "20260130");
        assert!(verify(&secret, "20260130", &sts, &parsed.signature));
        assert!(!verify(
            &Secret::new("other"),
            "20260130",
            &sts,
            &parsed.signature
        ));
        assert!(!verify(&secret, "20260131", &sts, &parsed.signature));
    }

    /// The expected `Authorization` of the worked example (copied into docs/api.md).
    const EXAMPLE_AUTHORIZATION: &str = "JCS-HMAC-SHA256 Credential=JCSKEXAMPLE0000001/20260130/jcs, SignedHeaders=host;x-jcs-content-sha256;x-jcs-date, Signature=a56891fdc60f597bde9eaf49c98040ebf5e4c22cc561d1dbab694826f448049c";

    #[test]
    fn every_signed_part_changes_the_signature() {
        let secret = Secret::new("s");
        let base = sign("K", &secret, "20260130T120000Z", &example());
        let mut p = example();
        p.method = "POST";
        assert_ne!(sign("K", &secret, "20260130T120000Z", &p), base);
        let mut p = example();
        p.path = "/v1/object/download";
        assert_ne!(sign("K", &secret, "20260130T120000Z", &p), base);
        let mut p = example();
        p.query = "path=dir%2Fa+b.txt&packageID=8&isPrefix=true";
        assert_ne!(sign("K", &secret, "20260130T120000Z", &p), base);
        let mut p = example();
        p.payload_hash = UNSIGNED_PAYLOAD;
        assert_ne!(sign("K", &secret, "20260130T120000Z", &p), base);
        assert_ne!(sign("K", &secret, "20260130T120001Z", &example()), base);
        // Equivalent encodings sign alike.
        let mut p = example();
        p.query = "isPrefix=true&packageID=7&path=dir/a%20b.txt";
        assert_eq!(sign("K", &secret, "20260130T120000Z", &p), base);
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/v1/a%20b/c~d"), "/v1/a%20b/c~d");
        assert_eq!(canonical_uri("/v1/a b"), "/v1/a%20b");
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a&a=1"), "a=&a=1&b=2");
        assert_eq!(canonical_query("x=%E4%B8%AD+%2B"), "x=%E4%B8%AD%20%2B");
        assert_eq!(canonical_header_value("  a \t  b  "), "a b");
    }

    #[test]
    fn authorization_parsing_rejects_malformed_values() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256 Credential=a/20260130/jcs, SignedHeaders=host, Signature=00",
            "JCS-HMAC-SHA256 Credential=a/20260130/s3, SignedHeaders=host, Signature=00",
            "JCS-HMAC-SHA256 Credential=a/2026013/jcs, SignedHeaders=host, Signature=00",
            "JCS-HMAC-SHA256 Credential=/20260130/jcs, SignedHeaders=host, Signature=00",
            "JCS-HMAC-SHA256 Credential=a/20260130/jcs, SignedHeaders=Host, Signature=00",
            "JCS-HMAC-SHA256 Credential=a/20260130/jcs, Signature=00",
            "JCS-HMAC-SHA256 Credential=a/20260130/jcs, SignedHeaders=host, Signature=00, Signature=01",
            "JCS-HMAC-SHA256 Credential=a/20260130/jcs, SignedHeaders=host, Signature=00, X=1",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(format_date_time(0), "19700101T000000Z");
        let t = parse_date_time("20260130T120000Z").unwrap();
        assert_eq!(format_date_time(t), "20260130T120000Z");
        assert_eq!(t, 1_769_774_400);
        for bad in [
            "20260230T120000Z",
            "20261330T120000Z",
            "2026-01-30T12:00:00Z",
            "20260130T120000",
        ] {
            assert_eq!(parse_date_time(bad), None, "{bad}");
        }
        let now = now_date_time();
        assert!(parse_date_time(&now).is_some(), "{now}");
    }
}
