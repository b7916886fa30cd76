//! One contract, every cache: in-memory always, Redis when `GOMARK_TEST_REDIS_URL` is set.
//! Plus: cache-aside keeps answering from the source when Redis is down.

use gomark_cache::{Cache, CacheAside, MemoryCache, RedisCache};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn caches() -> Vec<(&'static str, Arc<dyn Cache>)> {
    let prefix = gomark_testkit::unique("t");
    let mut all: Vec<(&'static str, Arc<dyn Cache>)> = vec![("memory", Arc::new(MemoryCache::new(&prefix)))];
    match gomark_testkit::redis_url() {
        Some(url) => {
            all.push(("redis", Arc::new(RedisCache::new(&url, &prefix, Duration::from_secs(2)).expect("redis pool"))))
        }
        None => gomark_testkit::note_skipped("redis cache contract", gomark_testkit::REDIS_VAR),
    }
    all
}

#[tokio::test]
async fn set_get_delete_and_expiry() {
    for (label, cache) in caches() {
        assert_eq!(cache.get("k").await.expect(label), None, "{label}: empty at first");
        cache.set("k", b"v1", Duration::from_secs(30)).await.expect(label);
        assert_eq!(cache.get("k").await.expect(label).as_deref(), Some(&b"v1"[..]), "{label}");
        cache.set("k", b"v2", Duration::from_secs(30)).await.expect(label);
        assert_eq!(cache.get("k").await.expect(label).as_deref(), Some(&b"v2"[..]), "{label}: overwritten");
        cache.delete("k").await.expect(label);
        assert_eq!(cache.get("k").await.expect(label), None, "{label}: deleted");
        cache.set("short", b"x", Duration::from_millis(50)).await.expect(label);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(cache.get("short").await.expect(label), None, "{label}: expired");
        cache.delete("never-set").await.expect("deleting a missing key is fine");
    }
}

#[tokio::test]
async fn delete_all_deletes_exactly_the_keys_named() {
    for (label, cache) in caches() {
        for key in ["a", "b", "c"] {
            cache.set(key, key.as_bytes(), Duration::from_secs(30)).await.expect(label);
        }
        cache.delete_all(&["a".into(), "c".into(), "never-set".into()]).await.expect(label);
        cache.delete_all(&[]).await.expect("no keys is fine");
        assert_eq!(cache.get("a").await.expect(label), None, "{label}: a deleted");
        assert_eq!(cache.get("c").await.expect(label), None, "{label}: c deleted");
        assert_eq!(cache.get("b").await.expect(label).as_deref(), Some(&b"b"[..]), "{label}: b kept");
    }
}

#[tokio::test]
async fn counters_count_within_their_window() {
    for (label, cache) in caches() {
        for expected in 1..=3 {
            assert_eq!(cache.incr("hits", Duration::from_millis(300)).await.expect(label), expected, "{label}");
        }
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(cache.incr("hits", Duration::from_millis(300)).await.expect(label), 1, "{label}: a new window");
    }
}

#[tokio::test]
async fn a_rolling_window_never_holds_more_than_its_max() {
    for (label, cache) in caches() {
        // Wide margins: sleeps overshoot on a loaded machine, and that must not matter.
        let window = Duration::from_millis(1200);
        for i in 0..3 {
            assert_eq!(
                cache.acquire_slot("w", window, 3, &format!("s{i}")).await.expect(label),
                None,
                "{label}: use {i}"
            );
        }
        let wait = cache.acquire_slot("w", window, 3, "s3").await.expect(label).expect("full");
        assert!(wait <= window && wait > Duration::ZERO, "{label}: {wait:?}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Two uses really happened only now: they count from now on.
        cache.restamp_slot("w", "s0").await.expect(label);
        cache.restamp_slot("w", "s1").await.expect(label);
        tokio::time::sleep(Duration::from_millis(650)).await;
        assert_eq!(cache.acquire_slot("w", window, 3, "s4").await.expect(label), None, "{label}: s2 left the window");
        assert!(
            cache.acquire_slot("w", window, 3, "s5").await.expect(label).is_some(),
            "{label}: restamped s0, s1 still count"
        );
        assert!(
            cache.acquire_slot("other", window, 1, "x").await.expect(label).is_none(),
            "{label}: keys are separate"
        );
    }
}

#[tokio::test]
async fn prefixes_isolate_callers() {
    for (label, cache) in caches() {
        cache.set("shared", b"mine", Duration::from_secs(30)).await.expect(label);
    }
    for (label, cache) in caches() {
        assert_eq!(cache.get("shared").await.expect(label), None, "{label}: another prefix sees nothing");
    }
}

#[tokio::test]
async fn cache_aside_loads_once_then_hits_until_invalidated() {
    for (label, cache) in caches() {
        let aside = CacheAside::new(cache, Duration::from_secs(30));
        let loads = AtomicU32::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(vec![1, 2, 3])
        };
        assert_eq!(aside.get_or_load("list", load).await.expect(label), vec![1, 2, 3]);
        assert_eq!(aside.get_or_load("list", load).await.expect(label), vec![1, 2, 3]);
        assert_eq!(loads.load(Ordering::SeqCst), 1, "{label}: second read is a hit");
        aside.invalidate("list").await;
        aside.get_or_load("list", load).await.expect(label);
        assert_eq!(loads.load(Ordering::SeqCst), 2, "{label}: invalidation forces a reload");
    }
}

#[tokio::test]
async fn a_redis_that_is_down_is_a_miss_not_an_error() {
    // Nothing listens on port 1: every call fails fast.
    let down = RedisCache::new("redis://127.0.0.1:1", "t", Duration::from_millis(100)).expect("pool");
    assert!(down.get("k").await.is_err(), "the raw cache reports the outage");
    let aside = CacheAside::new(Arc::new(down), Duration::from_secs(30));
    let value = aside.get_or_load("k", || async { Ok::<_, std::io::Error>("from the database".to_string()) }).await;
    assert_eq!(value.expect("answered"), "from the database");
}
