//! Rows → Meilisearch documents, by the rules of Bangumi's Go indexer (`bangumi/server`
//! `internal/search/{subject,character,person}`): which fields, from which columns, how aliases,
//! dates, scores and tags are made. Pure: rows in, documents out.
//!
//! # Layout
//! - [`SubjectRow`], [`CharacterRow`], [`PersonRow`]: the columns a document is made of.
//! - [`Built`]: a document, or why the entity has none (its document is deleted).
//! - `aliases`, `date_number`, `score`, `tag_names`: the rules, one function each.

use bangumi_wiki::{FieldValue, Wiki};
use serde::Deserialize;
use serde_json::{Map, Number, Value, json};

/// What an entity's row makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Built {
    /// Its document.
    Document(Map<String, Value>),
    /// No document: the entity redirects to another one.
    Redirected,
    /// No document: the subject is banned.
    Banned,
}

/// The columns of `chii_subjects` and (left-joined, so absent when the row is)
/// `chii_subject_fields` a subject's document is made of. Text columns as stored (HTML-escaped).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct SubjectRow {
    pub subject_id: u32,
    pub subject_type_id: u16,
    pub subject_name: String,
    pub subject_name_cn: String,
    pub field_infobox: String,
    pub field_meta_tags: String,
    pub subject_platform: u16,
    pub subject_nsfw: i8,
    pub subject_ban: u8,
    pub subject_wish: u32,
    pub subject_collect: u32,
    pub subject_doing: u32,
    pub subject_on_hold: u32,
    pub subject_dropped: u32,
    /// `field_tags`; `None` without a `chii_subject_fields` row (as for every column below).
    pub field_tags: Option<String>,
    /// `field_rate_1` … `field_rate_10`, summed by weight: Σ k·rate_k.
    pub weighted_votes: Option<u64>,
    /// Σ rate_k.
    pub votes: Option<u64>,
    pub field_rank: Option<u32>,
    /// `field_date` as MariaDB prints it (`YYYY-MM-DD`, `0000-00-00`).
    pub field_date: Option<String>,
    pub field_redirect: Option<u32>,
}

/// The columns of `chii_characters` a character's document is made of.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct CharacterRow {
    pub crt_id: u32,
    pub crt_name: String,
    pub crt_infobox: String,
    pub crt_comment: u32,
    pub crt_collects: u32,
    pub crt_nsfw: u8,
    pub crt_redirect: u32,
}

/// The columns of `chii_persons` a person's document is made of.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct PersonRow {
    pub prsn_id: u32,
    pub prsn_name: String,
    pub prsn_infobox: String,
    pub prsn_comment: u32,
    pub prsn_collects: u32,
    pub prsn_redirect: u32,
    pub prsn_writer: i8,
    pub prsn_producer: i8,
    pub prsn_mangaka: i8,
    pub prsn_artist: i8,
    pub prsn_seiyu: i8,
    pub prsn_illustrator: i8,
    pub prsn_actor: i8,
}

/// Bangumi stores names and infoboxes HTML-escaped; documents hold them unescaped.
fn unescape(text: &str) -> String {
    html_escape::decode_html_entities(text).into_owned()
}

/// An infobox as the Go indexer reads it: any syntax error makes it empty.
fn infobox(text: &str) -> Wiki {
    bangumi_wiki::go::parse(&unescape(text)).unwrap_or_default()
}

/// A field's values as the Go indexer takes them: none for a null (empty) field, the value of a
/// scalar, every item's value (empty ones too) of an array.
fn values(value: &FieldValue) -> Vec<String> {
    match value {
        FieldValue::Scalar(v) if v.is_empty() => Vec::new(),
        FieldValue::Scalar(v) => vec![v.clone()],
        FieldValue::Array(items) => items.iter().map(|i| i.value.clone()).collect(),
    }
}

/// The values of every field of `wiki` whose key is in `keys`, in infobox order.
fn values_of(wiki: &Wiki, keys: &[&str]) -> impl Iterator<Item = String> {
    wiki.fields
        .iter()
        .filter(|f| keys.contains(&f.key.as_str()))
        .flat_map(|f| values(&f.value))
}

/// A character's or person's aliases: its Chinese names (`中文名`, `简体中文名`, as they come),
/// then its `别名`.
fn person_aliases(wiki: &Wiki) -> Vec<String> {
    values_of(wiki, &["中文名", "简体中文名"])
        .chain(values_of(wiki, &["别名"]))
        .collect()
}

/// A number as Go's JSON encoder writes a float64: whole numbers without a fraction.
fn go_float(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// The average vote, rounded half away from zero to one decimal; 0 without votes.
fn score(weighted_votes: u64, votes: u64) -> f64 {
    if votes == 0 {
        return 0.0;
    }
    (weighted_votes as f64 / votes as f64 * 10.0).round() / 10.0
}

/// `field_date` as the number `YYYYMMDD`, 0 for the zero date. A date with a zero month or day
/// is normalised as Go's `time.Date` does (`2013-07-00` is 2013-06-30), as the Go indexer's
/// MySQL driver hands it over.
fn date_number(date: &str) -> u32 {
    let part = |range: std::ops::Range<usize>| date.get(range).and_then(|s| s.parse::<i64>().ok());
    let (Some(year), Some(month), Some(day)) = (part(0..4), part(5..7), part(8..10)) else {
        return 0;
    };
    if (year, month, day) == (0, 0, 0) {
        return 0;
    }
    let month0 = month - 1;
    let year = year + month0.div_euclid(12);
    let month = month0.rem_euclid(12) + 1;
    let (year, month, day) = civil_from_days(days_from_civil(year, month, 1) + day - 1);
    if (year, month, day) == (1, 1, 1) {
        // Go's zero time, which formats as no date.
        return 0;
    }
    u32::try_from(year * 10_000 + month * 100 + day).unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One tag of `field_tags`; only the name is indexed.
#[derive(Debug, Deserialize)]
struct Tag {
    tag_name: Option<String>,
}

/// The tag names of `field_tags`, in their order: PHP-serialized (`a:N:{i:K;…}`, ordered by
/// index K) or JSON; entries without a name are left out.
///
/// # Errors
/// The text is neither, naming what is wrong.
fn tag_names(field_tags: &str) -> Result<Vec<String>, String> {
    let tags: Vec<Tag> = if field_tags.is_empty() || field_tags == "N;" {
        Vec::new()
    } else if field_tags.starts_with("a:") {
        let mut php = phpserz::PhpDeserializer::new(field_tags.as_bytes());
        let by_index: std::collections::BTreeMap<u64, Tag> = Deserialize::deserialize(&mut php)
            .map_err(|e| {
                format!("chii_subject_fields.field_tags is not PHP-serialized tags: {e}")
            })?;
        by_index.into_values().collect()
    } else {
        serde_json::from_str(field_tags)
            .map_err(|e| format!("chii_subject_fields.field_tags is not JSON tags: {e}"))?
    };
    Ok(tags.into_iter().filter_map(|t| t.tag_name).collect())
}

impl SubjectRow {
    /// The subject's document, or why it has none.
    ///
    /// # Errors
    /// `field_tags` cannot be read.
    pub fn build(&self) -> Result<Built, String> {
        if self.field_redirect.unwrap_or(0) != 0 {
            return Ok(Built::Redirected);
        }
        if self.subject_ban != 0 {
            return Ok(Built::Banned);
        }
        let name_cn = unescape(&self.subject_name_cn);
        let wiki = infobox(&self.field_infobox);
        let aliases: Vec<String> = (!name_cn.is_empty())
            .then_some(name_cn)
            .into_iter()
            .chain(values_of(&wiki, &["别名"]))
            .collect();
        let votes = self.votes.unwrap_or(0);
        let tags = tag_names(self.field_tags.as_deref().unwrap_or(""))?;
        let mut doc = Map::new();
        doc.insert("id".into(), json!(self.subject_id));
        if !tags.is_empty() {
            doc.insert("tag".into(), json!(tags));
        }
        doc.insert(
            "meta_tag".into(),
            json!(self.field_meta_tags.split(' ').collect::<Vec<_>>()),
        );
        doc.insert("name".into(), json!(unescape(&self.subject_name)));
        if !aliases.is_empty() {
            doc.insert("aliases".into(), json!(aliases));
        }
        let date = date_number(self.field_date.as_deref().unwrap_or(""));
        if date != 0 {
            doc.insert("date".into(), json!(date));
        }
        doc.insert(
            "score".into(),
            go_float(score(self.weighted_votes.unwrap_or(0), votes)),
        );
        doc.insert("rating_count".into(), json!(votes));
        doc.insert("page_rank".into(), go_float(votes as f64));
        doc.insert(
            "heat".into(),
            json!(
                u64::from(self.subject_on_hold)
                    + u64::from(self.subject_doing)
                    + u64::from(self.subject_dropped)
                    + u64::from(self.subject_wish)
                    + u64::from(self.subject_collect)
            ),
        );
        let rank = if votes > 0 {
            self.field_rank.unwrap_or(0)
        } else {
            0
        };
        doc.insert("rank".into(), json!(rank));
        if self.subject_platform != 0 {
            doc.insert("platform".into(), json!(self.subject_platform));
        }
        doc.insert("type".into(), json!(self.subject_type_id));
        doc.insert("nsfw".into(), json!(self.subject_nsfw != 0));
        Ok(Built::Document(doc))
    }
}

impl CharacterRow {
    /// The character's document, or why it has none.
    pub fn build(&self) -> Built {
        if self.crt_redirect != 0 {
            return Built::Redirected;
        }
        let aliases = person_aliases(&infobox(&self.crt_infobox));
        let mut doc = Map::new();
        doc.insert("id".into(), json!(self.crt_id));
        doc.insert("name".into(), json!(unescape(&self.crt_name)));
        if !aliases.is_empty() {
            doc.insert("aliases".into(), json!(aliases));
        }
        doc.insert("comment".into(), json!(self.crt_comment));
        doc.insert("collect".into(), json!(self.crt_collects));
        doc.insert("nsfw".into(), json!(self.crt_nsfw != 0));
        Built::Document(doc)
    }
}

impl PersonRow {
    /// The person's document, or why it has none.
    pub fn build(&self) -> Built {
        if self.prsn_redirect != 0 {
            return Built::Redirected;
        }
        let aliases = person_aliases(&infobox(&self.prsn_infobox));
        let careers: Vec<&str> = [
            ("writer", self.prsn_writer),
            ("producer", self.prsn_producer),
            ("mangaka", self.prsn_mangaka),
            ("artist", self.prsn_artist),
            ("seiyu", self.prsn_seiyu),
            ("illustrator", self.prsn_illustrator),
            ("actor", self.prsn_actor),
        ]
        .into_iter()
        .filter(|(_, flag)| *flag != 0)
        .map(|(career, _)| career)
        .collect();
        let mut doc = Map::new();
        doc.insert("id".into(), json!(self.prsn_id));
        doc.insert("name".into(), json!(unescape(&self.prsn_name)));
        if !aliases.is_empty() {
            doc.insert("aliases".into(), json!(aliases));
        }
        doc.insert("comment".into(), json!(self.prsn_comment));
        doc.insert("collect".into(), json!(self.prsn_collects));
        if !careers.is_empty() {
            doc.insert("career".into(), json!(careers));
        }
        Built::Document(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_go_reads_them() {
        assert_eq!(date_number("2022-10-09"), 20_221_009);
        assert_eq!(date_number("0000-00-00"), 0);
        assert_eq!(date_number(""), 0);
        assert_eq!(date_number("2013-07-00"), 20_130_630);
        assert_eq!(date_number("2013-00-00"), 20_121_130);
        assert_eq!(date_number("2024-02-29"), 20_240_229);
        assert_eq!(date_number("0001-01-01"), 0);
    }

    #[test]
    fn scores_round_half_away_from_zero() {
        assert_eq!(score(290, 40), 7.3);
        assert_eq!(score(0, 0), 0.0);
        assert_eq!(go_float(8.0), json!(8));
        assert_eq!(go_float(9.4), json!(9.4));
    }

    #[test]
    fn tags_in_index_order_without_nameless_ones() {
        let php = r#"a:3:{i:1;a:2:{s:8:"tag_name";s:1:"B";s:6:"result";s:1:"2";}i:0;a:2:{s:8:"tag_name";s:1:"A";s:6:"result";s:1:"1";}i:3;a:2:{s:8:"tag_name";N;s:6:"result";s:1:"1";}}"#;
        assert_eq!(tag_names(php), Ok(vec!["A".to_owned(), "B".to_owned()]));
        assert_eq!(tag_names("a:0:{}"), Ok(Vec::new()));
        assert_eq!(tag_names(""), Ok(Vec::new()));
        assert_eq!(
            tag_names(r#"[{"tag_name":"日常","result":"3","tag_results":"3"}]"#),
            Ok(vec!["日常".to_owned()])
        );
        assert!(tag_names("a:1:{").is_err());
    }
}
