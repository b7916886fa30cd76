//! The typed client against the simulator: the Upso behaviour GoMark relies on.

use std::time::Duration;
use upso_client::*;
use upso_sim::{SimConfig, UpsoSim};

async fn setup(config: SimConfig) -> (UpsoSim, UpsoClient, UpsoToken) {
    let (sim, addr) = upso_sim::spawn(config, "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    sim.register_account("tok-acme", "Acme");
    let client = UpsoClient::new(ClientConfig {
        base_url: format!("http://{addr}"),
        timeout: Duration::from_secs(5),
        max_retries: 3,
        retry_base_delay: Duration::from_millis(10),
        max_retry_delay: Duration::from_secs(2),
    })
    .expect("client");
    (sim, client, UpsoToken::new("tok-acme"))
}

fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).expect("time").timestamp_millis()
}

fn two_step(window: Option<SendWindow>) -> CadenceInput {
    CadenceInput {
        name: "Upsell".into(),
        tags: vec!["gomark".into()],
        mailbox_id: None,
        send_window: window,
        exit_rules: ExitRules::default(),
        steps: vec![
            Step {
                step_type: StepType::AutoEmail,
                delay_hours: 0,
                template: Some(Template {
                    subject: "A gift for {{company}}".into(),
                    body: "Hi {{firstName}}, {{offer}}".into(),
                }),
                instructions: None,
            },
            Step {
                step_type: StepType::AutoEmail,
                delay_hours: 48,
                template: Some(Template { subject: "Following up".into(), body: "Still there, {{firstName}}?".into() }),
                instructions: None,
            },
        ],
    }
}

fn contact(email: &str) -> Contact {
    Contact { first_name: Some("Ada".into()), company: Some("Acme".into()), ..Contact::email(email) }
}

fn enrollment(cadence: &str, email: &str) -> EnrollmentInput {
    EnrollmentInput {
        cadence_id: cadence.into(),
        contact: contact(email),
        mailbox_id: None,
        variables: [("offer".to_owned(), "20% off seats".to_owned())].into(),
        external_id: Some("decision-1".into()),
    }
}

#[tokio::test]
async fn enrolled_contacts_are_emailed_step_by_step_with_rendered_templates_and_timestamps() {
    let (sim, client, token) = setup(SimConfig::default()).await;
    sim.set_now(ms("2026-11-23T10:00:00Z"));
    let cadence = client.create_cadence(&token, &two_step(None)).await.expect("create");
    assert_eq!((cadence.version, cadence.state), (1, CadenceState::Active));
    let e = client.enroll(&token, &enrollment(&cadence.id, "Ada@Example.com")).await.expect("enroll");
    assert_eq!((e.state, e.current_step, e.external_id.as_deref()), (EnrollmentState::Active, 1, Some("decision-1")));
    let sent = sim.sent_emails("tok-acme");
    assert_eq!(sent.len(), 1, "the first step has no delay");
    assert_eq!((sent[0].to.as_str(), sent[0].subject.as_str()), ("ada@example.com", "A gift for Acme"));
    assert_eq!(sent[0].body, "Hi Ada, 20% off seats");
    assert_eq!(sent[0].at_ms, ms("2026-11-23T10:00:00Z"));

    let refused = client.enroll(&token, &enrollment(&cadence.id, "ada@example.com")).await.expect_err("twice");
    assert_eq!(refused.code(), Some("already_enrolled"));

    sim.advance(Duration::from_secs(47 * 3600));
    assert_eq!(sim.sent_emails("tok-acme").len(), 1, "not yet due");
    sim.advance(Duration::from_secs(3600));
    let sent = sim.sent_emails("tok-acme");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].at_ms, ms("2026-11-25T10:00:00Z"));
    let e = client.get_enrollment(&token, &e.id).await.expect("get");
    assert_eq!(e.state, EnrollmentState::Finished);
}

#[tokio::test]
async fn send_windows_and_mailbox_caps_delay_emails_instead_of_dropping_them() {
    let (sim, client, token) = setup(SimConfig { default_mailbox_cap: 2, ..SimConfig::default() }).await;
    // Saturday 20:00 UTC: the window opens Monday 09:00 (+01:00), i.e. 08:00 UTC.
    sim.set_now(ms("2026-11-28T20:00:00Z"));
    let window = SendWindow {
        time_zone: "+01:00".into(),
        start: "09:00".into(),
        end: "17:00".into(),
        weekdays: default_weekdays(),
    };
    let cadence = client.create_cadence(&token, &two_step(Some(window))).await.expect("create");
    for i in 0..3 {
        client.enroll(&token, &enrollment(&cadence.id, &format!("c{i}@example.com"))).await.expect("enroll");
    }
    assert!(sim.sent_emails("tok-acme").is_empty(), "outside the window");
    sim.set_now(ms("2026-11-30T08:00:00Z"));
    sim.run_due();
    let sent = sim.sent_emails("tok-acme");
    assert_eq!(
        sent.iter().map(|s| s.to.as_str()).collect::<Vec<_>>(),
        ["c0@example.com", "c1@example.com"],
        "cap of 2"
    );
    assert!(sent.iter().all(|s| s.at_ms == ms("2026-11-30T08:00:00Z")));
    sim.set_now(ms("2026-12-01T08:00:00Z"));
    sim.run_due();
    let sent = sim.sent_emails("tok-acme");
    assert_eq!(sent.len(), 3, "the capped email went the next day");
    assert_eq!((sent[2].to.as_str(), sent[2].at_ms), ("c2@example.com", ms("2026-12-01T08:00:00Z")));
}

#[tokio::test]
async fn pause_resume_finish_opt_out_reply_and_bounce_end_enrollments_as_documented() {
    let (sim, client, token) = setup(SimConfig::default()).await;
    sim.set_now(ms("2026-11-23T10:00:00Z"));
    let cadence = client.create_cadence(&token, &two_step(None)).await.expect("create");
    let a = client.enroll(&token, &enrollment(&cadence.id, "a@example.com")).await.expect("a");
    let paused = client.pause_enrollment(&token, &a.id).await.expect("pause");
    assert_eq!(paused.state, EnrollmentState::Paused);
    let again = client.pause_enrollment(&token, &a.id).await.expect_err("pause twice");
    assert_eq!(again.code(), Some("invalid_state"));
    sim.advance(Duration::from_secs(72 * 3600));
    assert_eq!(sim.sent_emails("tok-acme").len(), 1, "paused: nothing runs");
    assert_eq!(client.resume_enrollment(&token, &a.id).await.expect("resume").state, EnrollmentState::Active);
    assert_eq!(client.finish_enrollment(&token, &a.id).await.expect("finish").state, EnrollmentState::Finished);

    let b = client.enroll(&token, &enrollment(&cadence.id, "b@example.com")).await.expect("b");
    sim.record_reply("tok-acme", "b@example.com").expect("reply");
    assert_eq!(client.get_enrollment(&token, &b.id).await.expect("b").state, EnrollmentState::Replied);
    let c = client.enroll(&token, &enrollment(&cadence.id, "c@example.com")).await.expect("c");
    sim.record_bounce("tok-acme", "c@example.com").expect("bounce");
    assert_eq!(client.get_enrollment(&token, &c.id).await.expect("c").state, EnrollmentState::Bounced);

    let d = client.enroll(&token, &enrollment(&cadence.id, "d@example.com")).await.expect("d");
    client.opt_out(&token, &OptOutInput { email: "D@example.com".into(), reason: None }).await.expect("opt out");
    assert_eq!(client.get_enrollment(&token, &d.id).await.expect("d").state, EnrollmentState::OptedOut);
    let refused = client.enroll(&token, &enrollment(&cadence.id, "d@example.com")).await.expect_err("opted out");
    assert_eq!(refused.code(), Some("opted_out"));
    assert_eq!(client.list_opt_outs(&token).await.expect("list").len(), 1);
    let kinds: Vec<ActivityType> =
        client.list_activities(&token, None).await.expect("activities").iter().map(|a| a.activity_type).collect();
    for kind in [
        ActivityType::Paused,
        ActivityType::Resumed,
        ActivityType::Replied,
        ActivityType::Bounced,
        ActivityType::OptedOut,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} recorded");
    }
}

#[tokio::test]
async fn hand_edits_bump_the_version_and_archiving_ends_running_enrollments() {
    let (sim, client, token) = setup(SimConfig::default()).await;
    let cadence = client.create_cadence(&token, &two_step(None)).await.expect("create");
    let edited = sim.edit_cadence_by_hand("tok-acme", &cadence.id, |c| c.steps[1].delay_hours = 72).expect("edit");
    assert_eq!((edited.version, edited.updated_via.as_deref()), (2, Some("ui")));
    let read = client.get_cadence(&token, &cadence.id).await.expect("get");
    assert_eq!(read.definition.steps[1].delay_hours, 72);
    let e = client.enroll(&token, &enrollment(&cadence.id, "x@example.com")).await.expect("enroll");
    let archived = client.archive_cadence(&token, &cadence.id).await.expect("archive");
    assert_eq!(archived.state, CadenceState::Archived);
    assert_eq!(client.get_enrollment(&token, &e.id).await.expect("e").state, EnrollmentState::Finished);
    let refused = client.replace_cadence(&token, &cadence.id, &two_step(None)).await.expect_err("archived");
    assert_eq!(refused.code(), Some("cadence_archived"));
    assert!(client.list_cadences(&token, Some(CadenceState::Active)).await.expect("list").is_empty());
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_the_client_retries_a_bounded_number_of_times() {
    let config = SimConfig { rate_limit: 3, rate_window: Duration::from_millis(1500), ..SimConfig::default() };
    let (sim, client, token) = setup(config).await;
    for _ in 0..5 {
        client.list_cadences(&token, None).await.expect("retried past the limit");
    }
    assert!(sim.rate_limited_count("tok-acme") >= 1, "the limit was hit and waited out");

    sim.fail_next("tok-acme", 10, 503);
    let err = client.account(&token).await.expect_err("gives up");
    assert_eq!(err, Error::Server(503));
    let bad = client.account(&UpsoToken::new("nope")).await.expect_err("unknown token");
    assert_eq!(bad, Error::Unauthorized);
    assert!(!format!("{bad} {bad:?} {token:?}").contains("tok-acme"), "the token never shows");
}

#[tokio::test]
async fn activity_webhooks_arrive_signed() {
    use std::sync::{Arc, Mutex};
    type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let sig = headers.get(webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                sink.lock().expect("lock").push((sig, body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (_sim, client, token) = setup(SimConfig::default()).await;
    let created = client
        .create_webhook(&token, &WebhookInput { url: hook, events: vec![ActivityType::EmailSent] })
        .await
        .expect("hook");
    let secret = created.secret.expect("secret shown once");
    let cadence = client.create_cadence(&token, &two_step(None)).await.expect("create");
    client.enroll(&token, &enrollment(&cadence.id, "w@example.com")).await.expect("enroll");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while received.lock().expect("lock").is_empty() {
        assert!(std::time::Instant::now() < deadline, "webhook delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (sig, body) = received.lock().expect("lock")[0].clone();
    webhook::verify(&secret, &sig, &body, chrono::Utc::now().timestamp()).expect("valid signature");
    assert!(webhook::verify("wrong", &sig, &body, chrono::Utc::now().timestamp()).is_err());
    let batch: WebhookBatch = serde_json::from_slice(&body).expect("batch");
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].activity_type, ActivityType::EmailSent);
}
