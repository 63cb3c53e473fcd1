//! The nesting depth of policy text, measured before it is parsed.
//!
//! The YAML parser is quadratic in the depth of flow collections (`[[[[...]]]]`, `{a: {a: ...}}`,
//! deeply nested JSON): a 200 KB body can cost it tens of seconds before its own recursion limit
//! refuses the result. This module scans the text once, in linear time, and finds the first
//! place where collections nest deeper than a limit, so that such text is refused before the
//! parser sees it.
//!
//! The scan follows YAML's tokens only as far as depth needs: flow brackets, block collections
//! by indentation (`key:`, `- `, `? `, a sequence at its key's column), the mappings a `:` makes
//! of what came before it (a block key, `[a: b]`), YAML's line breaks, and what hides brackets
//! from the parser — quoted scalars, plain scalars (also when they continue on the next line),
//! block scalars (`|`, `>`), comments, anchors, aliases and tags. Where it cannot tell, it counts
//! a bracket rather than skip it: it may over-count text the parser would refuse anyway, but
//! never under-counts text the parser accepts (the property tests below hold it to the parser).
//! It does not check syntax; the parser does.

use std::borrow::Cow;

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
    let text = &*newlines_only(text);
    let mut scan = Scan {
        text: text.as_bytes(),
        pos: 0,
        line_start: 0,
        line: 1,
        indents: Vec::new(),
        flow: Vec::new(),
        flow_depth: 0,
        plain: false,
        key: None,
        key_peak: 0,
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

/// An open block collection.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// The column of its entries.
    column: usize,
    /// A sequence (`- `) rather than a mapping.
    sequence: bool,
}

/// An open flow collection.
#[derive(Debug, Clone, Copy)]
struct Flow {
    /// A sequence (`[`) rather than a mapping.
    sequence: bool,
    /// The current entry of a sequence is a mapping of one pair (`[a: b]`): a `:` made it one.
    pair: bool,
    /// The deepest nesting within the entries before the current one.
    peak: usize,
    /// The deepest nesting within the current entry so far; when a `:` turns the entry into a
    /// pair, all of it is one level deeper.
    entry_peak: usize,
}

/// `text` with YAML's other line breaks (`\r\n`, `\r`, NEL, LS, PS) as `\n`, and a byte order
/// mark that begins a line as the space it counts as: the only forms the scan reads. Lines and
/// columns stay where they were.
fn newlines_only(text: &str) -> Cow<'_, str> {
    // A byte that is `\r` or begins one of the others (NEL is C2 85, LS and PS E2 80 A8 and
    // A9, the mark EF BB BF): checking bytes is the cheapest way to know that there is nothing to
    // change, which is nearly always.
    if !text
        .bytes()
        .any(|b| matches!(b, b'\r' | 0xC2 | 0xE2 | 0xEF))
    {
        return Cow::Borrowed(text);
    }
    let mut plain = String::with_capacity(text.len());
    let mut line_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                plain.push('\n');
                line_start = true;
                continue;
            }
            '\u{feff}' if line_start => plain.push(' '),
            c => plain.push(c),
        }
        line_start = false;
    }
    Cow::Owned(plain)
}

/// A block scalar being skipped: lines at least this indented (or blank) belong to it.
#[derive(Debug, Clone, Copy)]
enum BlockScalar {
    /// The indentation is set by the first non-blank line, which must reach this column.
    Auto(usize),
    /// The indentation is known.
    Fixed(usize),
}

/// Where a scan is and what is open there.
struct Scan<'a> {
    /// The text, its lines ended by `\n` only.
    text: &'a [u8],
    /// The byte being looked at.
    pos: usize,
    /// Where the current line begins.
    line_start: usize,
    /// The current line's one-based number.
    line: usize,
    /// The open block collections, innermost last (YAML's indentation stack).
    indents: Vec<Block>,
    /// The open flow collections, innermost last.
    flow: Vec<Flow>,
    /// The depth the open flow collections make, with the mappings of one pair among them.
    flow_depth: usize,
    /// Inside a plain scalar, which may continue on the next line.
    plain: bool,
    /// In block context, the column of the node that a following `:` makes a mapping key.
    key: Option<usize>,
    /// The deepest nesting within that node so far: a mapping it turns out to be the key of
    /// holds it one level deeper.
    key_peak: usize,
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
        matches!(self.byte(at), None | Some(b' ' | b'\t' | b'\n'))
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
        while matches!(self.byte(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn depth(&self) -> usize {
        self.indents.len() + self.flow_depth
    }

    fn check(&mut self, at: usize) -> Result<(), usize> {
        let depth = self.depth();
        if self.key.is_some() {
            self.key_peak = self.key_peak.max(depth);
        }
        if let Some(flow) = self.flow.last_mut() {
            flow.entry_peak = flow.entry_peak.max(depth);
        }
        if depth > self.limit {
            Err(at)
        } else {
            Ok(())
        }
    }

    fn open_flow(&mut self, sequence: bool, at: usize) -> Result<(), usize> {
        self.flow.push(Flow {
            sequence,
            pair: false,
            peak: 0,
            entry_peak: 0,
        });
        self.flow_depth += 1;
        self.check(at)
    }

    /// Ends the innermost flow collection, handing its deepest nesting to what holds it.
    fn close_flow(&mut self) {
        let Some(flow) = self.flow.pop() else {
            return;
        };
        self.flow_depth -= 1 + usize::from(flow.pair);
        let peak = flow.peak.max(flow.entry_peak);
        match self.flow.last_mut() {
            Some(outer) => outer.entry_peak = outer.entry_peak.max(peak),
            None if self.key.is_some() => self.key_peak = self.key_peak.max(peak),
            None => {}
        }
    }

    /// A `,` between entries of the innermost flow collection.
    fn next_entry(&mut self) {
        let depth = self.depth();
        if let Some(flow) = self.flow.last_mut() {
            flow.peak = flow.peak.max(flow.entry_peak);
            flow.entry_peak = depth;
            if flow.pair {
                flow.pair = false;
                flow.entry_peak -= 1;
                self.flow_depth -= 1;
            }
        }
    }

    /// Opens a block collection at `column` when it is deeper than the innermost one, or when
    /// it is a sequence at a mapping's column (as YAML allows for a key's value). A key at the
    /// column of such a sequence ends it.
    /// Whether it opened one.
    fn roll(&mut self, column: usize, sequence: bool, at: usize) -> Result<bool, usize> {
        let opened = match self.indents.last().copied() {
            Some(top) if column < top.column => false,
            Some(top) if column == top.column => {
                if !sequence && top.sequence && self.indentless() {
                    self.indents.pop();
                }
                sequence && !top.sequence
            }
            _ => true,
        };
        if opened {
            self.indents.push(Block { column, sequence });
        }
        self.check(at)?;
        Ok(opened)
    }

    /// Whether the innermost collection is a sequence at its mapping's column.
    fn indentless(&self) -> bool {
        match self.indents.as_slice() {
            [.., outer, inner] => inner.sequence && inner.column == outer.column,
            _ => false,
        }
    }

    /// The column of the innermost block collection.
    fn top(&self) -> Option<usize> {
        self.indents.last().map(|block| block.column)
    }

    /// Handles the start of a line: block scalar content, document markers, directives, and
    /// the indentation that closes block collections.
    fn start_line(&mut self) -> Result<(), usize> {
        let mut indent = 0;
        while self.byte(self.pos + indent) == Some(b' ') {
            indent += 1;
        }
        let blank = matches!(self.byte(self.pos + indent), None | Some(b'\n'));
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
            self.flow.clear();
            self.flow_depth = 0;
            self.plain = false;
            self.key = None;
            self.pos += 3;
            return Ok(());
        }
        if !self.flow.is_empty() {
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
        let top = self.top();
        if self.plain && top.is_none_or(|top| indent > top) {
            // The plain scalar of the line before goes on.
            return Ok(());
        }
        self.plain = false;
        self.key = None;
        while self.top().is_some_and(|top| top > indent) {
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
                    self.pos += 1;
                    self.open_flow(byte == b'[', at)?;
                }
                b']' | b'}' => {
                    self.close_flow();
                    self.pos += 1;
                }
                b',' if !self.flow.is_empty() => {
                    self.pos += 1;
                    self.next_entry();
                }
                b'?' if !self.flow.is_empty() => {
                    self.pos += 1;
                    self.pair(at)?;
                }
                b'-' | b'?' if self.blank_at(at + 1) => {
                    self.pos += 1;
                    if self.flow.is_empty() {
                        self.key = None;
                        self.roll(at - self.line_start, byte == b'-', at)?;
                    }
                }
                b':' if self.blank_at(at + 1) || !self.flow.is_empty() => {
                    self.pos += 1;
                    self.value_indicator(at)?;
                }
                b'|' | b'>' if self.flow.is_empty() => {
                    self.block_scalar_header();
                    return Ok(());
                }
                b'\'' | b'"' => {
                    self.key_here();
                    self.quoted(byte);
                }
                b'&' | b'*' => {
                    // An anchor's or alias's name is letters, digits, `-` and `_`.
                    self.key_here();
                    self.pos += 1;
                    while self
                        .byte(self.pos)
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    {
                        self.pos += 1;
                    }
                }
                b'!' => {
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
        if self.flow.is_empty() && self.key.is_none() {
            self.key = Some(self.column());
            self.key_peak = self.depth();
        }
    }

    /// A `:` making the node before it a key: in block context, that opens a mapping at the
    /// key's column; in a flow sequence, it makes the entry a mapping of one pair. Either way
    /// the key turns out one level deeper than it was counted.
    fn value_indicator(&mut self, at: usize) -> Result<(), usize> {
        if !self.flow.is_empty() {
            return self.pair(at);
        }
        if let Some(column) = self.key.take() {
            if self.roll(column, false, at)? && self.key_peak + 1 > self.limit {
                return Err(at);
            }
        }
        Ok(())
    }

    /// A `:` or `?` in flow context: in a sequence, the entry is a mapping of one pair.
    fn pair(&mut self, at: usize) -> Result<(), usize> {
        if let Some(flow) = self.flow.last_mut() {
            if flow.sequence && !flow.pair {
                flow.pair = true;
                flow.entry_peak += 1;
                self.flow_depth += 1;
                if flow.entry_peak > self.limit {
                    return Err(at);
                }
            }
        }
        self.check(at)
    }

    /// Scans a plain scalar up to what ends it on this line; it stays open at the line end, as
    /// the next line may continue it.
    fn plain_scalar(&mut self) -> Result<(), usize> {
        while let Some(byte) = self.byte(self.pos) {
            let at = self.pos;
            match byte {
                b'\n' => return Ok(()),
                b':' if self.blank_at(at + 1)
                    || (!self.flow.is_empty() && self.flow_indicator_at(at + 1)) =>
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
                b',' | b'[' | b']' | b'{' | b'}' if !self.flow.is_empty() => {
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
        let parent = self.top();
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
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    /// How deep the parser nests `value`: a scalar is 0, a collection one more than its deepest
    /// element.
    fn parsed_depth(value: &serde_yaml::Value) -> usize {
        use serde_yaml::Value;
        match value {
            Value::Sequence(items) => 1 + items.iter().map(parsed_depth).max().unwrap_or(0),
            Value::Mapping(map) => {
                1 + map
                    .iter()
                    .map(|(k, v)| parsed_depth(k).max(parsed_depth(v)))
                    .max()
                    .unwrap_or(0)
            }
            Value::Tagged(tagged) => parsed_depth(&tagged.value),
            _ => 0,
        }
    }

    /// A tree of collections to render as YAML in the styles a policy author may mix.
    #[derive(Debug, Clone)]
    enum Node {
        /// One of [`SCALARS`] in block context, of [`FLOW_SCALARS`] in flow context.
        Scalar(usize),
        /// A sequence, written in flow style when `true`.
        Sequence(Vec<Node>, bool),
        /// A mapping with keys `k0`, `k1`, ..., written in flow style when `true`.
        Mapping(Vec<Node>, bool),
    }

    const SCALARS: [&str; 6] = [
        "a",
        "b] [c {",
        "'q[''x'",
        "\"d{\\\"[\"",
        "e # [[[",
        "|\n  [[{ x\n   ]] '\n",
    ];
    const FLOW_SCALARS: [&str; 3] = ["a", "'q[''x'", "\"d{\\\"[\""];

    fn node() -> impl Strategy<Value = Node> {
        (0..SCALARS.len())
            .prop_map(Node::Scalar)
            .prop_recursive(12, 64, 3, |inner| {
                prop_oneof![
                    (prop::collection::vec(inner.clone(), 0..3), any::<bool>())
                        .prop_map(|(items, flow)| Node::Sequence(items, flow)),
                    (prop::collection::vec(inner, 0..3), any::<bool>())
                        .prop_map(|(items, flow)| Node::Mapping(items, flow)),
                ]
            })
    }

    /// `node` as a value following `key:` or `-` on a line indented by `indent`.
    fn block(node: &Node, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent + 2);
        match node {
            Node::Scalar(i) => {
                let scalar = SCALARS[*i].replace('\n', &format!("\n{}", " ".repeat(indent)));
                out.push(' ');
                out.push_str(&scalar);
                if !scalar.ends_with('\n') {
                    out.push('\n');
                }
            }
            Node::Sequence(items, false) if !items.is_empty() => {
                out.push('\n');
                for item in items {
                    out.push_str(&format!("{pad}-"));
                    block(item, indent + 2, out);
                }
            }
            Node::Mapping(items, false) if !items.is_empty() => {
                out.push('\n');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&format!("{pad}k{i}:"));
                    block(item, indent + 2, out);
                }
            }
            _ => {
                out.push(' ');
                flow(node, out);
                out.push('\n');
            }
        }
    }

    fn flow(node: &Node, out: &mut String) {
        match node {
            Node::Scalar(i) => out.push_str(FLOW_SCALARS[i % FLOW_SCALARS.len()]),
            Node::Sequence(items, _) => {
                out.push('[');
                for item in items {
                    match item {
                        // A mapping of one pair may leave out its braces in a sequence.
                        Node::Mapping(pair, true) if pair.len() == 1 => {
                            out.push_str("k0: ");
                            flow(&pair[0], out);
                        }
                        _ => flow(item, out),
                    }
                    out.push_str(", ");
                }
                out.push(']');
            }
            Node::Mapping(items, _) => {
                out.push('{');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&format!("k{i}: "));
                    flow(item, out);
                    out.push_str(", ");
                }
                out.push('}');
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Text written in mixed styles is measured at least as deep as the parser reads it, and
        /// exactly as deep when it holds no scalar that looks like a bracket.
        #[test]
        fn mixed_styles_are_measured_at_least_as_deep_as_parsed(tree in node()) {
            let mut text = String::from("root:");
            block(&tree, 0, &mut text);
            let value: serde_yaml::Value = serde_yaml::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            let depth = parsed_depth(&value);
            prop_assert!(too_deep(&text, depth - 1).is_some(), "{text} nests {depth} deep");
            prop_assert!(too_deep(&text, depth).is_none(), "{text} nests only {depth} deep");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The scan never finds text shallower than the parser does: whatever the parser
        /// accepts at depth d, the scan refuses at any limit below d.
        #[test]
        fn the_scan_never_under_counts_what_the_parser_accepts(
            text in "(---|\\.\\.\\.|%|\\t|\\r|\\|2|>-|  |\u{85}|\u{feff}|\u{2028}|ä|[ \\n:,#|>&*!?'\"\\-]|[\\[\\]{}]|[ab1]){0,64}",
        ) {
            let mut deepest = 0;
            for document in serde_yaml::Deserializer::from_str(&text) {
                match serde_yaml::Value::deserialize(document) {
                    Ok(value) => deepest = deepest.max(parsed_depth(&value)),
                    Err(_) => return Ok(()),
                }
            }
            if deepest > 0 {
                prop_assert!(too_deep(&text, deepest - 1).is_some(), "{text:?} nests {deepest} deep");
            }
        }
    }

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
            format!("a: 1 # comment\r{nested}: 2\n"),
            format!("a: 1 # comment\u{2028}b: {nested}\n"),
            format!("\u{feff}{nested}\n"),
            format!("[x: {nested}]\n"),
            format!("&anchor:\n  {nested}\n"),
        ] {
            assert!(!depth_ok(&text, 9), "{text}");
        }
    }

    #[test]
    fn the_scan_is_linear() {
        let text = format!("{}{}", "{a: ".repeat(50_000), "}".repeat(50_000));
        assert!(!depth_ok(&text, MAX_DEPTH));
        // A quadratic scan would take hours over this megabyte.
        let fine = format!("x: [{}]\n", "a, ".repeat(70_000)).repeat(5);
        let start = std::time::Instant::now();
        assert!(depth_ok(&fine, MAX_DEPTH));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
