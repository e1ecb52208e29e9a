//! The timeline cache trims against real Redis (reference §6): each job keeps exactly the
//! newest 1000 (global) or 200 (every inbox, every user timeline) items by score, and touches
//! no key outside its pattern, nor keys of its pattern that are not sorted sets. Also: one
//! replica at a time (the lock).

use fleet_harness::{redis, redis_uri, unique};
use redis::AsyncCommands;
use timeline::trim::{Job, Ran, run_locked};

async fn fill(prefix: &str, key: &str, items: u64) {
    let mut conn = redis().await.expect("redis");
    let members: Vec<(u64, u64)> = (1..=items).map(|i| (i, i)).collect();
    for chunk in members.chunks(1000) {
        let _: () = conn
            .zadd_multiple(format!("{prefix}{key}"), chunk)
            .await
            .expect("zadd");
    }
}

async fn members(prefix: &str, key: &str) -> Vec<u64> {
    let mut conn = redis().await.expect("redis");
    conn.zrange(format!("{prefix}{key}"), 0, -1)
        .await
        .expect("zrange")
}

/// The newest `keep` of `1..=n`.
fn newest(n: u64, keep: u64) -> Vec<u64> {
    (n.saturating_sub(keep) + 1..=n).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_job_keeps_exactly_the_newest_and_touches_nothing_else() {
    let prefix = format!("{}:", unique("it.tml.trim"));
    let manager = cdc_runtime::sink::redis(&redis_uri()).expect("redis");
    let mut conn = redis().await.expect("redis");
    fill(&prefix, "tml:v3:inbox:0", 1500).await;
    fill(&prefix, "tml:v3:inbox:7", 350).await;
    fill(&prefix, "tml:v3:inbox:8", 150).await;
    fill(&prefix, "tml:v3:user:7", 300).await;
    // Bystanders: other patterns and a non-zset under the pattern.
    fill(&prefix, "tml:v3:other:7", 500).await;
    fill(&prefix, "tml:v2:inbox:7", 500).await;
    let _: () = conn
        .set(format!("{prefix}tml:v3:inbox:string"), "x")
        .await
        .expect("set");
    // Another prefix's keys are not ours to trim.
    let other = format!("{}:", unique("it.tml.trim.other"));
    fill(&other, "tml:v3:inbox:0", 1500).await;

    assert_eq!(
        run_locked(&manager, &prefix, Job::Global)
            .await
            .expect("global"),
        Ran::Trimmed {
            keys: 1,
            removed: 500
        }
    );
    assert_eq!(members(&prefix, "tml:v3:inbox:0").await, newest(1500, 1000));
    assert_eq!(
        members(&prefix, "tml:v3:inbox:7").await.len(),
        350,
        "global touches only inbox:0"
    );

    assert_eq!(
        run_locked(&manager, &prefix, Job::Inbox)
            .await
            .expect("inbox"),
        Ran::Trimmed {
            keys: 3,
            removed: 800 + 150
        }
    );
    assert_eq!(
        members(&prefix, "tml:v3:inbox:0").await,
        newest(1500, 200),
        "upstream: inbox:* includes 0"
    );
    assert_eq!(members(&prefix, "tml:v3:inbox:7").await, newest(350, 200));
    assert_eq!(members(&prefix, "tml:v3:inbox:8").await, newest(150, 200));
    assert_eq!(
        members(&prefix, "tml:v3:user:7").await.len(),
        300,
        "inbox job spares user timelines"
    );

    assert_eq!(
        run_locked(&manager, &prefix, Job::User)
            .await
            .expect("user"),
        Ran::Trimmed {
            keys: 1,
            removed: 100
        }
    );
    assert_eq!(members(&prefix, "tml:v3:user:7").await, newest(300, 200));

    assert_eq!(members(&prefix, "tml:v3:other:7").await.len(), 500);
    assert_eq!(members(&prefix, "tml:v2:inbox:7").await.len(), 500);
    let s: String = conn
        .get(format!("{prefix}tml:v3:inbox:string"))
        .await
        .expect("get");
    assert_eq!(s, "x");
    assert_eq!(members(&other, "tml:v3:inbox:0").await.len(), 1500);
    let lock: bool = conn
        .exists(format!("{prefix}lock:timeline:trim:global"))
        .await
        .expect("exists");
    assert!(!lock, "the lock is released after a run");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_makes_other_replicas_skip() {
    let prefix = format!("{}:", unique("it.tml.lock"));
    let manager = cdc_runtime::sink::redis(&redis_uri()).expect("redis");
    fill(&prefix, "tml:v3:inbox:0", 1100).await;
    let mut conn = redis().await.expect("redis");
    let _: () = conn
        .set_ex(
            format!("{prefix}lock:timeline:trim:global"),
            "another-replica",
            60,
        )
        .await
        .expect("lock");
    assert_eq!(
        run_locked(&manager, &prefix, Job::Global)
            .await
            .expect("run"),
        Ran::Locked
    );
    assert_eq!(
        members(&prefix, "tml:v3:inbox:0").await.len(),
        1100,
        "nothing trimmed"
    );
    let holder: String = conn
        .get(format!("{prefix}lock:timeline:trim:global"))
        .await
        .expect("get");
    assert_eq!(
        holder, "another-replica",
        "someone else's lock is left alone"
    );
}
