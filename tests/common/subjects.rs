//! Subjects for the subject-date family: the `chii_subjects` rows the fixtures leave behind (the
//! rows a worker reads back), and the date columns of `chii_subject_fields`.

use anyhow::Context;
use serde::Deserialize;

use crate::fixtures;

/// The columns of a `chii_subjects` row the date depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `subject_id`.
    pub id: u32,
    /// `subject_type_id`.
    pub type_id: u16,
    /// `subject_platform`.
    pub platform: u16,
    /// `field_infobox`.
    pub infobox: String,
}

/// The date columns of a `chii_subject_fields` row.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Date {
    /// `field_year`.
    #[serde(rename = "field_year")]
    pub year: u32,
    /// `field_mon`.
    #[serde(rename = "field_mon")]
    pub month: i32,
    /// `field_date`, as MariaDB prints it.
    #[serde(rename = "field_date")]
    pub date: String,
}

impl Date {
    /// What `chii_subject_fields` rows are seeded with: no date.
    pub fn unset() -> Self {
        Self {
            year: 0,
            month: 0,
            date: "0000-00-00".into(),
        }
    }
}

/// Every subject as the fixtures leave it: the last row image of each `subject_id` on the
/// `chii_subjects` topic, without the subjects whose last change deletes them.
pub fn as_the_fixtures_leave_them() -> anyhow::Result<Vec<Subject>> {
    let mut subjects: Vec<Subject> = fixtures::rows_as_left("chii_subjects")?
        .iter()
        .map(subject_of)
        .collect::<anyhow::Result<_>>()?;
    subjects.sort_by_key(|s| s.id);
    Ok(subjects)
}

fn subject_of(row: &serde_json::Map<String, serde_json::Value>) -> anyhow::Result<Subject> {
    let number = |column: &str| {
        row.get(column)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("{column} missing or not a number"))
    };
    Ok(Subject {
        id: u32::try_from(number("subject_id")?)?,
        type_id: u16::try_from(number("subject_type_id")?)?,
        platform: u16::try_from(number("subject_platform")?)?,
        infobox: row
            .get("field_infobox")
            .and_then(serde_json::Value::as_str)
            .context("field_infobox missing")?
            .to_owned(),
    })
}
