//! What the README files tell a reader to write in `Cargo.toml` matches their examples: the
//! `[dependencies]` block names exactly the crates the Rust block uses, and seawall's crates at
//! the version this workspace builds. (The Rust blocks themselves run as doctests of this
//! crate, so they compile and work as written.)

use std::collections::BTreeSet;

const READMES: [(&str, &str); 12] = [
    ("README.md", include_str!("../../README.md")),
    ("seawall/README.md", include_str!("../README.md")),
    ("core/README.md", include_str!("../../core/README.md")),
    ("timeout/README.md", include_str!("../../timeout/README.md")),
    ("retry/README.md", include_str!("../../retry/README.md")),
    (
        "circuit-breaker/README.md",
        include_str!("../../circuit-breaker/README.md"),
    ),
    (
        "bulkhead/README.md",
        include_str!("../../bulkhead/README.md"),
    ),
    (
        "rate-limit/README.md",
        include_str!("../../rate-limit/README.md"),
    ),
    (
        "fallback/README.md",
        include_str!("../../fallback/README.md"),
    ),
    ("health/README.md", include_str!("../../health/README.md")),
    ("chaos/README.md", include_str!("../../chaos/README.md")),
    (
        "throttle/README.md",
        include_str!("../../throttle/README.md"),
    ),
];

/// The bodies of the fenced blocks of `markdown` whose info string starts with `lang`, except
/// `ignore`d ones (fragments that are never compiled, so not the example this test checks).
fn blocks<'a>(markdown: &'a str, lang: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("```") {
        let after = &rest[at + 3..];
        let Some(line_end) = after.find('\n') else {
            break;
        };
        let info = &after[..line_end];
        let body = &after[line_end + 1..];
        let Some(close) = body.find("```") else {
            break;
        };
        let tag = info.split([',', ' ']).next().unwrap_or_default();
        if tag == lang && !info.split([',', ' ']).any(|attr| attr == "ignore") {
            found.push(&body[..close]);
        }
        rest = &body[close + 3..];
    }
    found
}

/// The crates a Rust block names: the first segment of each `use`, of attributes such as
/// `#[tokio::main]`, and of every path into a seawall crate.
fn used_crates(rust: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in rust.lines().map(str::trim_start) {
        let path = line
            .strip_prefix("use ")
            .or_else(|| line.strip_prefix("#["));
        if let Some((root, _)) = path.and_then(|path| path.split_once("::")) {
            used.insert(root.to_owned());
        }
        let mut rest = line;
        while let Some(at) = rest.find("seawall") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if rest[at + name.len()..].starts_with("::") {
                used.insert(name.clone());
            }
            rest = &rest[at + name.len()..];
        }
    }
    for builtin in ["std", "core", "alloc", "crate", "self", "super"] {
        used.remove(builtin);
    }
    used
}

#[test]
fn every_readme_lists_the_crates_its_example_uses_at_this_version() {
    let version = env!("CARGO_PKG_VERSION");
    let (major, rest) = version.split_once('.').unwrap();
    let minor = rest.split('.').next().unwrap();
    let requirement = format!("{major}.{minor}");

    for (file, text) in READMES {
        let rust = blocks(text, "rust");
        assert_eq!(rust.len(), 1, "{file}: one Rust example");
        let toml_blocks: Vec<_> = blocks(text, "toml")
            .into_iter()
            .filter(|block| block.contains("[dependencies]"))
            .collect();
        assert_eq!(toml_blocks.len(), 1, "{file}: one [dependencies] block");
        let manifest: toml::Table = toml::from_str(toml_blocks[0])
            .unwrap_or_else(|e| panic!("{file}: the [dependencies] block: {e}"));
        let dependencies = manifest["dependencies"].as_table().unwrap();

        let listed: BTreeSet<String> = dependencies.keys().map(|k| k.replace('-', "_")).collect();
        assert_eq!(
            listed,
            used_crates(rust[0]),
            "{file}: the [dependencies] block and the crates the example uses"
        );
        for (name, spec) in dependencies {
            if !name.starts_with("seawall") {
                continue;
            }
            let req = spec
                .as_str()
                .or_else(|| spec.get("version").and_then(|v| v.as_str()));
            assert_eq!(req, Some(requirement.as_str()), "{file}: {name}");
        }
    }
}

#[test]
fn the_quick_start_uses_the_facade() {
    let rust = blocks(READMES[0].1, "rust");
    let used = used_crates(rust[0]);
    assert!(used.contains("seawall"), "{used:?}");
    assert!(
        used.iter().all(|c| !c.starts_with("seawall_")),
        "one recommended style, the facade: {used:?}"
    );
}

#[test]
fn the_parser_finds_uses_attributes_and_inline_paths() {
    let rust = "use axum::{Router, routing::get};\n#[tokio::main]\nfn main() -> Result<(), seawall_core::BoxError> { let d = std::time::Duration::ZERO; }";
    let used: Vec<_> = used_crates(rust).into_iter().collect();
    assert_eq!(used, ["axum", "seawall_core", "tokio"]);
    assert_eq!(
        blocks("```toml\na = 1\n```\n```rust,no_run\nx\n```\n", "rust"),
        ["x\n"]
    );
}
