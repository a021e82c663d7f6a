//! Byte offsets to 1-based line:column, and diagnostics that carry the
//! offending source line. Columns count characters, not bytes, so a caret
//! lines up under the right character in a terminal. Never panics on any
//! offset (out-of-range offsets are clamped).

use super::{Diagnostic, Severity};
use std::path::Path;

/// Longest source line copied into a diagnostic's snippet.
const MAX_SNIPPET_CHARS: usize = 240;

/// One source file's text with its line starts indexed.
pub(crate) struct SourceText<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceText<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        SourceText {
            path,
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line_idx).copied().unwrap_or(0);
        let column = match self.text.get(start..offset) {
            Some(prefix) => prefix.chars().count(),
            // Not on a char boundary: count the bytes up to it instead.
            None => offset - start,
        };
        (line_idx + 1, column + 1)
    }

    /// The text of a 1-based line, without its line ending, shortened when huge.
    pub fn line_text(&self, line: usize) -> Option<String> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        // The next line's start bounds this one: no scan of the rest of the
        // text, so many diagnostics on one huge line stay linear.
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |next| next - 1);
        let line = self.text.get(start..end)?.trim_end_matches('\r');
        Some(line.chars().take(MAX_SNIPPET_CHARS).collect())
    }

    /// An error at a byte offset.
    pub fn error(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.line_col(offset);
        self.error_at(line, column, message)
    }

    /// An error at a known line and column (both 1-based).
    pub fn error_at(&self, line: usize, column: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.path.to_path_buf(),
            line,
            column,
            severity: Severity::Error,
            message: message.into(),
            snippet: self.line_text(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let src = SourceText::new(Path::new("f"), "ab\nçd\r\n\nx");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(1), (1, 2));
        assert_eq!(src.line_col(3), (2, 1));
        // 'ç' is two bytes but one column.
        assert_eq!(src.line_col(5), (2, 2));
        // Inside 'ç': falls back to bytes, never panics.
        assert_eq!(src.line_col(4), (2, 2));
        assert_eq!(src.line_col(8), (3, 1));
        assert_eq!(src.line_col(9), (4, 1));
        assert_eq!(src.line_col(999), (4, 2));
        assert_eq!(src.line_text(2).as_deref(), Some("çd"));
        assert_eq!(src.line_text(3).as_deref(), Some(""));
        assert_eq!(src.line_text(5), None);
        assert_eq!(src.line_text(0), None);
    }
}
