//! Parses source code with tree-sitter and measures each function in one pass.
//!
//! The walk is iterative (a tree cursor and an explicit stack), so deeply nested input
//! cannot overflow the thread's stack, and every syntax node is visited once: the cost
//! is linear in the size of the code, whatever its shape (see [`analyze`]).

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, ParseOptions, ParseState, Parser, TreeCursor};

use super::{
    comments,
    language::{Kinds, Language},
};
use crate::engine::tool::Cancel;

/// One function or method found in the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    /// Its name; methods are qualified by their class or type (`Stack.push`, `Stack::push`).
    pub name: String,
    /// First line (1-based), where its signature starts.
    pub start_line: usize,
    /// Last line (1-based).
    pub end_line: usize,
    /// Its parameters as written, without types and defaults.
    pub parameters: Vec<String>,
    /// Cyclomatic complexity: 1 + the decision points in its own body.
    pub complexity: u32,
    /// The deepest nesting of blocks in its own body (0 for a flat function).
    pub nesting: u32,
    /// Lines from signature to end that hold code: not blank, not only a comment. (0 in
    /// measurements stored before it was measured.)
    #[serde(default)]
    pub code_lines: usize,
}

impl Function {
    /// Lines from signature to end.
    pub fn length(&self) -> usize {
        self.end_line + 1 - self.start_line
    }

    /// Lines that hold code: what makes a function long (a long comment does not).
    pub fn lines_of_code(&self) -> usize {
        match self.code_lines {
            0 => self.length(),
            lines => lines,
        }
    }

    /// Parameters that count towards "too many": not the receiver (`self`, `cls`).
    pub fn counted_parameters(&self) -> usize {
        self.parameters
            .iter()
            .filter(|p| !matches!(p.as_str(), "self" | "cls" | "&self" | "&mut self" | "mut self"))
            .count()
    }
}

/// What the parser found in a piece of code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// Functions in source order.
    pub functions: Vec<Function>,
    /// The first line with a syntax error, if any.
    pub syntax_error_line: Option<usize>,
}

/// How many syntax nodes the walk visits between two checks of its [`Cancel`].
const CANCEL_CHECK_EVERY: usize = 4_096;

/// The review was asked to stop before it finished (its node timed out, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped before the analysis finished")]
pub struct Stopped;

/// Parses `code` as `language` and measures its functions.
///
/// The cost is linear in the code whatever its shape: Python comment blocks are thinned
/// first (`comments::thin`), the walk visits each syntax node once and keeps its own
/// stack of ancestors (tree-sitter finds a node's parent by searching down from the root,
/// which costs the width of every level on the way). Both the parse and the walk stop
/// soon after `cancel` is raised.
pub fn analyze(code: &str, language: Language, cancel: &Cancel) -> Result<Analysis, Stopped> {
    match language {
        Language::Python => analyze_source(&comments::thin(code), language, cancel),
        _ => analyze_source(code, language, cancel),
    }
}

/// Parses `source` as it is and measures its functions.
fn analyze_source(source: &str, language: Language, cancel: &Cancel) -> Result<Analysis, Stopped> {
    let Some(grammar) = language.grammar() else {
        return Ok(Analysis::default());
    };
    let mut parser = Parser::new();
    if parser.set_language(&grammar).is_err() {
        tracing::error!(%language, "the grammar does not match the tree-sitter version");
        return Ok(Analysis::default());
    }
    let bytes = source.as_bytes();
    let mut read = |offset: usize, _| bytes.get(offset..).unwrap_or_default();
    let mut stop = |_: &ParseState| cancel.requested();
    let options = ParseOptions::new().progress_callback(&mut stop);
    let Some(tree) = parser.parse_with_options(&mut read, None, Some(options)) else {
        return if cancel.requested() {
            Err(Stopped)
        } else {
            Ok(Analysis::default())
        };
    };
    Walker {
        source: bytes,
        language,
        kinds: language.kinds(),
        analysis: Analysis::default(),
        code_rows: Vec::new(),
        frames: Vec::new(),
        scopes: Vec::new(),
    }
    .walk(tree.walk(), cancel)
}

/// A function being measured.
struct Frame {
    function: usize,
    depth: u32,
}

/// What entering a node pushed, to be undone when leaving it.
enum Pushed {
    Function,
    Scope,
    Nesting,
}

struct Walker<'a> {
    source: &'a [u8],
    language: Language,
    kinds: &'static Kinds,
    analysis: Analysis,
    /// Per line (0-based), whether any token other than a comment is on it.
    code_rows: Vec<bool>,
    frames: Vec<Frame>,
    /// Enclosing class/impl names, each with how many functions were open around it.
    scopes: Vec<(String, usize)>,
}

impl<'a> Walker<'a> {
    fn walk(mut self, mut cursor: TreeCursor<'a>, cancel: &Cancel) -> Result<Analysis, Stopped> {
        // What each open node pushed, innermost last.
        let mut pushed: Vec<(usize, Pushed)> = Vec::new();
        // The nodes above the cursor, innermost last.
        let mut ancestors: Vec<Node<'a>> = Vec::new();
        let mut visited = 0usize;
        loop {
            visited += 1;
            if visited.is_multiple_of(CANCEL_CHECK_EVERY) && cancel.requested() {
                return Err(Stopped);
            }
            let node = cursor.node();
            if let Some(kind) = self.enter(node, ancestors.last().copied()) {
                pushed.push((node.id(), kind));
            }
            if cursor.goto_first_child() {
                ancestors.push(node);
                continue;
            }
            self.mark_code(node);
            loop {
                let id = cursor.node().id();
                while pushed.last().is_some_and(|(open, _)| *open == id) {
                    if let Some((_, kind)) = pushed.pop() {
                        self.leave(kind);
                    }
                }
                if cursor.goto_next_sibling() {
                    break;
                }
                if !cursor.goto_parent() {
                    return Ok(self.finish());
                }
                ancestors.pop();
            }
        }
    }

    /// Notes the lines a leaf token covers, unless it is a comment.
    fn mark_code(&mut self, leaf: Node<'_>) {
        if leaf.kind().ends_with("comment") || leaf.byte_range().is_empty() {
            return;
        }
        let (first, last) = (leaf.start_position().row, leaf.end_position().row);
        if self.code_rows.len() <= last {
            self.code_rows.resize(last + 1, false);
        }
        self.code_rows[first..=last].fill(true);
    }

    /// Counts each function's lines of code, now that every line is marked.
    fn finish(mut self) -> Analysis {
        let mut before = Vec::with_capacity(self.code_rows.len() + 1);
        before.push(0usize);
        for (row, &code) in self.code_rows.iter().enumerate() {
            before.push(before[row] + usize::from(code));
        }
        let upto = |line: usize| before[line.min(before.len() - 1)];
        for function in &mut self.analysis.functions {
            function.code_lines = upto(function.end_line) - upto(function.start_line - 1);
        }
        self.analysis
    }

    fn text(&self, node: Node<'_>) -> &'a str {
        std::str::from_utf8(&self.source[node.byte_range()]).unwrap_or("")
    }

    /// Enters `node`, whose parent is `parent`.
    fn enter(&mut self, node: Node<'_>, parent: Option<Node<'_>>) -> Option<Pushed> {
        if (node.is_error() || node.is_missing()) && self.analysis.syntax_error_line.is_none() {
            self.analysis.syntax_error_line = Some(node.start_position().row + 1);
        }
        let kind = node.kind();
        if !node.is_named() {
            if self.kinds.short_circuits.contains(&kind)
                && parent.is_some_and(|p| matches!(p.kind(), "binary_expression" | "boolean_operator"))
            {
                self.add_decision();
            }
            return None;
        }
        if self.kinds.functions.contains(&kind) || self.kinds.anonymous.contains(&kind) {
            if let Some(name) = self.function_name(node, parent) {
                self.open_function(node, name);
                return Some(Pushed::Function);
            }
            return None;
        }
        if self.kinds.scopes.contains(&kind) {
            let name = node
                .child_by_field_name("name")
                .or_else(|| node.child_by_field_name("type"))
                .map(|n| self.text(n).to_owned())
                .unwrap_or_default();
            self.scopes.push((name, self.frames.len()));
            return Some(Pushed::Scope);
        }
        if self.kinds.decisions.contains(&kind) {
            self.add_decision();
        }
        if self.kinds.nesting.contains(&kind) && !is_else_if(node, parent) {
            if let Some(frame) = self.frames.last_mut() {
                frame.depth += 1;
                let function = &mut self.analysis.functions[frame.function];
                function.nesting = function.nesting.max(frame.depth);
                return Some(Pushed::Nesting);
            }
        }
        None
    }

    fn leave(&mut self, pushed: Pushed) {
        match pushed {
            Pushed::Function => {
                self.frames.pop();
            }
            Pushed::Scope => {
                self.scopes.pop();
            }
            Pushed::Nesting => {
                if let Some(frame) = self.frames.last_mut() {
                    frame.depth -= 1;
                }
            }
        }
    }

    fn add_decision(&mut self) {
        if let Some(frame) = self.frames.last() {
            self.analysis.functions[frame.function].complexity += 1;
        }
    }

    /// The function's name, or `None` for an anonymous function that nothing names
    /// (a callback): its decisions then count towards the function around it.
    fn function_name(&self, node: Node<'_>, parent: Option<Node<'_>>) -> Option<String> {
        let own = node.child_by_field_name("name").map(|n| self.text(n).to_owned());
        let name = if self.kinds.anonymous.contains(&node.kind()) {
            let parent = parent?;
            let field = match parent.kind() {
                "variable_declarator" => "name",
                "pair" => "key",
                "assignment_expression" => "left",
                "public_field_definition" | "field_definition" => "property",
                _ => return own,
            };
            parent.child_by_field_name(field).map(|n| self.text(n).to_owned())?
        } else {
            own?
        };
        // A method is qualified by its class or impl: one opened with no function since.
        let in_scope = self.scopes.last().filter(|(_, open)| *open == self.frames.len());
        Some(match in_scope {
            Some((scope, _)) if !scope.is_empty() => {
                let separator = if self.language == Language::Rust { "::" } else { "." };
                format!("{scope}{separator}{name}")
            }
            _ => name,
        })
    }

    fn open_function(&mut self, node: Node<'_>, name: String) {
        let parameters = node
            .child_by_field_name("parameters")
            .map(|params| self.parameter_names(params))
            .or_else(|| {
                // `x => x + 1`: a lone parameter without parentheses.
                node.child_by_field_name("parameter")
                    .map(|p| vec![self.text(p).to_owned()])
            })
            .unwrap_or_default();
        self.analysis.functions.push(Function {
            name,
            start_line: node.start_position().row + 1,
            end_line: node.end_position().row + 1,
            parameters,
            complexity: 1,
            nesting: 0,
            code_lines: 0,
        });
        self.frames.push(Frame {
            function: self.analysis.functions.len() - 1,
            depth: 0,
        });
    }

    fn parameter_names(&self, params: Node<'_>) -> Vec<String> {
        let mut cursor = params.walk();
        params
            .named_children(&mut cursor)
            .filter(|p| {
                !matches!(
                    p.kind(),
                    "comment"
                        | "keyword_separator"
                        | "positional_separator"
                        | "attribute_item"
                        | "line_comment"
                        | "block_comment"
                )
            })
            .map(|p| {
                let text = self.text(p);
                let name = if p.kind() == "self_parameter" {
                    text
                } else {
                    text.split([':', '=']).next().unwrap_or(text)
                };
                name.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .filter(|name| !name.is_empty())
            .collect()
    }
}

/// `else if`: an `if` that is the whole `else` branch of another continues its chain
/// rather than nesting one level deeper.
fn is_else_if(node: Node<'_>, parent: Option<Node<'_>>) -> bool {
    matches!(node.kind(), "if_statement" | "if_expression") && parent.is_some_and(|p| p.kind() == "else_clause")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyze(code: &str, language: Language) -> Analysis {
        super::analyze(code, language, &Cancel::never()).expect("never cancelled")
    }

    fn summary(code: &str, language: Language) -> Vec<(String, usize, usize, Vec<String>, u32, u32)> {
        analyze(code, language)
            .functions
            .into_iter()
            .map(|f| (f.name, f.start_line, f.end_line, f.parameters, f.complexity, f.nesting))
            .collect()
    }

    fn params(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn measures_python_functions_and_methods() {
        let code = "\
def plain(a, b=2, *args, **kw):
    return a

class Stack:
    def push(self, item: int) -> None:
        if item > 0 and item < 10:
            for i in range(item):
                while i:
                    i -= 1
        elif item == 0:
            pass
        try:
            pass
        except ValueError:
            pass

async def fetch(url):
    return [x for x in url if x] if url else None
";
        assert_eq!(
            summary(code, Language::Python),
            vec![
                ("plain".into(), 1, 2, params(&["a", "b", "*args", "**kw"]), 1, 0),
                // if, and, for, while, elif, except: 1 + 6.
                ("Stack.push".into(), 5, 15, params(&["self", "item"]), 7, 3),
                // comprehension `if`, conditional expression: 1 + 2.
                ("fetch".into(), 17, 18, params(&["url"]), 3, 0),
            ]
        );
    }

    #[test]
    fn measures_rust_functions_in_impls() {
        let code = "\
fn free(x: u32) -> u32 { x }

impl Parser {
    pub fn parse(&mut self, input: &str, strict: bool) -> bool {
        if strict && input.is_empty() {
            return false;
        } else if input.len() > 3 {
            for c in input.chars() {
                match c {
                    'a' => {}
                    _ => {}
                }
            }
        }
        true
    }
}
";
        assert_eq!(
            summary(code, Language::Rust),
            vec![
                ("free".into(), 1, 1, params(&["x"]), 1, 0),
                // if, &&, else if, for, two match arms: 1 + 6; if > for > match.
                (
                    "Parser::parse".into(),
                    4,
                    16,
                    params(&["&mut self", "input", "strict"]),
                    7,
                    3
                ),
            ]
        );
    }

    #[test]
    fn measures_javascript_named_functions_but_not_callbacks() {
        let code = "\
function total(items, tax = 0) {
  return items.map(x => x > 0 ? x : 0).reduce((a, b) => a + b, 0) || 0;
}
const greet = (name) => {
  if (!name) { return 'hi'; }
  return `hi ${name}`;
};
class Cart {
  add(item) {
    switch (item.kind) {
      case 'a': return 1;
      case 'b': return 2;
      default: return 0;
    }
  }
}
";
        assert_eq!(
            summary(code, Language::JavaScript),
            vec![
                // The callbacks' ternary and the `||` count towards `total`: 1 + 2.
                ("total".into(), 1, 3, params(&["items", "tax"]), 3, 0),
                ("greet".into(), 4, 7, params(&["name"]), 2, 1),
                ("Cart.add".into(), 9, 15, params(&["item"]), 3, 1),
            ]
        );
    }

    #[test]
    fn reads_typescript_parameters_without_types() {
        let code = "export function area(w: number, h?: number): number {\n  return w * (h ?? w);\n}\n";
        assert_eq!(
            summary(code, Language::TypeScript),
            vec![("area".into(), 1, 3, params(&["w", "h?"]), 2, 0)]
        );
    }

    #[test]
    fn reports_the_first_syntax_error_line() {
        let analysis = analyze("def ok():\n    pass\n\ndef broken(:\n    pass\n", Language::Python);
        assert_eq!(analysis.syntax_error_line, Some(4));
        assert_eq!(
            analyze("def ok():\n    pass\n", Language::Python).syntax_error_line,
            None
        );
    }

    #[test]
    fn survives_very_deep_nesting() {
        let depth = 5_000;
        let code = format!("x = {}1{}\n", "(".repeat(depth), ")".repeat(depth));
        let analysis = analyze(&code, Language::Python);
        assert!(analysis.functions.is_empty());
    }

    #[test]
    fn large_inputs_are_measured_whole() {
        let block = "def f_{i}(a, b):\n    if a and b:\n        return a\n    return b\n\n\nclass C_{i}:\n    def m(self):\n        pass\n\n\n";
        let code: String = (0..4_000).map(|i| block.replace("{i}", &i.to_string())).collect();
        let analysis = analyze(&code, Language::Python);
        assert_eq!(analysis.functions.len(), 8_000);
        assert_eq!(analysis.functions[7_998].complexity, 3);
        assert_eq!(analysis.functions[7_999].name, "C_3999.m");
        assert_eq!(analysis.functions[7_999].start_line, 3_999 * 11 + 8);
    }

    /// A small generator of comment-heavy Python: functions and nested blocks with comment
    /// runs of every indentation between and after their lines, and strings holding `#`.
    fn comment_heavy_python(seed: u64) -> String {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = |below: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % below
        };
        let mut code = String::new();
        for f in 0..6 {
            code.push_str(&format!("def f{f}(a, b):\n"));
            let mut depth = 1;
            for line in 0..12 {
                let indent = "    ".repeat(depth);
                match next(6) {
                    0 if depth < 4 => {
                        code.push_str(&format!("{indent}if a > {line}:\n"));
                        depth += 1;
                        code.push_str(&format!("{}a -= 1\n", "    ".repeat(depth)));
                    }
                    1 if depth > 1 => {
                        depth -= 1;
                        code.push_str(&format!("{}b = a or b\n", "    ".repeat(depth)));
                    }
                    2 => code.push_str(&format!("{indent}s = '''\n# not a comment\n#{line}\n'''\n")),
                    _ => code.push_str(&format!("{indent}a = b + {line}\n")),
                }
                for _ in 0..next(6) {
                    let spaces = " ".repeat(next(5 * 4) as usize);
                    code.push_str(&format!("{spaces}# note\n"));
                    if next(4) == 0 {
                        code.push('\n');
                    }
                }
            }
            for _ in 0..next(5) {
                code.push_str(&format!("{}# trailing\n", " ".repeat(next(13) as usize)));
            }
        }
        code
    }

    #[test]
    fn thinning_comment_blocks_changes_no_measurement() {
        let mut thinned_some = 0;
        for seed in 0..300 {
            let code = comment_heavy_python(seed);
            let thinned = super::comments::thin(&code);
            thinned_some += usize::from(thinned != code);
            let whole = analyze_source(&code, Language::Python, &Cancel::never()).unwrap();
            let thin = analyze_source(&thinned, Language::Python, &Cancel::never()).unwrap();
            assert_eq!(whole.functions.len(), 6);
            assert_eq!(thin, whole, "seed {seed}:\n{code}");
        }
        assert!(thinned_some > 250, "most inputs have blocks to thin: {thinned_some}");
    }

    #[test]
    fn long_comment_blocks_keep_their_function_whole() {
        let body = "    # c\n".repeat(50_000);
        let code = format!("def f(a):\n    x = a\n{body}    return x\n\n\ndef g():\n    pass\n{body}# after\n{body}");
        let analysis = analyze(&code, Language::Python);
        let found: Vec<(&str, usize, usize)> = analysis
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.start_line, f.end_line))
            .collect();
        assert_eq!(found, [("f", 1, 50_003), ("g", 50_006, 100_007)]);
        let code_lines: Vec<usize> = analysis.functions.iter().map(|f| f.code_lines).collect();
        assert_eq!(code_lines, [3, 2], "comment lines are not lines of code");
        assert_eq!(analysis.syntax_error_line, None);
    }

    #[test]
    fn a_raised_cancel_stops_the_analysis() {
        let code = "def f(a):\n    return a\n".repeat(50_000);
        let cancel = Cancel::never();
        cancel.request();
        assert_eq!(super::analyze(&code, Language::Python, &cancel), Err(Stopped));
    }

    #[test]
    fn unknown_languages_have_no_functions() {
        assert_eq!(analyze("def f(): pass", Language::Unknown), Analysis::default());
    }
}
