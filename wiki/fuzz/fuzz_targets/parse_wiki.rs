//! Fuzz target: `parse` never panics, and a wiki it accepts is printable and its canonical text
//! parses back to the same wiki.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(wiki) = bangumi_wiki::parse(text) {
        assert!(wiki.is_printable(), "a parsed wiki is not printable: {wiki:?}");
        assert_eq!(
            bangumi_wiki::parse(&wiki.to_string()).as_ref(),
            Ok(&wiki),
            "the canonical text does not parse back"
        );
    }
});
