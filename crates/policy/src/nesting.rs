//! The nesting depth of policy text, measured before it is parsed.
//!
//! The YAML parser is quadratic in the depth of flow collections (`[[[[...]]]]`, `{a: {a: ...}}`,
//! deeply nested JSON): a 200 KB body can cost it tens of seconds before its own recursion limit
//! refuses the result. This module scans the text once, in linear time, and finds the first
//! place where collections nest deeper than a limit, so that such text is refused before the
//! parser sees it.
//!
//! The scan follows YAML's tokens only as far as depth needs: flow brackets, block collections
//! by indentation (`key:`, `- `, `? `), and what hides brackets from the parser — quoted scalars,
//! plain scalars (also when they continue on the next line), block scalars (`|`, `>`), comments,
//! anchors, aliases and tags. Where it cannot tell, it counts a bracket rather than skip it: it
//! may over-count text the parser would refuse anyway, but never under-counts text the parser
//! accepts. It does not check syntax; the parser does.

/// The deepest nesting a policy document may have: a CiliumNetworkPolicy needs about 10 levels,
/// 15 with the `managedFields` of `kubectl get -o yaml`.
pub const MAX_DEPTH: usize = 64;

/// Where text first nests deeper than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep {
    /// One-based line.
    pub line: usize,
    /// One-based column, in characters.
    pub column: usize,
}

/// Finds the first place where `text` nests collections deeper than `limit`; `None` when it
/// never does.
pub(crate) fn too_deep(text: &str, limit: usize) -> Option<TooDeep> {
    let mut scan = Scan {
        text: text.as_bytes(),
        pos: 0,
        line_start: 0,
        line: 1,
        indents: Vec::new(),
        flow: 0,
        plain: false,
        key: None,
        block_scalar: None,
        limit,
    };
    scan.run().err().map(|at| {
        let line_start = scan.line_start;
        TooDeep {
            line: scan.line,
            column: text[line_start..at].chars().count() + 1,
        }
    })
}

/// A block scalar being skipped: lines at least this indented (or blank) belong to it.
#[derive(Debug, Clone, Copy)]
enum BlockScalar {
    /// The indentation is set by the first non-blank line, which must reach this column.
    Auto(usize),
    /// The indentation is known.
    Fixed(usize),
}

struct Scan<'a> {
    text: &'a [u8],
    pos: usize,
    line_start: usize,
    line: usize,
    /// Columns of the open block collections, innermost last (YAML's indentation stack).
    indents: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    /// Inside a plain scalar, which may continue on the next line.
    plain: bool,
    /// In block context, the column of the node that a following `:` makes a mapping key.
    key: Option<usize>,
    block_scalar: Option<BlockScalar>,
    limit: usize,
}

impl Scan<'_> {
    /// Scans the whole text; the error is the byte offset where the limit is passed.
    fn run(&mut self) -> Result<(), usize> {
        while self.pos < self.text.len() {
            self.start_line()?;
            self.rest_of_line()?;
            if self.pos < self.text.len() {
                self.pos += 1;
                self.line += 1;
                self.line_start = self.pos;
            }
        }
        Ok(())
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.text.get(at).copied()
    }

    fn column(&self) -> usize {
        self.pos - self.line_start
    }

    /// Whether the byte at `at` ends a token: white space, a line end or the end of the text.
    fn blank_at(&self, at: usize) -> bool {
        matches!(self.byte(at), None | Some(b' ' | b'\t' | b'\r' | b'\n'))
    }

    fn flow_indicator_at(&self, at: usize) -> bool {
        matches!(self.byte(at), Some(b',' | b'[' | b']' | b'{' | b'}'))
    }

    fn skip_to_line_end(&mut self) {
        while !matches!(self.byte(self.pos), None | Some(b'\n')) {
            self.pos += 1;
        }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.byte(self.pos), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
    }

    fn depth(&self) -> usize {
        self.indents.len() + self.flow
    }

    fn check(&self, at: usize) -> Result<(), usize> {
        if self.depth() > self.limit {
            Err(at)
        } else {
            Ok(())
        }
    }

    /// Opens a block collection at `column` when it is deeper than the innermost one.
    fn roll(&mut self, column: usize, at: usize) -> Result<(), usize> {
        if self.indents.last().is_none_or(|&top| column > top) {
            self.indents.push(column);
        }
        self.check(at)
    }

    /// Handles the start of a line: block scalar content, document markers, directives, and
    /// the indentation that closes block collections.
    fn start_line(&mut self) -> Result<(), usize> {
        let mut indent = 0;
        while self.byte(self.pos + indent) == Some(b' ') {
            indent += 1;
        }
        let blank = matches!(self.byte(self.pos + indent), None | Some(b'\n' | b'\r'));
        if let Some(scalar) = self.block_scalar {
            match scalar {
                _ if blank => {
                    self.skip_to_line_end();
                    return Ok(());
                }
                BlockScalar::Auto(least) if indent >= least => {
                    self.block_scalar = Some(BlockScalar::Fixed(indent));
                    self.skip_to_line_end();
                    return Ok(());
                }
                BlockScalar::Fixed(least) if indent >= least => {
                    self.skip_to_line_end();
                    return Ok(());
                }
                _ => self.block_scalar = None,
            }
        }
        let rest = &self.text[self.pos..];
        let marker =
            (rest.starts_with(b"---") || rest.starts_with(b"...")) && self.blank_at(self.pos + 3);
        if marker {
            self.indents.clear();
            self.flow = 0;
            self.plain = false;
            self.key = None;
            self.pos += 3;
            return Ok(());
        }
        if self.flow > 0 {
            return Ok(());
        }
        if rest.first() == Some(&b'%') && !self.plain {
            self.skip_to_line_end();
            return Ok(());
        }
        if blank {
            self.pos += indent;
            return Ok(());
        }
        let top = self.indents.last().copied();
        if self.plain && top.is_none_or(|top| indent > top) {
            // The plain scalar of the line before goes on.
            return Ok(());
        }
        self.plain = false;
        self.key = None;
        while self.indents.last().is_some_and(|&top| top > indent) {
            self.indents.pop();
        }
        Ok(())
    }

    /// Scans tokens up to the end of the current line (or further, through a multi-line quoted
    /// scalar).
    fn rest_of_line(&mut self) -> Result<(), usize> {
        loop {
            if self.plain {
                self.plain_scalar()?;
            }
            self.skip_spaces();
            let Some(byte) = self.byte(self.pos) else {
                return Ok(());
            };
            let at = self.pos;
            match byte {
                b'\n' => return Ok(()),
                b'#' => {
                    self.skip_to_line_end();
                    return Ok(());
                }
                b'[' | b'{' => {
                    self.key_here();
                    self.flow += 1;
                    self.pos += 1;
                    self.check(at)?;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    self.pos += 1;
                }
                b',' if self.flow > 0 => self.pos += 1,
                b'-' | b'?' if self.blank_at(at + 1) => {
                    self.pos += 1;
                    if self.flow == 0 {
                        self.key = None;
                        self.roll(at - self.line_start, at)?;
                    }
                }
                b':' if self.blank_at(at + 1) || self.flow > 0 => {
                    self.pos += 1;
                    self.value_indicator(at)?;
                }
                b'|' | b'>' if self.flow == 0 => {
                    self.block_scalar_header();
                    return Ok(());
                }
                b'\'' | b'"' => {
                    self.key_here();
                    self.quoted(byte);
                }
                b'&' | b'*' | b'!' => {
                    self.key_here();
                    while !self.blank_at(self.pos) && !self.flow_indicator_at(self.pos) {
                        self.pos += 1;
                    }
                }
                _ => {
                    self.key_here();
                    self.plain = true;
                }
            }
        }
    }

    /// Remembers the current position as the start of a possible mapping key.
    fn key_here(&mut self) {
        if self.flow == 0 && self.key.is_none() {
            self.key = Some(self.column());
        }
    }

    /// A `:` making the node before it a key: in block context, that opens a mapping at the
    /// key's column.
    fn value_indicator(&mut self, at: usize) -> Result<(), usize> {
        if self.flow == 0 {
            if let Some(column) = self.key.take() {
                self.roll(column, at)?;
            }
        }
        Ok(())
    }

    /// Scans a plain scalar up to what ends it on this line; it stays open at the line end, as
    /// the next line may continue it.
    fn plain_scalar(&mut self) -> Result<(), usize> {
        while let Some(byte) = self.byte(self.pos) {
            let at = self.pos;
            match byte {
                b'\n' => return Ok(()),
                b':' if self.blank_at(at + 1)
                    || (self.flow > 0 && self.flow_indicator_at(at + 1)) =>
                {
                    self.plain = false;
                    self.pos += 1;
                    return self.value_indicator(at);
                }
                b'#' if at == self.line_start || self.blank_at(at - 1) => {
                    self.plain = false;
                    self.skip_to_line_end();
                    return Ok(());
                }
                b',' | b'[' | b']' | b'{' | b'}' if self.flow > 0 => {
                    self.plain = false;
                    return Ok(());
                }
                _ => self.pos += 1,
            }
        }
        Ok(())
    }

    /// Skips a quoted scalar opened by `quote` at the current position, across lines.
    fn quoted(&mut self, quote: u8) {
        self.pos += 1;
        while let Some(byte) = self.byte(self.pos) {
            self.pos += 1;
            match byte {
                b'\\' if quote == b'"' => {
                    if self.byte(self.pos) == Some(b'\n') {
                        self.line += 1;
                        self.line_start = self.pos + 1;
                    }
                    self.pos += 1;
                }
                b'\'' if quote == b'\'' && self.byte(self.pos) == Some(b'\'') => self.pos += 1,
                b'\n' => {
                    self.line += 1;
                    self.line_start = self.pos;
                }
                _ if byte == quote => return,
                _ => {}
            }
        }
    }

    /// Reads a block scalar's header (`|`, `>`, with indentation and chomping indicators) and
    /// skips the rest of its line; its content lines follow.
    fn block_scalar_header(&mut self) {
        self.pos += 1;
        let mut explicit = None;
        while let Some(byte) = self.byte(self.pos) {
            match byte {
                b'1'..=b'9' => explicit = Some(usize::from(byte - b'0')),
                b'+' | b'-' => {}
                _ => break,
            }
            self.pos += 1;
        }
        let parent = self.indents.last().copied();
        self.block_scalar = Some(match (explicit, parent) {
            (Some(m), Some(parent)) => BlockScalar::Fixed(parent + m),
            (Some(m), None) => BlockScalar::Fixed(m),
            (None, parent) => BlockScalar::Auto(parent.map_or(1, |p| p + 1)),
        });
        self.skip_to_line_end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        too_deep(text, limit).is_none()
    }

    #[test]
    fn flow_collections_count_their_brackets() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            too_deep(&deep, 64),
            Some(TooDeep {
                line: 1,
                column: 65
            })
        );
        assert!(depth_ok(
            &format!("{}{}", "[".repeat(64), "]".repeat(64)),
            64
        ));
        let json = format!("{}1{}", "{\"a\":".repeat(65), "}".repeat(65));
        assert!(!depth_ok(&json, 64));
        let maps = format!("x: {}1{}", "{a: ".repeat(64), "}".repeat(64));
        assert_eq!(too_deep(&maps, 64).map(|t| t.column), Some(4 + 63 * 4));
    }

    #[test]
    fn block_collections_count_by_indentation() {
        let mut deep = String::new();
        for level in 0..10 {
            deep.push_str(&format!("{}a{level}:\n", " ".repeat(level * 2)));
        }
        assert!(depth_ok(&deep, 10));
        assert_eq!(
            too_deep(&deep, 9),
            Some(TooDeep {
                line: 10,
                column: 21
            })
        );
        assert!(!depth_ok("- - - - x\n", 3));
        assert!(depth_ok("- - - x\n", 3));
        let siblings = "a:\n  b: 1\n  c: 2\nd:\n  e: [1, 2]\n";
        assert!(depth_ok(siblings, 3));
        assert!(!depth_ok(siblings, 2));
    }

    #[test]
    fn brackets_in_scalars_and_comments_do_not_count() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!(
                "r{i}: {{keyRegex: \"^a\\\\[{i}\", file: '/x[''y'}}\n"
            ));
            text.push_str(&format!("p{i}: /public/[a-z{{]+ # [[[\n"));
            text.push_str(&format!("q{i}: it's [\n  continued [[[\n"));
            text.push_str(&format!("b{i}: |-\n  [[[[\n\n   {{{{\n"));
            text.push_str(&format!("t{i}: !tag &anchor-[x, [1]]\n"));
        }
        assert!(depth_ok(&text, 3), "{:?}", too_deep(&text, 3));
    }

    #[test]
    fn what_follows_a_scalar_is_counted() {
        let nested = format!("{}{}", "[".repeat(10), "]".repeat(10));
        for text in [
            format!("a: foo\n  ['\nb: {nested}\nc: '\n"),
            format!("a:\n  x: |\n    [[[\n  b: {nested}\n"),
            format!("- |\n  quoted '\n- {nested}\n- '\n"),
            format!("a: \"x\\\"\" {nested}\n"),
            format!("a: 'x''' {nested}\n"),
            format!("[a'b, {nested}, 'c']\n"),
            format!("--- |\n  text\n--- {nested}\n"),
        ] {
            assert!(!depth_ok(&text, 9), "{text}");
        }
    }

    #[test]
    fn the_scan_is_linear() {
        let text = format!("{}{}", "{a: ".repeat(50_000), "}".repeat(50_000));
        let start = std::time::Instant::now();
        assert!(!depth_ok(&text, MAX_DEPTH));
        let fine = format!("x: [{}]\n", "a, ".repeat(200_000)).repeat(5);
        assert!(depth_ok(&fine, MAX_DEPTH));
        assert!(start.elapsed() < std::time::Duration::from_millis(500));
    }
}
