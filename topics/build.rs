//! Embeds every `families/*.toml` file: the directory is the list of families, so adding one is
//! adding its file. Writes `$OUT_DIR/families.rs`, a `FILES` table of `(file name, contents)` in
//! file-name order, read by `src/lib.rs`.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read at run time, not with `env!`: a build script compiled for another checkout (a shared
    // target dir) must read this checkout's families. Relative `rerun-if-changed` paths are
    // this package's, so a checkout with other family files builds again.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest_dir).join("families");
    println!("cargo::rerun-if-changed=families");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
            entry.file_name().to_string_lossy().into_owned()
        })
        .filter(|name| name.ends_with(".toml"))
        .collect();
    files.sort();
    let mut table = String::from("&[\n");
    for file in &files {
        let path = dir.join(file);
        println!("cargo::rerun-if-changed=families/{file}");
        let _ = writeln!(table, "    ({file:?}, include_str!({:?})),", path.display());
    }
    table.push(']');
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("families.rs");
    std::fs::write(&out, table).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
