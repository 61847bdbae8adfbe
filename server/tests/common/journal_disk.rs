//! What the journal-disk tests (`disk_full.rs`, `read_only.rs`) check alike: the server serves
//! a whole turn while nothing can be journaled, `/health` reaches a journal state, and once the
//! disk works again the lost lines are reported in a `journal.dropped` record and a sample.

use std::path::Path;

use serde_json::{Value, json};

use super::{Http, of_kind, read_journal, wait_for_async};

/// Creates a conversation and runs one whole turn; asserts both are served (`why` says what
/// the disk is doing). Returns the conversation id.
pub async fn serves_a_turn(http: &Http, why: &str) -> String {
    let (status, created) = http.json("POST", "/v1/conversations", Some(json!({}))).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, turn) = http
        .json(
            "POST",
            &format!("/v1/conversations/{id}/turns"),
            Some(json!({ "message": "size:100 rate:0" })),
        )
        .await;
    assert_eq!(status, 200, "a turn is served {why}: {turn}");
    id
}

/// Waits until `/health` answers `status` with `telemetry.journal == journal`; returns it.
pub async fn health_says(http: &Http, status: u16, journal: &str) -> Value {
    wait_for_async(&format!("/health to answer {status} with journal {journal}"), || async {
        let (s, h) = http.json("GET", "/health", None).await;
        (s == status && h["telemetry"]["journal"] == journal).then_some(h)
    })
    .await
}

/// Waits for the recovered journal in `dir` to report its drops, in a `journal.dropped` record
/// and in a sample's `dropped`; asserts neither reports more than `lost` (the `/health`
/// count). Returns the journal's records.
pub async fn drops_reported(dir: &Path, lost: u64) -> Vec<Value> {
    let (records, reported, sampled) =
        wait_for_async("a journal.dropped record and a sample with dropped", || async {
            let r = read_journal(dir);
            let reported: u64 =
                of_kind(&r, "journal.dropped").iter().filter_map(|d| d["count"].as_u64()).sum();
            let sampled: u64 =
                of_kind(&r, "memory.sample").iter().filter_map(|s| s["dropped"].as_u64()).sum();
            (reported > 0 && sampled > 0).then_some((r, reported, sampled))
        })
        .await;
    assert!(reported <= lost && sampled <= lost, "{reported} and {sampled} of {lost} lost");
    records
}
