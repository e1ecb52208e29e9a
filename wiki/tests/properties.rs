//! Property tests: printing and parsing are inverse on printable wikis, `is_printable` says
//! exactly when they are, and `parse` never panics and reports lines inside its input, on
//! arbitrary strings, on wiki-alphabet soup and on mutated valid texts.

use bangumi_wiki::{Field, FieldValue, Item, Wiki, js_trim, parse};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

mod common;
use common::TOKENS;

/// Characters that matter to the syntax (and a few that do not), without `\n`.
const ALPHABET: &[char] = &[
    'a', 'b', '中', '名', ' ', '=', '|', '[', ']', '{', '}', '\u{3000}', '\u{85}', '\r', '\t',
    '\u{FEFF}', '\u{2028}',
];

fn raw_text(alphabet: &'static [char]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet), 0..8)
        .prop_map(|chars| chars.into_iter().collect())
}

/// A string one line of the syntax carries unchanged: trimmed, without `\n`.
fn line_text() -> impl Strategy<Value = String> {
    raw_text(ALPHABET).prop_map(|text| js_trim(&text).to_owned())
}

/// `text` without the characters in `forbidden`, trimmed again.
fn without(text: &str, forbidden: &[char]) -> String {
    js_trim(&text.replace(forbidden, "")).to_owned()
}

fn printable_item() -> impl Strategy<Value = Item> {
    (prop::option::of(line_text()), line_text()).prop_map(|(key, value)| Item {
        key: key
            .map(|key| without(&key, &['|']))
            .filter(|key| !key.is_empty()),
        value,
    })
}

fn printable_field() -> impl Strategy<Value = Field> {
    let scalar = line_text().prop_map(|value| if value == "{" { "{}".to_owned() } else { value });
    let value = prop_oneof![
        scalar.prop_map(FieldValue::Scalar),
        prop::collection::vec(printable_item(), 0..4).prop_map(FieldValue::Array),
    ];
    (line_text(), value).prop_map(|(key, value)| Field {
        key: without(&key, &['=']),
        value,
    })
}

/// Wikis inside the printable domain, built so by construction.
fn printable_wiki() -> impl Strategy<Value = Wiki> {
    (line_text(), prop::collection::vec(printable_field(), 0..6)).prop_map(|(type_name, fields)| {
        let mut type_name = type_name;
        while type_name.contains("}}") {
            type_name = type_name.replace("}}", "}");
        }
        Wiki { type_name, fields }
    })
}

/// Wikis from any strings of the alphabet with `\n`, mostly not printable.
fn any_wiki() -> impl Strategy<Value = Wiki> {
    const WITH_NEWLINE: &[char] = &[
        'a', ' ', '\n', '\r', '=', '|', '{', '}', '\u{3000}', '\u{85}',
    ];
    let item = (
        prop::option::of(raw_text(WITH_NEWLINE)),
        raw_text(WITH_NEWLINE),
    )
        .prop_map(|(key, value)| Item { key, value });
    let value = prop_oneof![
        raw_text(WITH_NEWLINE).prop_map(FieldValue::Scalar),
        prop::collection::vec(item, 0..3).prop_map(FieldValue::Array),
    ];
    let field = (raw_text(WITH_NEWLINE), value).prop_map(|(key, value)| Field { key, value });
    (raw_text(WITH_NEWLINE), prop::collection::vec(field, 0..3))
        .prop_map(|(type_name, fields)| Wiki { type_name, fields })
}

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|tokens| tokens.concat())
}

/// What holds for every input: an accepted text gives a printable wiki that round-trips; a
/// rejected one names a line of the input.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    let lines = text.matches('\n').count() + 1;
    match parse(text) {
        Ok(wiki) => {
            prop_assert!(wiki.is_printable(), "parsed but not printable: {wiki:?}");
            prop_assert_eq!(parse(&wiki.to_string()), Ok(wiki));
        }
        Err(error) => prop_assert!(
            (1..=lines).contains(&error.line()),
            "line {} outside 1..={lines}: {error}",
            error.line()
        ),
    }
    Ok(())
}

/// One edit of `text` at a character boundary: insert a token, delete a few characters, or
/// replace one with a token.
fn mutate(text: &str, (kind, at, token): (u8, prop::sample::Index, &str)) -> String {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let position = at.index(boundaries.len());
    let start = boundaries[position];
    let end = |chars: usize| boundaries[(position + chars).min(boundaries.len() - 1)];
    match kind % 3 {
        0 => format!("{}{token}{}", &text[..start], &text[start..]),
        1 => format!(
            "{}{}",
            &text[..start],
            &text[end(1 + usize::from(kind % 4))..]
        ),
        _ => format!("{}{token}{}", &text[..start], &text[end(1)..]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn printable_wikis_round_trip(wiki in printable_wiki()) {
        prop_assert!(wiki.is_printable(), "generated outside the printable domain: {wiki:?}");
        prop_assert_eq!(parse(&wiki.to_string()), Ok(wiki));
    }

    #[test]
    fn is_printable_is_exactly_round_tripping(wiki in any_wiki()) {
        let round_trips = parse(&wiki.to_string()).as_ref() == Ok(&wiki);
        prop_assert_eq!(wiki.is_printable(), round_trips, "{:?} prints as {:?}", wiki, wiki.to_string());
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        check_parse(&text)?;
    }

    #[test]
    fn token_soup_never_panics(text in token_soup()) {
        check_parse(&text)?;
    }

    #[test]
    fn mutated_wikis_never_panic(
        wiki in printable_wiki(),
        edits in prop::collection::vec((any::<u8>(), any::<prop::sample::Index>(), prop::sample::select(TOKENS)), 1..4),
    ) {
        let mut text = wiki.to_string();
        for edit in edits {
            text = mutate(&text, edit);
        }
        check_parse(&text)?;
    }
}
