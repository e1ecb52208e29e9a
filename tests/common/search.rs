//! The search family's expectations, shared by its tests (`tests/search.rs`,
//! `tests/search_reindex.rs`): `fixtures/expected/search.json` ([`Expected`]) and the comparison
//! of an index prefix's documents with it ([`assert_documents`]).

use serde::Deserialize;
use serde_json::Value;

use crate::fixtures;
use crate::meili::Meili;

/// The tables whose rows the documents are made of.
pub const TABLES: [&str; 4] = [
    "chii_subjects",
    "chii_subject_fields",
    "chii_characters",
    "chii_persons",
];

/// `fixtures/expected/search.json`.
#[derive(Debug, Deserialize)]
pub struct Expected {
    pub subjects: Vec<Entity>,
    pub characters: Vec<Entity>,
    pub persons: Vec<Entity>,
    pub searches: Vec<ExpectedSearch>,
}

/// An entity of the fixtures: its document, or why it has none.
#[derive(Debug, Deserialize)]
pub struct Entity {
    pub id: u32,
    #[serde(default)]
    pub document: Option<Value>,
    #[serde(default)]
    pub absent: Option<String>,
}

/// A search that finds an entity (by an alias).
#[derive(Debug, Deserialize)]
pub struct ExpectedSearch {
    pub index: String,
    pub q: String,
    pub expect_id: u32,
}

impl Expected {
    /// Reads `fixtures/expected/search.json`.
    pub fn load() -> Self {
        let path = fixtures::dir().join("expected/search.json");
        let text = std::fs::read_to_string(&path).expect("search.json");
        serde_json::from_str(&text).expect("search.json parses")
    }

    /// The entities of each index, by the index's name.
    pub fn by_index(&self) -> [(&'static str, &[Entity]); 3] {
        [
            ("subjects", &self.subjects),
            ("characters", &self.characters),
            ("persons", &self.persons),
        ]
    }
}

/// A JSON value with every number as a float: Go writes a whole float64 as `8`, which equals
/// `8.0`.
pub fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every expected entity as Meilisearch returns it from the indexes under `index_prefix`;
/// panics naming the first difference (`when` says which run).
pub async fn assert_documents(meili: &Meili, index_prefix: &str, expected: &Expected, when: &str) {
    for (index, entities) in expected.by_index() {
        let uid = format!("{index_prefix}{index}");
        for entity in entities {
            let got = meili
                .get_document(&uid, &entity.id.to_string())
                .await
                .expect("get document");
            match (&entity.document, got) {
                (Some(want), Some(got)) => assert_eq!(
                    numbers_as_floats(&got),
                    numbers_as_floats(want),
                    "{when}: {index} {}",
                    entity.id
                ),
                (None, None) => {}
                (want, got) => panic!(
                    "{when}: {index} {}: expected {}, Meilisearch has {got:?}",
                    entity.id,
                    want.as_ref()
                        .map_or_else(|| format!("none ({:?})", entity.absent), Value::to_string)
                ),
            }
        }
    }
}
