//! Webhook signature verification and payload parsing against the CONTRACT.md §7 test vectors.

use http::{HeaderMap, HeaderValue};
use hubspot_client::webhook::{
    self, SignatureError, SignatureVersion, SignedRequest, VerifyOptions, WebhookEvent, WebhookSecret,
};

const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const URI: &str = "https://www.example.com/webhook_uri";
/// Single quotes, literally (CONTRACT.md §7 vector table).
const BODY: &[u8] = b"{'example_field':'example_value'}";
const TS: i64 = 1_693_657_560_000;
const V3_VECTOR: &str = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=";
/// The request body of the `is valid v1` case in hubspot-api-nodejs test/unit/signature.spec.ts.
const NODE_V1_BODY: &[u8] = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;

fn secret() -> WebhookSecret {
    WebhookSecret::new(SECRET)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).expect("valid header value"));
    }
    map
}

fn v3_headers(signature: &str, ts: &str) -> HeaderMap {
    headers(&[(webhook::SIGNATURE_V3_HEADER, signature), (webhook::TIMESTAMP_HEADER, ts)])
}

fn legacy_headers(signature: &str, version: &str) -> HeaderMap {
    headers(&[(webhook::SIGNATURE_HEADER, signature), (webhook::SIGNATURE_VERSION_HEADER, version)])
}

fn check(
    method: &str,
    uri: &str,
    body: &[u8],
    headers: &HeaderMap,
    now_ms: i64,
    options: VerifyOptions,
) -> Result<SignatureVersion, SignatureError> {
    let req = SignedRequest { method, uri, body, headers };
    webhook::verify(&secret(), &req, now_ms, &options)
}

fn legacy() -> VerifyOptions {
    VerifyOptions { allow_legacy: true, ..VerifyOptions::default() }
}

#[test]
fn v3_contract_vector() {
    assert_eq!(webhook::sign_v3(&secret(), "POST", URI, BODY, TS), V3_VECTOR);
    let h = v3_headers(V3_VECTOR, "1693657560000");
    let got = check("POST", URI, BODY, &h, TS + 1_000, VerifyOptions::default());
    assert_eq!(got, Ok(SignatureVersion::V3));
}

#[test]
fn v2_contract_vectors() {
    let post = legacy_headers("4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383", "v2");
    assert_eq!(check("POST", URI, BODY, &post, TS, legacy()), Ok(SignatureVersion::V2));

    let get = legacy_headers("eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e", "v2");
    assert_eq!(check("GET", URI, b"", &get, TS, legacy()), Ok(SignatureVersion::V2));

    // The Node SDK's own "v2 with body" case uses double quotes.
    let node = legacy_headers("9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900", "v2");
    let body = br#"{"example_field":"example_value"}"#;
    assert_eq!(check("POST", URI, body, &node, TS, legacy()), Ok(SignatureVersion::V2));
}

#[test]
fn v1_contract_vector_with_node_sample_body() {
    let v1 = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
    let h = legacy_headers(v1, "v1");
    // v1 ignores method and URI.
    assert_eq!(check("POST", "https://other.test/", NODE_V1_BODY, &h, 0, legacy()), Ok(SignatureVersion::V1));
    // No version header means v1, as in HubSpot's SDKs.
    let h = headers(&[(webhook::SIGNATURE_HEADER, v1)]);
    assert_eq!(check("POST", URI, NODE_V1_BODY, &h, 0, legacy()), Ok(SignatureVersion::V1));
    // Uppercase hex is the same signature.
    let h = legacy_headers(&v1.to_uppercase(), "v1");
    assert_eq!(check("POST", URI, NODE_V1_BODY, &h, 0, legacy()), Ok(SignatureVersion::V1));
}

#[test]
fn missing_signature() {
    let h = headers(&[(webhook::TIMESTAMP_HEADER, "1693657560000")]);
    assert_eq!(check("POST", URI, BODY, &h, TS, legacy()), Err(SignatureError::Missing));
}

#[test]
fn missing_timestamp() {
    let h = headers(&[(webhook::SIGNATURE_V3_HEADER, V3_VECTOR)]);
    assert_eq!(check("POST", URI, BODY, &h, TS, VerifyOptions::default()), Err(SignatureError::MissingTimestamp));
}

#[test]
fn timestamp_window() {
    let h = v3_headers(V3_VECTOR, "1693657560000");
    let opts = VerifyOptions::default();
    // Exactly 300 s old or ahead is still accepted.
    assert_eq!(check("POST", URI, BODY, &h, TS + 300_000, opts), Ok(SignatureVersion::V3));
    assert_eq!(check("POST", URI, BODY, &h, TS - 300_000, opts), Ok(SignatureVersion::V3));
    assert_eq!(check("POST", URI, BODY, &h, TS + 300_001, opts), Err(SignatureError::Stale { age_ms: 300_001 }));
    // From the future.
    assert_eq!(check("POST", URI, BODY, &h, TS - 300_001, opts), Err(SignatureError::Stale { age_ms: -300_001 }));
    // A custom window.
    let tight = VerifyOptions { max_age_ms: 1_000, ..opts };
    assert_eq!(check("POST", URI, BODY, &h, TS + 1_001, tight), Err(SignatureError::Stale { age_ms: 1_001 }));
}

#[test]
fn timestamp_is_signed_as_sent() {
    // "1693657560000.0" parses as neither i64 nor the signed string: the Python SDK float bug.
    let h = v3_headers(V3_VECTOR, "1693657560000.0");
    assert_eq!(check("POST", URI, BODY, &h, TS, VerifyOptions::default()), Err(SignatureError::Malformed));
    // A leading zero parses to the same number but is a different signed string.
    let h = v3_headers(V3_VECTOR, "01693657560000");
    assert_eq!(check("POST", URI, BODY, &h, TS, VerifyOptions::default()), Err(SignatureError::Mismatch));
}

#[test]
fn tampering_is_detected() {
    let h = v3_headers(V3_VECTOR, "1693657560000");
    let opts = VerifyOptions::default();
    assert_eq!(check("POST", URI, b"{'example_field':'example_valuE'}", &h, TS, opts), Err(SignatureError::Mismatch));
    assert_eq!(check("POST", "https://www.example.com/webhook_urI", BODY, &h, TS, opts), Err(SignatureError::Mismatch));
    assert_eq!(check("PUT", URI, BODY, &h, TS, opts), Err(SignatureError::Mismatch));
    // Signed timestamp replaced by a fresher one.
    let h = v3_headers(V3_VECTOR, "1693657560001");
    assert_eq!(check("POST", URI, BODY, &h, TS, opts), Err(SignatureError::Mismatch));

    let legacy_h = legacy_headers("4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383", "v2");
    assert_eq!(check("POST", URI, b"{}", &legacy_h, TS, legacy()), Err(SignatureError::Mismatch));
}

#[test]
fn wrong_secret() {
    let h = v3_headers(V3_VECTOR, "1693657560000");
    let req = SignedRequest { method: "POST", uri: URI, body: BODY, headers: &h };
    let other = WebhookSecret::new("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz");
    assert_eq!(webhook::verify(&other, &req, TS, &VerifyOptions::default()), Err(SignatureError::Mismatch));
}

#[test]
fn legacy_rejected_by_default() {
    let v2 = legacy_headers("4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383", "v2");
    assert_eq!(
        check("POST", URI, BODY, &v2, TS, VerifyOptions::default()),
        Err(SignatureError::UnsupportedVersion("v2".into()))
    );
    let v1 = legacy_headers("232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de", "v1");
    assert_eq!(
        check("POST", URI, NODE_V1_BODY, &v1, TS, VerifyOptions::default()),
        Err(SignatureError::UnsupportedVersion("v1".into()))
    );
    let unknown = legacy_headers("232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de", "v9");
    assert_eq!(
        check("POST", URI, NODE_V1_BODY, &unknown, TS, legacy()),
        Err(SignatureError::UnsupportedVersion("v9".into()))
    );
}

#[test]
fn v3_is_preferred_and_never_downgraded() {
    // A valid legacy header must not rescue a failing v3 signature.
    let mut h = v3_headers(V3_VECTOR, "1693657560000");
    h.insert(
        webhook::SIGNATURE_HEADER,
        HeaderValue::from_static("232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"),
    );
    h.insert(webhook::SIGNATURE_VERSION_HEADER, HeaderValue::from_static("v1"));
    assert_eq!(check("POST", URI, NODE_V1_BODY, &h, TS, legacy()), Err(SignatureError::Mismatch));
    assert_eq!(check("POST", URI, BODY, &h, TS, legacy()), Ok(SignatureVersion::V3));
}

#[test]
fn malformed_headers() {
    let opts = VerifyOptions::default();
    let not_base64 = v3_headers("not base64!", "1693657560000");
    assert_eq!(check("POST", URI, BODY, &not_base64, TS, opts), Err(SignatureError::Malformed));
    let short = v3_headers("AAAA", "1693657560000");
    assert_eq!(check("POST", URI, BODY, &short, TS, opts), Err(SignatureError::Malformed));
    let bad_ts = v3_headers(V3_VECTOR, "yesterday");
    assert_eq!(check("POST", URI, BODY, &bad_ts, TS, opts), Err(SignatureError::Malformed));
    let not_hex = legacy_headers("zz", "v2");
    assert_eq!(check("POST", URI, BODY, &not_hex, TS, legacy()), Err(SignatureError::Malformed));
}

#[test]
fn query_string_uri() {
    let uri = "https://hooks.example.com/hubspot/webhook?portal=123&token=a%2Fb";
    let sig = webhook::sign_v3(&secret(), "POST", uri, BODY, TS);
    let h = v3_headers(&sig, &TS.to_string());
    let opts = VerifyOptions::default();
    assert_eq!(check("POST", uri, BODY, &h, TS, opts), Ok(SignatureVersion::V3));
    // The query string is part of what is signed.
    assert_eq!(
        check("POST", "https://hooks.example.com/hubspot/webhook?portal=124&token=a%2Fb", BODY, &h, TS, opts),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        check("POST", "https://hooks.example.com/hubspot/webhook", BODY, &h, TS, opts),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn decoded_uri_form_is_also_accepted() {
    // HubSpot's docs: the signer decodes these escapes first (UNVERIFIED, the SDKs don't).
    let sent = "https://hooks.example.com/hook?email=a%40b.test&next=%2Fdeals%3Fx%3D1&q=%20";
    let decoded = "https://hooks.example.com/hook?email=a@b.test&next=/deals?x%3D1&q=%20";
    let opts = VerifyOptions::default();

    let signed_decoded = webhook::sign_v3(&secret(), "POST", decoded, BODY, TS);
    let h = v3_headers(&signed_decoded, &TS.to_string());
    assert_eq!(check("POST", sent, BODY, &h, TS, opts), Ok(SignatureVersion::V3));

    let signed_as_sent = webhook::sign_v3(&secret(), "POST", sent, BODY, TS);
    let h = v3_headers(&signed_as_sent, &TS.to_string());
    assert_eq!(check("POST", sent, BODY, &h, TS, opts), Ok(SignatureVersion::V3));

    // Decoding anything beyond the listed escapes (here %3D and %20) is not accepted.
    let over_decoded = "https://hooks.example.com/hook?email=a@b.test&next=/deals?x=1&q= ";
    let sig = webhook::sign_v3(&secret(), "POST", over_decoded, BODY, TS);
    let h = v3_headers(&sig, &TS.to_string());
    assert_eq!(check("POST", sent, BODY, &h, TS, opts), Err(SignatureError::Mismatch));
}

#[test]
fn long_secret_is_hashed_per_rfc2104() {
    // Independently computed with Python: base64(hmac.new(b"k" * 100, b"POST" + uri + body +
    // b"1693657560000", sha256)).
    let long = WebhookSecret::new("k".repeat(100));
    assert_eq!(webhook::sign_v3(&long, "POST", URI, BODY, TS), LONG_SECRET_VECTOR);
}

const LONG_SECRET_VECTOR: &str = "UVMGnz19MSuVTUVVnjd2bERPFrx5yppt9oWYSCP7Mes=";

#[test]
fn secret_is_never_printed() {
    let s = secret();
    assert_eq!(format!("{s:?}"), "WebhookSecret(***)");
    assert_eq!(s.to_string(), "WebhookSecret(***)");
    let h = v3_headers(V3_VECTOR, "1693657560000");
    let req = SignedRequest { method: "POST", uri: URI, body: BODY, headers: &h };
    let err = webhook::verify(&s, &req, TS, &VerifyOptions::default()).err();
    assert_eq!(err, None);
    let tampered = SignedRequest { body: b"{}", ..req };
    let err = webhook::verify(&s, &tampered, TS, &VerifyOptions::default()).expect_err("tampered body");
    let message = err.to_string();
    assert!(!message.contains(SECRET));
    assert!(!message.contains(V3_VECTOR));
    let expected_for_tampered = webhook::sign_v3(&s, "POST", URI, b"{}", TS);
    assert!(!message.contains(&expected_for_tampered));
    assert!(!format!("{err:?}").contains(&expected_for_tampered));
}

#[test]
fn parse_batch_realistic_sample() {
    let body = br#"[
      {"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,
       "subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,
       "changeSource":"CRM","changeFlag":"NEW","appId":54321},
      {"eventId":3816279340,"subscriptionId":25,"portalId":33,"appId":1160452,
       "occurredAt":1684355213000,"subscriptionType":"deal.propertyChange","attemptNumber":2,
       "objectId":18446744073709551615,"propertyName":"dealstage","propertyValue":"closedwon",
       "changeSource":"CRM_UI","sourceId":"userId:123","isSensitive":false},
      {"eventId":"9007199254740993","subscriptionId":26,"portalId":33,"appId":1160452,
       "occurredAt":1684355213001,"subscriptionType":"object.propertyChange",
       "objectTypeId":"0-3","objectId":"77","propertyName":"amount","propertyValue":1500.5,
       "changeSource":null},
      {"eventId":5,"subscriptionId":27,"portalId":33,"appId":1160452,"occurredAt":1684355213002,
       "subscriptionType":"deal.associationChange","associationType":"DEAL_TO_CONTACT",
       "fromObjectId":77,"toObjectId":88,"associationRemoved":false}
    ]"#;
    let events = webhook::parse_batch(body).expect("valid batch");
    assert_eq!(events.len(), 4);

    assert_eq!(
        events[0],
        WebhookEvent {
            event_id: 1,
            subscription_id: 12345,
            portal_id: 62515,
            app_id: 54321,
            occurred_at: 1_564_113_600_000,
            subscription_type: "contact.creation".into(),
            attempt_number: 0,
            object_id: Some(123),
            change_source: Some("CRM".into()),
            source_id: None,
            change_flag: Some("NEW".into()),
            property_name: None,
            property_value: None,
            object_type_id: None,
        }
    );
    assert_eq!(events[1].object_id, Some(u64::MAX));
    assert_eq!(events[1].attempt_number, 2);
    assert_eq!(events[1].property_name.as_deref(), Some("dealstage"));
    assert_eq!(events[1].property_value.as_deref(), Some("closedwon"));
    // Ids above 2^53 survive exactly, even when sent as strings.
    assert_eq!(events[2].event_id, 9_007_199_254_740_993);
    assert_eq!(events[2].object_id, Some(77));
    assert_eq!(events[2].object_type_id.as_deref(), Some("0-3"));
    assert_eq!(events[2].property_value.as_deref(), Some("1500.5"));
    assert_eq!(events[2].change_source, None);
    assert_eq!(events[3].object_id, None);
    assert_eq!(events[3].attempt_number, 0);

    assert_eq!(events[1].dedupe_key(), (33, 25, 3_816_279_340, 1_684_355_213_000));
}

#[test]
fn parse_batch_edge_cases() {
    assert_eq!(webhook::parse_batch(b"[]").expect("empty batch"), vec![]);
    // Not an array.
    assert!(webhook::parse_batch(br#"{"eventId":1}"#).is_err());
    // Required field missing.
    assert!(webhook::parse_batch(br#"[{"eventId":1}]"#).is_err());
    // More than HubSpot's 100 per request is still accepted.
    let one = r#"{"eventId":1,"subscriptionId":2,"portalId":3,"appId":4,"occurredAt":5,"subscriptionType":"deal.creation","attemptNumber":0,"objectId":6}"#;
    let big = format!("[{}]", vec![one; 150].join(","));
    assert_eq!(webhook::parse_batch(big.as_bytes()).expect("large batch").len(), 150);
}

#[test]
fn dedupe_key_distinguishes_reused_event_ids() {
    let events = webhook::parse_batch(
        br#"[
      {"eventId":7,"subscriptionId":1,"portalId":9,"appId":4,"occurredAt":100,"subscriptionType":"deal.creation","objectId":1},
      {"eventId":7,"subscriptionId":1,"portalId":9,"appId":4,"occurredAt":100,"subscriptionType":"deal.creation","objectId":1,"attemptNumber":1},
      {"eventId":7,"subscriptionId":2,"portalId":9,"appId":4,"occurredAt":100,"subscriptionType":"deal.creation","objectId":1},
      {"eventId":7,"subscriptionId":1,"portalId":8,"appId":4,"occurredAt":100,"subscriptionType":"deal.creation","objectId":1},
      {"eventId":7,"subscriptionId":1,"portalId":9,"appId":4,"occurredAt":101,"subscriptionType":"deal.creation","objectId":1}
    ]"#,
    )
    .expect("valid batch");
    let keys: std::collections::HashSet<_> = events.iter().map(WebhookEvent::dedupe_key).collect();
    // The retry (attemptNumber 1) collapses with the original; the rest are distinct.
    assert_eq!(keys.len(), 4);
}

#[test]
fn serialize_round_trip_for_simulators() {
    let body = br#"[{"eventId":1,"subscriptionId":2,"portalId":3,"appId":4,"occurredAt":5,"subscriptionType":"deal.propertyChange","attemptNumber":0,"objectId":6,"propertyName":"dealname","propertyValue":"X"}]"#;
    let events = webhook::parse_batch(body).expect("valid batch");
    let json = serde_json::to_vec(&events).expect("serializable");
    assert_eq!(webhook::parse_batch(&json).expect("round trip"), events);
    let text = String::from_utf8(json).expect("utf-8");
    assert!(!text.contains("changeSource"), "None fields are omitted");
}
