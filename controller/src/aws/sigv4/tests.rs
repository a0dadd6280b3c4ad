//! The verifier against requests signed by botocore (the AWS SDK for
//! Python) and AWS's published example, and against the ways an attacker
//! would bend them.

use super::*;

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2015-08-30T12:36:00Z, the date of AWS's examples.
const WHEN: u64 = 1_440_938_160;

fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn lookup(id: &str) -> Option<Key> {
    (id == KEY_ID).then(|| Key { secret: SECRET.into(), session_token: None })
}

/// AWS's published example (IAM ListUsers, in "Create a signed AWS API request").
#[test]
fn the_published_example_verifies() {
    let h = headers(&[
        ("Host", "iam.amazonaws.com"),
        ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
        ("X-Amz-Date", "20150830T123600Z"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        ),
    ]);
    let request = Request { method: "GET", path: "/", query: "Action=ListUsers&Version=2010-05-08", headers: &h, body: b"" };
    let expect = Expect { service: "iam", signed: &[], now: WHEN };
    let verified = verify(&request, &expect, lookup).unwrap();
    assert_eq!(verified, Verified { access_key_id: KEY_ID.into(), region: "us-east-1".into() });
    // The query's order does not matter; its content does.
    let reordered = Request { query: "Version=2010-05-08&Action=ListUsers", ..request };
    assert!(verify(&reordered, &expect, lookup).is_ok());
    let changed = Request { query: "Action=ListRoles&Version=2010-05-08", ..request };
    assert_eq!(verify(&changed, &expect, lookup), Err(SigError::Mismatch));
}

/// A CodePipeline request as botocore signs it (any region is accepted).
fn codepipeline_headers() -> Vec<(String, String)> {
    headers(&[
        ("host", "127.0.0.1:7400"),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("X-Amz-Target", "CodePipeline_20150709.GetPipeline"),
        ("X-Amz-Date", "20150830T123600Z"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/codepipeline/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
             Signature=207f57cfcdfef946776c1e131fc1b6d041c770d1afee0443fde59498b7c58c6a",
        ),
    ])
}

const BODY: &[u8] = br#"{"name":"web"}"#;
const CODEPIPELINE: Expect<'static> = Expect { service: "codepipeline", signed: &["x-amz-target"], now: WHEN };

fn post<'a>(h: &'a [(String, String)], body: &'a [u8]) -> Request<'a> {
    Request { method: "POST", path: "/", query: "", headers: h, body }
}

fn replace(h: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.clone(), if k.eq_ignore_ascii_case(name) { value.to_string() } else { v.clone() })).collect()
}

#[test]
fn a_botocore_request_verifies_in_any_region() {
    let h = codepipeline_headers();
    let verified = verify(&post(&h, BODY), &CODEPIPELINE, lookup).unwrap();
    assert_eq!(verified.region, "eu-west-1");
    // Within the allowed skew, either way.
    for now in [WHEN - MAX_CLOCK_SKEW_SECS, WHEN + MAX_CLOCK_SKEW_SECS] {
        assert!(verify(&post(&h, BODY), &Expect { now, ..CODEPIPELINE }, lookup).is_ok());
    }
}

#[test]
fn a_changed_body_or_header_does_not_verify() {
    let h = codepipeline_headers();
    assert_eq!(verify(&post(&h, br#"{"name":"prod"}"#), &CODEPIPELINE, lookup), Err(SigError::Mismatch));
    // The same body and signature, replayed as another operation.
    let other = replace(&h, "x-amz-target", "CodePipeline_20150709.DeletePipeline");
    assert_eq!(verify(&post(&other, BODY), &CODEPIPELINE, lookup), Err(SigError::Mismatch));
    let other = replace(&h, "host", "evil.example:7400");
    assert_eq!(verify(&post(&other, BODY), &CODEPIPELINE, lookup), Err(SigError::Mismatch));
    // Whitespace is canonicalized, so it changes nothing.
    let spaced = replace(&h, "content-type", "  application/x-amz-json-1.1 ");
    assert!(verify(&post(&spaced, BODY), &CODEPIPELINE, lookup).is_ok());
    let get = Request { method: "GET", ..post(&h, BODY) };
    assert_eq!(verify(&get, &CODEPIPELINE, lookup), Err(SigError::Mismatch));
}

#[test]
fn unsigned_host_date_or_target_is_refused() {
    let h = codepipeline_headers();
    let auth = |signed: &str| {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/codepipeline/aws4_request, \
             SignedHeaders={signed}, Signature={}",
            "0".repeat(64)
        )
    };
    for (signed, missing) in [
        ("content-type;x-amz-date;x-amz-target", "host"),
        ("content-type;host;x-amz-target", "x-amz-date"),
        ("content-type;host;x-amz-date", "x-amz-target"),
    ] {
        let bad = replace(&h, "authorization", &auth(signed));
        let err = verify(&post(&bad, BODY), &CODEPIPELINE, lookup).unwrap_err();
        assert_eq!(err, SigError::Incomplete(format!("the {missing} header must be signed")), "{signed}");
        assert_eq!(err.aws_type(), "IncompleteSignatureException");
    }
    let no_date: Vec<_> = h.iter().filter(|(k, _)| k != "X-Amz-Date").cloned().collect();
    assert!(matches!(verify(&post(&no_date, BODY), &CODEPIPELINE, lookup), Err(SigError::Incomplete(_))));
    let none: Vec<_> = h.iter().filter(|(k, _)| k != "Authorization").cloned().collect();
    assert_eq!(verify(&post(&none, BODY), &CODEPIPELINE, lookup), Err(SigError::Missing));
}

#[test]
fn a_stale_or_future_request_is_expired() {
    let h = codepipeline_headers();
    for now in [WHEN + MAX_CLOCK_SKEW_SECS + 1, WHEN - MAX_CLOCK_SKEW_SECS - 1, WHEN + 86_400] {
        let err = verify(&post(&h, BODY), &Expect { now, ..CODEPIPELINE }, lookup).unwrap_err();
        assert_eq!(err, SigError::Expired { date: "20150830T123600Z".into() });
        assert_eq!(err.aws_type(), "InvalidSignatureException");
    }
    // The credential's date must be the request's.
    let h2 = replace(&h, "x-amz-date", "20150831T000100Z");
    let err = verify(&post(&h2, BODY), &Expect { now: WHEN + 41_460, ..CODEPIPELINE }, lookup).unwrap_err();
    assert!(matches!(err, SigError::Incomplete(_)), "{err:?}");
}

#[test]
fn the_wrong_service_or_key_is_refused() {
    let h = codepipeline_headers();
    let err = verify(&post(&h, BODY), &Expect { service: "s3", ..CODEPIPELINE }, lookup).unwrap_err();
    assert_eq!(err, SigError::WrongService { expected: "s3".into(), got: "codepipeline".into() });
    assert_eq!(err.aws_type(), "InvalidSignatureException");
    // A key this controller does not know.
    let err = verify(&post(&h, BODY), &CODEPIPELINE, |_| None).unwrap_err();
    assert_eq!(err, SigError::UnknownKey(KEY_ID.into()));
    assert_eq!(err.aws_type(), "UnrecognizedClientException");
    // The right key id with another secret.
    let wrong = |_: &str| Some(Key { secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ".into(), session_token: None });
    let err = verify(&post(&h, BODY), &CODEPIPELINE, wrong).unwrap_err();
    assert_eq!((err.clone(), err.aws_type()), (SigError::Mismatch, "InvalidSignatureException"));
}

#[test]
fn malformed_authorization_headers_are_incomplete_not_panics() {
    for header in [
        "",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA1 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/codepipeline, SignedHeaders=host;x-amz-date, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/2015083/us-east-1/codepipeline/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/codepipeline/aws4_request, SignedHeaders=Host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/codepipeline/aws4_request, SignedHeaders=host, Signature=zz",
        "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, Credential=B/20150830/r/s/aws4_request",
        "AWS4-HMAC-SHA256 Credential=/20150830/r/s/aws4_request, SignedHeaders=host, Signature=",
        "AWS4-HMAC-SHA256 ,,,===",
    ] {
        let err = Authorization::parse(header).unwrap_err();
        assert!(matches!(err, SigError::Incomplete(_)), "{header:?}: {err:?}");
    }
    assert!(Authorization::parse(&format!("AWS4-HMAC-SHA256 Credential={}", "a".repeat(5000))).is_err());
    for date in ["2015083OT123600Z", "20151330T123600Z", "20150830T253600Z", "20150830T123600", "２０１５"] {
        assert_eq!(parse_amz_date(date), None, "{date}");
    }
    assert_eq!(parse_amz_date("20150830T123600Z"), Some(WHEN));
}

/// S3 as botocore signs it with temporary credentials: the path encoded
/// once, the payload hash in `x-amz-content-sha256`, the session token signed.
fn s3_headers() -> Vec<(String, String)> {
    headers(&[
        ("Host", "127.0.0.1:7400"),
        ("X-Amz-Date", "20150830T123600Z"),
        ("X-Amz-Security-Token", "sessiontoken123"),
        ("X-Amz-Content-SHA256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20150830/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
             Signature=76809b3dfb917901df1e63551144a70cf3fd1a80595bd8cbc45ad56a8f17e14d",
        ),
    ])
}

#[test]
fn s3_with_a_session_token_verifies_and_needs_the_token() {
    let h = s3_headers();
    let request = Request {
        method: "GET",
        path: "/bucket/a%20b/c~d.zip",
        query: "versionId=1&x-id=GetObject",
        headers: &h,
        body: b"",
    };
    let s3 = Expect { service: "s3", signed: &[], now: WHEN };
    let temporary = |token: &'static str| {
        move |id: &str| {
            (id == "ASIAEXAMPLE").then(|| Key { secret: "secretsecret".into(), session_token: Some(token.into()) })
        }
    };
    assert!(verify(&request, &s3, temporary("sessiontoken123")).is_ok());
    // Another job's token, or a long-term key presented with a token.
    assert_eq!(verify(&request, &s3, temporary("sessiontoken124")), Err(SigError::BadSessionToken));
    let long_term = |_: &str| Some(Key { secret: "secretsecret".into(), session_token: None });
    assert_eq!(verify(&request, &s3, long_term), Err(SigError::BadSessionToken));
    // A temporary key without its token.
    let no_token: Vec<_> = h.iter().filter(|(k, _)| k != "X-Amz-Security-Token").cloned().collect();
    let bare = Request { headers: &no_token, ..request };
    assert_eq!(verify(&bare, &s3, temporary("sessiontoken123")), Err(SigError::BadSessionToken));
    // The claimed payload hash must be the body's.
    let tampered = Request { body: b"not empty", ..request };
    assert_eq!(verify(&tampered, &s3, temporary("sessiontoken123")), Err(SigError::PayloadMismatch));
    // Another key.
    let other = Request { path: "/bucket/a%20b/other.zip", ..request };
    assert_eq!(verify(&other, &s3, temporary("sessiontoken123")), Err(SigError::Mismatch));
}

/// `UNSIGNED-PAYLOAD` is S3's alone; elsewhere the body must be covered.
#[test]
fn unsigned_payload_is_for_s3_only() {
    let sign = |service: &str, h: &mut Vec<(String, String)>, body: &[u8]| {
        let signed = "host;x-amz-content-sha256;x-amz-date";
        let mut auth = Authorization::parse(&format!(
            "AWS4-HMAC-SHA256 Credential={KEY_ID}/20150830/us-east-1/{service}/aws4_request, SignedHeaders={signed}, Signature={}",
            "0".repeat(64)
        ))
        .unwrap();
        let request = Request { method: "PUT", path: "/b/k", query: "", headers: h, body };
        let canonical = canonical_request(&request, &auth, UNSIGNED_PAYLOAD).unwrap();
        let to_sign = string_to_sign("20150830T123600Z", &auth.scope(), &canonical);
        auth.signature = signature(SECRET, "20150830", "us-east-1", service, &to_sign);
        h.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={KEY_ID}/20150830/us-east-1/{service}/aws4_request, SignedHeaders={signed}, Signature={}",
                auth.signature
            ),
        ));
    };
    let base = headers(&[("host", "h"), ("x-amz-date", "20150830T123600Z"), ("x-amz-content-sha256", UNSIGNED_PAYLOAD)]);
    let mut h = base.clone();
    sign("s3", &mut h, b"any body");
    let request = Request { method: "PUT", path: "/b/k", query: "", headers: &h, body: b"any body" };
    assert!(verify(&request, &Expect { service: "s3", signed: &[], now: WHEN }, lookup).is_ok());
    let mut h = base.clone();
    sign("codepipeline", &mut h, b"any body");
    let request = Request { headers: &h, ..request };
    let err = verify(&request, &Expect { service: "codepipeline", signed: &[], now: WHEN }, lookup).unwrap_err();
    assert_eq!(err, SigError::PayloadMismatch);
}

#[test]
fn paths_and_queries_are_canonicalized_as_the_sdks_do() {
    assert_eq!(normalized_path(""), "/");
    assert_eq!(normalized_path("/a/./b/../c//d/"), "/a/c/d/");
    assert_eq!(normalized_path("/a%20b"), "/a%2520b");
    assert_eq!(s3_path("/bucket/a%20b/c~d.zip"), "/bucket/a%20b/c~d.zip");
    assert_eq!(s3_path("/bucket/a b"), "/bucket/a%20b");
    assert_eq!(canonical_query("b=2&a=1&a=0&uploads"), "a=0&a=1&b=2&uploads=");
    assert_eq!(canonical_query("k=a%2Fb+c"), "k=a%2Fb%2Bc");
    assert_eq!(decode("%zz%4"), b"%zz%4");
}

/// Artifacts in S3 (issue 18, s3): the client side signs with the same
/// math. It reproduces AWS's published signature, and a ListObjectsV2 by a
/// prefix holding `/` (what collection sends) verifies here.
#[test]
fn the_client_signature_is_the_published_one_and_verifies() {
    let h = headers(&[
        ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
        ("host", "iam.amazonaws.com"),
        ("x-amz-date", "20150830T123600Z"),
    ]);
    let request = Request { method: "GET", path: "/", query: "Action=ListUsers&Version=2010-05-08", headers: &h, body: b"" };
    let empty = hex::encode(Sha256::digest(b""));
    let authorization = sign(&request, KEY_ID, SECRET, "us-east-1", "iam", &empty);
    assert!(
        authorization.ends_with("Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"),
        "{authorization}"
    );

    let h = headers(&[("host", "127.0.0.1:9000"), ("x-amz-date", "20150830T123600Z"), ("x-amz-content-sha256", &empty)]);
    let query = format!("list-type=2&max-keys=1000&prefix={}", uri_encode("ci/artifacts/sha256/", ""));
    let request = Request { method: "GET", path: "/bucket", query: &query, headers: &h, body: b"" };
    let authorization = sign(&request, KEY_ID, SECRET, "eu-west-3", "s3", &empty);
    let mut signed = h.clone();
    signed.push(("authorization".into(), authorization));
    let request = Request { headers: &signed, ..request };
    let expect = Expect { service: "s3", signed: &[], now: WHEN };
    let verified = verify(&request, &expect, lookup).unwrap();
    assert_eq!(verified.region, "eu-west-3");
    let other = format!("list-type=2&max-keys=1000&prefix={}", uri_encode("ci/other/", ""));
    assert_eq!(verify(&Request { query: &other, ..request }, &expect, lookup), Err(SigError::Mismatch));
}
