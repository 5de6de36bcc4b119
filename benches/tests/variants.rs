//! The variant scenarios of `benches/scenarios/variants/` (the shipped classes with other
//! numbers, run by hand: their README) stay readable by the lab as it changes, and stay what
//! the README says they are: outside the built-in suite, with no known failures.

use std::fs;

use seawall_bench::lab::scenario::{BUILT_IN, Scenario};

#[test]
fn every_variant_parses_outside_the_suite_without_known_failures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/variants");
    let mut read = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        let file = path.display().to_string();
        let text = fs::read_to_string(&path).unwrap();
        let scenario = Scenario::parse(&file, &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(scenario.known_failing.is_empty(), "{file}: known failures");
        assert!(!scenario.cells().is_empty(), "{file}: no cell");
        assert!(
            BUILT_IN.iter().all(|(_, built_in)| *built_in != text),
            "{file}: in the built-in suite"
        );
        read += 1;
    }
    assert_ne!(read, 0, "no variant in {dir}");
}
