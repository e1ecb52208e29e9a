//! The indexes' Meilisearch settings, declared once: what the Go indexer derives from its
//! document structs' tags (`searchable`, `filterable`, `sortable`) and its ranking rules. The
//! `search settings` command compares them with a server's and, with `--apply`, makes the server's
//! equal, creating a missing index with primary key `id`.

use serde_json::{Value, json};

use crate::Index;

/// The ranking rules every index starts with; each adds its own after.
const SHARED_RANKING_RULES: [&str; 7] = [
    "exactness",
    "words",
    "typo",
    "proximity",
    "attribute",
    "sort",
    "id:asc",
];

impl Index {
    /// The index's settings, as the body of `PATCH /indexes/{uid}/settings`.
    pub fn settings(self) -> Value {
        let (filterable, sortable, ranking): (&[&str], &[&str], &[&str]) = match self {
            Index::Subjects => (
                &[
                    "tag",
                    "meta_tag",
                    "date",
                    "score",
                    "rating_count",
                    "rank",
                    "type",
                    "nsfw",
                ],
                &["date", "score", "rating_count", "page_rank", "heat", "rank"],
                &["rank:asc", "score:desc", "nsfw:asc"],
            ),
            Index::Characters => (
                &["nsfw"],
                &["comment", "collect"],
                &["comment:desc", "collect:desc", "nsfw:asc"],
            ),
            Index::Persons => (
                &["career"],
                &["comment", "collect"],
                &["comment:desc", "collect:desc"],
            ),
        };
        let ranking: Vec<&str> = SHARED_RANKING_RULES
            .iter()
            .chain(ranking)
            .copied()
            .collect();
        json!({
            "searchableAttributes": ["name", "aliases"],
            "filterableAttributes": filterable,
            "sortableAttributes": sortable,
            "rankingRules": ranking,
        })
    }
}

/// The settings of `wanted` that `current` (a server's `GET /indexes/{uid}/settings`) does
/// not have, as `(name, current, wanted)`. Attribute lists are compared as sets where
/// Meilisearch keeps no order (filterable, sortable), in order elsewhere.
pub fn differences(current: &Value, wanted: &Value) -> Vec<(String, Value, Value)> {
    let unordered = ["filterableAttributes", "sortableAttributes"];
    let Some(wanted) = wanted.as_object() else {
        return Vec::new();
    };
    wanted
        .iter()
        .filter_map(|(name, want)| {
            let have = current.get(name).cloned().unwrap_or(Value::Null);
            let same = if unordered.contains(&name.as_str()) {
                sorted(&have) == sorted(want)
            } else {
                have == *want
            };
            (!same).then(|| (name.clone(), have, want.clone()))
        })
        .collect()
}

fn sorted(list: &Value) -> Vec<String> {
    let mut items: Vec<String> = list
        .as_array()
        .map(|items| items.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    items.sort();
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filterable_order_does_not_matter_ranking_order_does() {
        let wanted = Index::Persons.settings();
        let mut current = wanted.clone();
        current["filterableAttributes"] = json!(["career"]);
        current["sortableAttributes"] = json!(["collect", "comment"]);
        assert!(differences(&current, &wanted).is_empty());
        current["rankingRules"] = json!(["words", "exactness"]);
        let diff = differences(&current, &wanted);
        assert_eq!(diff.len(), 1);
        assert_eq!(diff[0].0, "rankingRules");
    }
}
