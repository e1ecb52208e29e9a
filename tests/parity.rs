//! The parity harness (`make parity`, [`fleet_harness::parity`]) end to end: the `parity`
//! binary with the reference script (`scripts/legacy_reference.py`) as the legacy worker, on the
//! real Debezium fixtures, against the real broker and two Redis servers of its own. Equal
//! rules give parity (the documented differences of the baseline aside); a reference told to
//! diverge is caught, the diverging key named.

use std::process::{Command, Output};

use fleet_harness::parity::REFERENCE_LEGACY_CMD;
use fleet_harness::process::worker_binary;

fn parity(legacy_cmd: &str) -> Output {
    let out = Command::new(worker_binary("parity").expect("parity binary"))
        .env("LEGACY_CMD", legacy_cmd)
        .env_remove("EVENTS")
        .env_remove("BASELINE")
        .env_remove("FAMILY")
        .output()
        .expect("run parity");
    eprintln!(
        "{}{}exit {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

#[test]
fn the_reference_script_is_at_parity_with_the_family() {
    let out = parity(REFERENCE_LEGACY_CMD);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(", 0 unexpected;"), "{stdout}");
    // chii_friends: the legacy worker drops its keyless records (README, "Where we deliberately
    // differ"), listed as known differences.
    assert!(stdout.contains("6 known differences"), "{stdout}");
    assert!(
        stdout.contains("+ family only: DEL user:followers:1"),
        "{stdout}"
    );
    assert!(stdout.ends_with("PARITY\n"), "{stdout}");
}

#[test]
fn a_diverging_legacy_worker_fails_with_the_key_named() {
    let key = "parity-test:diverging";
    let out = parity(&format!("{REFERENCE_LEGACY_CMD} --diverge {key}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("DIFFERS: seq "), "{stdout}");
    assert!(
        stdout.contains(&format!("- legacy only: DEL {key}")),
        "{stdout}"
    );
    assert!(stdout.contains(", 1 unexpected;"), "{stdout}");
    assert!(stdout.ends_with("DIVERGENCE\n"), "{stdout}");
}
