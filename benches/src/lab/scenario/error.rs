//! A scenario file that cannot be used, with the file, the line and the field.

use std::fmt;
use std::ops::Range;

/// A scenario file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ScenarioError {}

/// An error at `span` of `text`, with the key of that line named when the message does not
/// name it already.
pub(crate) fn error_at(
    file: &str,
    text: &str,
    span: Option<Range<usize>>,
    message: &str,
) -> ScenarioError {
    let offset = span.map_or(0, |s| s.start).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let mut message = message.trim().to_owned();
    // serde's type errors do not say which key they are about; the line does.
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    if let Some((key, _)) = line_text.split_once('=') {
        let key = key.trim();
        if !key.is_empty() && !key.starts_with('[') && !message.contains(&format!("`{key}`")) {
            message = format!("field `{key}`: {message}");
        }
    }
    ScenarioError {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// The span of the first line that sets `key`, if any.
pub(crate) fn find_key(text: &str, key: &str) -> Option<Range<usize>> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with(key)
            && (key.ends_with(']') || trimmed[key.len()..].trim_start().starts_with('='))
        {
            return Some(offset..offset + line.len());
        }
        offset += line.len();
    }
    None
}
