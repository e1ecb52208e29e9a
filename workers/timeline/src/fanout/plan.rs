//! One `chii_timeline` change → what the fan-out must do with it (pure, no I/O), following
//! server-private's `event/timeline.ts`.
//!
//! Not here: follower lookups and Redis (see [`super::apply`]).

use cdc_schemas::{Op, Row, RowChange};

/// The table this fan-out reacts to (routing is by `source.table`, as server-private does).
pub const TABLE: &str = "chii_timeline";

/// A timeline item as the fan-out sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `tml_id`.
    pub tml_id: u64,
    /// `tml_uid`: the author.
    pub uid: u64,
    /// `tml_cat`.
    pub cat: u64,
    /// The event's `SourcePosition::to_key()`: the fence value.
    pub position: String,
}

/// What one change asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// op `c`: add to the global, user and follower inboxes, publish.
    Create(Item),
    /// op `d`: remove from the same sets, drop the item cache (`item_key_id`, from the message
    /// key as server-private reads it).
    Delete {
        /// The deleted row (`before`).
        item: Item,
        /// `key.tml_id`.
        item_key_id: u64,
    },
    /// op `u`: drop the item cache `tml:v4:item:{id}`.
    Invalidate {
        /// `key.tml_id`.
        tml_id: u64,
    },
    /// Nothing to do; the reason is a metric label.
    Skip(&'static str),
}

/// Plans `change`. An `Err` is a permanent rejection naming what is missing.
pub fn plan(change: &RowChange) -> Result<Plan, String> {
    if change.table() != TABLE {
        return Ok(Plan::Skip("unknown_table"));
    }
    let position = change.position().to_key();
    match change.op {
        Op::Read => Ok(Plan::Skip("snapshot")),
        Op::Create => {
            let after = change
                .after
                .as_ref()
                .ok_or("chii_timeline create without `after`")?;
            Ok(Plan::Create(item(after, "after", position)?))
        }
        Op::Delete => {
            let before = change
                .before
                .as_ref()
                .ok_or("chii_timeline delete without `before`")?;
            let item = item(before, "before", position)?;
            let item_key_id = key_id(change).unwrap_or(item.tml_id);
            Ok(Plan::Delete { item, item_key_id })
        }
        Op::Update => {
            let tml_id = match key_id(change) {
                Some(id) => id,
                None => change
                    .after
                    .as_ref()
                    .and_then(|r| r.u64("tml_id").ok())
                    .ok_or("chii_timeline update without key.tml_id")?,
            };
            Ok(Plan::Invalidate { tml_id })
        }
    }
}

fn key_id(change: &RowChange) -> Option<u64> {
    change.key.as_ref().and_then(|k| k.u64("tml_id").ok())
}

fn item(row: &Row, image: &str, position: String) -> Result<Item, String> {
    let column = |name: &str| {
        row.u64(name)
            .map_err(|e| format!("chii_timeline {image}.{name}: {e}"))
    };
    Ok(Item {
        tml_id: column("tml_id")?,
        uid: column("tml_uid")?,
        cat: column("tml_cat")?,
        position,
    })
}

/// The `PUBLISH events:tml:create` payload: `{"tml_id":…,"cat":…,"uid":…}`, in that order
/// (server-private's `JSON.stringify` of a literal).
pub fn create_payload(item: &Item) -> String {
    format!(
        r#"{{"tml_id":{},"cat":{},"uid":{}}}"#,
        item.tml_id, item.cat, item.uid
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_keeps_server_privates_key_order() {
        let item = Item {
            tml_id: 10,
            uid: 1,
            cat: 3,
            position: String::new(),
        };
        assert_eq!(create_payload(&item), r#"{"tml_id":10,"cat":3,"uid":1}"#);
    }
}
