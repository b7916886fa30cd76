//! One contract, every bus: the in-process bus always, NATS JetStream when
//! `GOMARK_TEST_NATS_URL` is set (and then it must be reachable).

use gomark_events::bus::{BusKind, BusSettings, ConsumerSpec, EventBus, EventStream};
use gomark_events::envelope::new_event;
use gomark_events::memory::MemoryBus;
use gomark_events::nats::NatsBus;
use gomark_events::{Delivery, EventEnvelope};
use gomark_proto::events::v1::CompanyCreated;
use std::sync::Arc;
use std::time::Duration;

struct Subject {
    label: &'static str,
    bus: Arc<dyn EventBus>,
    nats: Option<Arc<NatsBus>>,
}

async fn buses() -> Vec<Subject> {
    let mut all = vec![Subject { label: "memory", bus: Arc::new(MemoryBus::new()), nats: None }];
    match gomark_testkit::nats_url() {
        Some(url) => {
            let token = gomark_testkit::unique("t");
            let settings =
                BusSettings { kind: BusKind::Nats, nats_url: url, stream: token.to_uppercase(), subject_prefix: token };
            let nats = Arc::new(
                NatsBus::connect(&settings).await.expect("GOMARK_TEST_NATS_URL is set but NATS is unreachable"),
            );
            all.push(Subject { label: "nats", bus: nats.clone(), nats: Some(nats) });
        }
        None => gomark_testkit::note_skipped("nats bus contract", gomark_testkit::NATS_VAR),
    }
    all
}

async fn cleanup(subjects: Vec<Subject>) {
    for s in subjects {
        if let Some(nats) = s.nats {
            nats.delete_stream().await.expect("delete test stream");
        }
    }
}

fn event(company: &str, event_type: &str) -> EventEnvelope {
    new_event(company, event_type, &CompanyCreated::default())
}

async fn next(stream: &mut Box<dyn EventStream>, label: &str) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap_or_else(|_| panic!("{label}: no delivery within 10s"))
        .expect("stream ended")
        .expect("delivery")
}

async fn nothing_within(stream: &mut Box<dyn EventStream>, wait: Duration) -> bool {
    tokio::time::timeout(wait, stream.next()).await.is_err()
}

#[tokio::test]
async fn a_durable_consumer_gets_events_of_its_type_in_order() {
    let subjects = buses().await;
    for s in &subjects {
        let a1 = event("c1", "test.a");
        let b1 = event("c1", "test.b");
        let a2 = event("c2", "test.a");
        for e in [&a1, &b1, &a2] {
            s.bus.publish(e).await.expect("publish");
        }
        let mut stream = s.bus.subscribe(&ConsumerSpec::new("contract.a", "test.a")).await.expect("subscribe");
        let d1 = next(&mut stream, s.label).await;
        assert_eq!(d1.event, a1, "{}", s.label);
        assert_eq!(d1.attempt, 1, "{}", s.label);
        d1.ack().await.expect("ack");
        let d2 = next(&mut stream, s.label).await;
        assert_eq!(d2.event.id, a2.id, "{}: events of another type are filtered out", s.label);
        d2.ack().await.expect("ack");
        assert!(nothing_within(&mut stream, Duration::from_millis(300)).await, "{}", s.label);
    }
    cleanup(subjects).await;
}

#[tokio::test]
async fn a_published_batch_arrives_whole_in_order_and_deduped() {
    let subjects = buses().await;
    for s in &subjects {
        let batch: Vec<EventEnvelope> = (0..150).map(|i| event(&format!("c{i}"), "test.batch")).collect();
        s.bus.publish(&batch[0]).await.expect("publish one");
        // The relay may resend a batch it already sent (a crash before deleting it from the outbox).
        s.bus.publish_all(&batch).await.expect("publish batch");
        let mut stream = s.bus.subscribe(&ConsumerSpec::new("contract.batch", "test.batch")).await.expect("subscribe");
        for expected in &batch {
            let d = next(&mut stream, s.label).await;
            assert_eq!(d.event.id, expected.id, "{}: order kept, first event not repeated", s.label);
            d.ack().await.expect("ack");
        }
        assert!(nothing_within(&mut stream, Duration::from_millis(300)).await, "{}: no duplicates", s.label);
    }
    cleanup(subjects).await;
}

#[tokio::test]
async fn acked_events_are_not_redelivered_after_resubscribing() {
    let subjects = buses().await;
    for s in &subjects {
        let spec = ConsumerSpec::new("contract.resume", "test.resume");
        let first = event("c1", "test.resume");
        s.bus.publish(&first).await.expect("publish");
        {
            let mut stream = s.bus.subscribe(&spec).await.expect("subscribe");
            next(&mut stream, s.label).await.ack().await.expect("ack");
        }
        let second = event("c1", "test.resume");
        s.bus.publish(&second).await.expect("publish");
        let mut stream = s.bus.subscribe(&spec).await.expect("resubscribe");
        let d = next(&mut stream, s.label).await;
        assert_eq!(d.event.id, second.id, "{}: resumes after the acked event", s.label);
        d.ack().await.expect("ack");
    }
    cleanup(subjects).await;
}

#[tokio::test]
async fn a_nak_brings_the_event_back_with_a_higher_attempt() {
    let subjects = buses().await;
    for s in &subjects {
        let e = event("c1", "test.nak");
        s.bus.publish(&e).await.expect("publish");
        let mut stream = s.bus.subscribe(&ConsumerSpec::new("contract.nak", "test.nak")).await.expect("subscribe");
        let d = next(&mut stream, s.label).await;
        d.nak(Duration::from_millis(50)).await.expect("nak");
        let again = next(&mut stream, s.label).await;
        assert_eq!(again.event.id, e.id, "{}", s.label);
        assert_eq!(again.attempt, 2, "{}", s.label);
        again.ack().await.expect("ack");
    }
    cleanup(subjects).await;
}

#[tokio::test]
async fn publishing_the_same_event_twice_delivers_it_once() {
    let subjects = buses().await;
    for s in &subjects {
        let e = event("c1", "test.dup");
        s.bus.publish(&e).await.expect("publish");
        s.bus.publish(&e).await.expect("publish again");
        let mut stream = s.bus.subscribe(&ConsumerSpec::new("contract.dup", "test.dup")).await.expect("subscribe");
        next(&mut stream, s.label).await.ack().await.expect("ack");
        assert!(nothing_within(&mut stream, Duration::from_millis(300)).await, "{}: duplicate delivered", s.label);
    }
    cleanup(subjects).await;
}

#[tokio::test]
async fn two_durable_consumers_each_get_every_event() {
    let subjects = buses().await;
    for s in &subjects {
        let e = event("c1", "test.fan");
        s.bus.publish(&e).await.expect("publish");
        for durable in ["contract.fan1", "contract.fan2"] {
            let mut stream = s.bus.subscribe(&ConsumerSpec::new(durable, "test.fan")).await.expect("subscribe");
            let d = next(&mut stream, s.label).await;
            assert_eq!(d.event.id, e.id, "{}", s.label);
            d.ack().await.expect("ack");
        }
    }
    cleanup(subjects).await;
}

#[tokio::test]
async fn an_unsettled_delivery_comes_back() {
    let subjects = buses().await;
    for s in &subjects {
        if s.label == "nats" {
            // JetStream redelivers after ack_wait (30 s); covered by the nak test instead.
            continue;
        }
        let e = event("c1", "test.drop");
        s.bus.publish(&e).await.expect("publish");
        let mut stream = s.bus.subscribe(&ConsumerSpec::new("contract.drop", "test.drop")).await.expect("subscribe");
        drop(next(&mut stream, s.label).await);
        let again = next(&mut stream, s.label).await;
        assert_eq!(again.event.id, e.id);
        again.ack().await.expect("ack");
    }
    cleanup(subjects).await;
}

#[tokio::test]
async fn batches_come_in_order_and_a_nakd_batch_comes_back_whole() {
    let subjects = buses().await;
    for s in &subjects {
        let spec = ConsumerSpec::new("batcher", "test.batched");
        let mut stream = s.bus.subscribe(&spec).await.expect("subscribe");
        let sent: Vec<EventEnvelope> = (0..5).map(|i| event(&format!("c{i}"), "test.batched")).collect();
        s.bus.publish_all(&sent).await.expect("publish");
        let ids = |batch: &[Delivery]| batch.iter().map(|d| d.event.id.clone()).collect::<Vec<_>>();
        let want: Vec<String> = sent.iter().map(|e| e.id.clone()).collect();

        let mut batch = Vec::new();
        while batch.len() < 5 {
            let more = tokio::time::timeout(Duration::from_secs(10), stream.next_batch(10))
                .await
                .unwrap_or_else(|_| panic!("{}: no batch within 10s", s.label))
                .expect("stream open")
                .expect("batch");
            batch.extend(more);
        }
        assert_eq!(ids(&batch), want, "{}: in order", s.label);
        for d in batch {
            d.nak(Duration::from_millis(50)).await.expect("nak");
        }
        let mut again = Vec::new();
        while again.len() < 5 {
            let more = tokio::time::timeout(Duration::from_secs(10), stream.next_batch(10))
                .await
                .unwrap_or_else(|_| panic!("{}: the nak'd batch did not come back", s.label))
                .expect("stream open")
                .expect("batch");
            again.extend(more);
        }
        let mut got = ids(&again);
        got.sort();
        let mut expected = want.clone();
        expected.sort();
        assert_eq!(got, expected, "{}: every event of the batch again", s.label);
        assert!(again.iter().all(|d| d.attempt == 2), "{}: second attempt", s.label);
        for d in again {
            d.ack().await.expect("ack");
        }
        assert!(nothing_within(&mut stream, Duration::from_millis(300)).await, "{}: acked means done", s.label);
    }
    cleanup(subjects).await;
}

/// Publishes `n` events of `event_type` and reads them all without acknowledging any.
async fn hold_unacked(bus: &dyn EventBus, spec: &ConsumerSpec, n: usize, label: &str) {
    let events: Vec<EventEnvelope> = (0..n).map(|i| event(&format!("c{i}"), &spec.event_type)).collect();
    bus.publish_all(&events).await.expect("publish");
    let mut stream = bus.subscribe(spec).await.expect("subscribe");
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(next(&mut stream, label).await);
    }
    let ids: Vec<&str> = held.iter().map(|d| d.event.id.as_str()).collect();
    let published: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, published, "{label}: every event, in order");
    for delivery in held {
        delivery.ack().await.expect("ack");
    }
}

#[tokio::test]
async fn a_consumer_may_hold_more_than_a_thousand_deliveries_unacked() {
    // A batch consumer holds several batches unacked at once (being handled, being acked,
    // gathered ahead); at NATS's default cap of 1,000 unacked deliveries the pull consumer
    // stalled. (The in-process bus hands out one batch at a time until it is settled.)
    let subjects = buses().await;
    for s in subjects.iter().filter(|s| s.label == "nats") {
        hold_unacked(s.bus.as_ref(), &ConsumerSpec::new("contract.hold", "test.hold"), 1_500, s.label).await;
    }
    cleanup(subjects).await;
}

#[tokio::test]
async fn a_consumer_created_with_the_servers_cap_has_it_lifted() {
    let Some(url) = gomark_testkit::nats_url() else {
        gomark_testkit::note_skipped("nats consumer upgrade", gomark_testkit::NATS_VAR);
        return;
    };
    let token = gomark_testkit::unique("t");
    let settings = BusSettings {
        kind: BusKind::Nats,
        nats_url: url.clone(),
        stream: token.to_uppercase(),
        subject_prefix: token.clone(),
    };
    let bus = NatsBus::connect(&settings).await.expect("connect");
    // The durable consumer as an earlier version created it: the server's default cap.
    let js = async_nats::jetstream::new(async_nats::connect(url.as_str()).await.expect("connect"));
    let stream = js.get_stream(token.to_uppercase()).await.expect("stream");
    let old: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("contract_upgrade".into()),
            filter_subject: format!("{token}.test.upgrade.>"),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("old consumer");
    assert_eq!(old.cached_info().config.max_ack_pending, 1_000, "the server's default cap");

    hold_unacked(&bus, &ConsumerSpec::new("contract.upgrade", "test.upgrade"), 1_500, "nats").await;
    let mut now: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("contract_upgrade").await.expect("consumer");
    assert_eq!(now.info().await.expect("info").config.max_ack_pending, -1, "the cap is lifted");
    bus.delete_stream().await.expect("delete test stream");
}

#[tokio::test]
async fn an_announcement_reaches_every_listener_of_now_and_no_later_one() {
    use futures::StreamExt;
    let subjects = buses().await;
    for s in &subjects {
        let mut first = s.bus.listen("contract.hints").await.expect("listen");
        let mut second = s.bus.listen("contract.hints").await.expect("listen");
        let mut other = s.bus.listen("contract.other").await.expect("listen");
        // Core NATS subscriptions reach the server asynchronously: a flush-like pause.
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.bus.announce("contract.hints", bytes::Bytes::from_static(b"one")).await.expect("announce");
        for listener in [&mut first, &mut second] {
            let heard = tokio::time::timeout(Duration::from_secs(5), listener.next()).await;
            assert_eq!(heard.expect("heard within 5 s").as_deref(), Some(&b"one"[..]), "{}", s.label);
        }
        let mut late = s.bus.listen("contract.hints").await.expect("listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (label, listener) in [("other topic", &mut other), ("late listener", &mut late)] {
            let heard = tokio::time::timeout(Duration::from_millis(300), listener.next()).await;
            assert!(heard.is_err(), "{}: the {label} heard an announcement not meant for it", s.label);
        }
        for bad in ["", "a..b", "a b", "a.>"] {
            assert!(s.bus.announce(bad, bytes::Bytes::new()).await.is_err(), "{}: topic {bad:?} refused", s.label);
            assert!(s.bus.listen(bad).await.is_err(), "{}: topic {bad:?} refused", s.label);
        }
    }
    cleanup(subjects).await;
}
