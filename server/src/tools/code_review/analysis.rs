//! Parses source code with tree-sitter and measures each function in one pass.
//!
//! The walk is iterative (a tree cursor and an explicit stack), so deeply nested input
//! cannot overflow the thread's stack, and every syntax node is visited once: the cost
//! is linear in the size of the code.

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, Parser, TreeCursor};

use super::language::{Kinds, Language};

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
}

impl Function {
    /// Lines from signature to end.
    pub fn length(&self) -> usize {
        self.end_line + 1 - self.start_line
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

/// Inputs smaller than this are parsed in one piece: splitting costs more than it saves.
const PARALLEL_MIN_BYTES: usize = 256 * 1024;

/// Parses `code` as `language` and measures its functions.
///
/// Large inputs are cut at top-level definitions and the pieces parsed on parallel
/// threads. A cut can only be wrong by landing inside a string or comment, which leaves
/// the piece before it unterminated and so with a syntax error: any error in any piece
/// sends the whole input through one parse instead. The result is always exactly what a
/// single parse gives.
pub fn analyze(code: &str, language: Language) -> Analysis {
    if code.len() >= PARALLEL_MIN_BYTES {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pieces = split_at_definitions(code, language, threads);
        if pieces.len() > 1 {
            let analyses: Vec<Option<Analysis>> = std::thread::scope(|scope| {
                let handles: Vec<_> = pieces
                    .iter()
                    .map(|&(start, end, first_line)| {
                        scope.spawn(move || analyze_piece(&code[start..end], language, first_line))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().ok().flatten()).collect()
            });
            if analyses
                .iter()
                .all(|a| a.as_ref().is_some_and(|a| a.syntax_error_line.is_none()))
            {
                let functions = analyses.into_iter().flatten().flat_map(|a| a.functions).collect();
                return Analysis {
                    functions,
                    syntax_error_line: None,
                };
            }
        }
    }
    analyze_piece(code, language, 0).unwrap_or_default()
}

/// Parses one piece of code whose first line is line `first_line + 1` of the whole.
fn analyze_piece(code: &str, language: Language, first_line: usize) -> Option<Analysis> {
    let grammar = language.grammar()?;
    let mut parser = Parser::new();
    if parser.set_language(&grammar).is_err() {
        tracing::error!(%language, "the grammar does not match the tree-sitter version");
        return None;
    }
    let tree = parser.parse(code, None)?;
    Some(
        Walker {
            source: code.as_bytes(),
            language,
            kinds: language.kinds(),
            first_line,
            analysis: Analysis::default(),
            frames: Vec::new(),
            scopes: Vec::new(),
        }
        .walk(tree.walk()),
    )
}

/// Whether a line can start a piece: a top-level definition after a blank line.
fn starts_definition(line: &str, language: Language) -> bool {
    let starts: &[&str] = match language {
        Language::Python => &["def ", "async def ", "class ", "@"],
        Language::Rust => &[
            "fn ", "pub ", "impl", "struct ", "enum ", "trait ", "mod ", "#[", "const ", "static ", "use ",
        ],
        Language::JavaScript | Language::TypeScript => &[
            "function ",
            "async function ",
            "export ",
            "class ",
            "const ",
            "let ",
            "var ",
            "interface ",
            "type ",
        ],
        Language::Unknown => &[],
    };
    starts.iter().any(|prefix| line.starts_with(prefix))
}

/// Cuts `code` into at most `parts` pieces of similar size at definition lines:
/// `(start byte, end byte, lines before the piece)` each.
fn split_at_definitions(code: &str, language: Language, parts: usize) -> Vec<(usize, usize, usize)> {
    let target = code.len() / parts.max(1);
    let mut pieces = Vec::with_capacity(parts);
    let (mut start, mut start_line) = (0, 0);
    let (mut offset, mut line_number, mut previous_blank) = (0, 0, false);
    for line in code.split_inclusive('\n') {
        if pieces.len() + 1 < parts && offset - start >= target && previous_blank && starts_definition(line, language) {
            pieces.push((start, offset, start_line));
            start = offset;
            start_line = line_number;
        }
        previous_blank = line.trim().is_empty();
        offset += line.len();
        line_number += 1;
    }
    pieces.push((start, code.len(), start_line));
    pieces
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
    /// Lines of the whole input before this piece.
    first_line: usize,
    analysis: Analysis,
    frames: Vec<Frame>,
    /// Enclosing class/impl names, each with how many functions were open around it.
    scopes: Vec<(String, usize)>,
}

impl<'a> Walker<'a> {
    fn walk(mut self, mut cursor: TreeCursor<'_>) -> Analysis {
        // What each open node pushed, innermost last.
        let mut pushed: Vec<(usize, Pushed)> = Vec::new();
        loop {
            let node = cursor.node();
            if let Some(kind) = self.enter(node) {
                pushed.push((node.id(), kind));
            }
            if cursor.goto_first_child() {
                continue;
            }
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
                    return self.analysis;
                }
            }
        }
    }

    fn text(&self, node: Node<'_>) -> &'a str {
        std::str::from_utf8(&self.source[node.byte_range()]).unwrap_or("")
    }

    fn enter(&mut self, node: Node<'_>) -> Option<Pushed> {
        if (node.is_error() || node.is_missing()) && self.analysis.syntax_error_line.is_none() {
            self.analysis.syntax_error_line = Some(self.first_line + node.start_position().row + 1);
        }
        let kind = node.kind();
        if !node.is_named() {
            if self.kinds.short_circuits.contains(&kind)
                && node
                    .parent()
                    .is_some_and(|p| matches!(p.kind(), "binary_expression" | "boolean_operator"))
            {
                self.add_decision();
            }
            return None;
        }
        if self.kinds.functions.contains(&kind) || self.kinds.anonymous.contains(&kind) {
            if let Some(name) = self.function_name(node) {
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
        if self.kinds.nesting.contains(&kind) && !is_else_if(node) {
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
    fn function_name(&self, node: Node<'_>) -> Option<String> {
        let own = node.child_by_field_name("name").map(|n| self.text(n).to_owned());
        let name = if self.kinds.anonymous.contains(&node.kind()) {
            let parent = node.parent()?;
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
            start_line: self.first_line + node.start_position().row + 1,
            end_line: self.first_line + node.end_position().row + 1,
            parameters,
            complexity: 1,
            nesting: 0,
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
fn is_else_if(node: Node<'_>) -> bool {
    matches!(node.kind(), "if_statement" | "if_expression") && node.parent().is_some_and(|p| p.kind() == "else_clause")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn large_inputs_parsed_in_pieces_match_a_single_parse() {
        let block = "def f_{i}(a, b):\n    if a and b:\n        return a\n    return b\n\n\nclass C_{i}:\n    def m(self):\n        pass\n\n\n";
        let code: String = (0..4_000).map(|i| block.replace("{i}", &i.to_string())).collect();
        assert!(code.len() >= PARALLEL_MIN_BYTES);
        assert!(split_at_definitions(&code, Language::Python, 2).len() == 2);
        let whole = analyze_piece(&code, Language::Python, 0).unwrap();
        let pieces = analyze(&code, Language::Python);
        assert_eq!(pieces, whole);
        assert_eq!(pieces.functions.len(), 8_000);
        assert_eq!(pieces.functions[7_999].name, "C_3999.m");
        assert_eq!(pieces.functions[7_999].start_line, 3_999 * 11 + 8);
    }

    #[test]
    fn a_cut_inside_a_string_falls_back_to_one_parse() {
        // Every definition after the first sits inside one long string: cutting there
        // leaves the first piece unterminated, so the whole is parsed at once.
        let body: String = (0..20_000).map(|i| format!("\ndef fake_{i}():\n    pass\n")).collect();
        let code = format!("def real():\n    return '''{body}'''\n");
        assert!(code.len() >= PARALLEL_MIN_BYTES);
        let analysis = analyze(&code, Language::Python);
        assert_eq!(analysis.syntax_error_line, None);
        assert_eq!(analysis.functions.len(), 1);
        assert_eq!(analysis.functions[0].name, "real");
    }

    #[test]
    fn unknown_languages_have_no_functions() {
        assert_eq!(analyze("def f(): pass", Language::Unknown), Analysis::default());
    }
}
