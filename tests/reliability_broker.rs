//! The reliability suite's broker restart (the other scenarios are in `reliability.rs`).
//!
//! - `broker_restart_of_20s`: the broker goes away for 20 s mid-stream and comes back: the
//!   worker reports not ready meanwhile, dead-letters nothing, loses nothing, and ends in the
//!   state a fault-free, in-order run of the same stream leaves (compared key by key).
//!
//! How the broker "restarts": tansu's memory storage cannot survive a real restart, so the
//! broker is a private tansu (its own port) advertised through a TCP proxy of the harness
//! ([`fleet_harness::proxy`]): every client, the worker and the harness, connects to the proxy.
//! Taking the proxy down resets every connection and refuses new ones for 20 s, which is what
//! clients see while a broker restarts; the broker's log and group state survive, as a real
//! broker's would on disk. This file is its own test binary because it points the whole
//! harness at that private broker ([`fleet_harness::use_brokers`]).

use std::time::{Duration, Instant};

use fleet_harness::proxy::PrivateBroker;
use fleet_harness::scenario::{Lane, Stream, fault_free_state, recovery, report, scale, wait_for};
use fleet_harness::state::assert_same_state;
use fleet_harness::{redis_uri, use_brokers};

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_of_20s() {
    let started = Instant::now();
    let mut broker = PrivateBroker::start().await.expect("private broker");
    use_brokers(&broker.addr()).expect("use the private broker");
    let family = cache_invalidation::FAMILY;
    let stream = Stream::members(3_000 * scale());
    // The reference first: it shares the broker, and must not see the outage.
    let expected = fault_free_state(family, "broker", &stream).await;

    let lane = Lane::new(family, "broker", &redis_uri(), None).await;
    lane.prepare(&stream).await;
    let worker = lane.start(&[]).await;
    let third = stream.records.len() / 3;
    lane.produce(&stream.records[..third]).await;
    lane.drained().await;
    // Records the worker has not fetched yet, then the broker goes away.
    let more = 2 * stream.records.len() / 3;
    lane.produce(&stream.records[third..more]).await;
    broker.proxy.down().await;
    let outage = Instant::now();
    wait_for(
        "not ready while the broker is down",
        Duration::from_secs(15),
        async || !worker.ready().await,
    )
    .await;
    // The DLQ depth cannot be read while the broker is away: checked after.
    while outage.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!worker.ready().await, "ready during the broker outage");
    }
    broker.proxy.up().await.expect("broker back");
    let recovered = recovery(&worker).await;
    assert_eq!(
        lane.dlq_depth(),
        0,
        "nothing dead-lettered during the outage"
    );
    lane.produce(&stream.records[more..]).await;
    lane.drained().await;
    worker.stop().await;
    assert_eq!(lane.dlq_depth(), 0, "zero dead letters");
    assert_eq!(lane.committed(), lane.ends(), "committed to every end");
    assert_same_state("broker restart", &lane.state().await, &expected);
    lane.clean_up().await;
    report(
        "broker_restart_of_20s",
        stream.records.len(),
        0,
        started,
        &format!(
            "outage=20s ready_again_after={:.1}s",
            recovered.as_secs_f64()
        ),
    );
}
