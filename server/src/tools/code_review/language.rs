//! The languages the Code Review preset parses, how it tells them apart, and the
//! tree-sitter node kinds that matter for each.

use std::fmt;

/// A language the reviewer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// Python 3.
    Python,
    /// Rust.
    Rust,
    /// JavaScript (including JSX).
    JavaScript,
    /// TypeScript.
    TypeScript,
    /// Anything else: only line-level checks apply.
    Unknown,
}

impl Language {
    /// The name written into the state.
    pub fn name(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Rust => "rust",
            Self::JavaScript => "javascript",
            Self::TypeScript => "typescript",
            Self::Unknown => "unknown",
        }
    }

    /// Reads a user's hint: a name or a file extension, in any case.
    pub fn from_hint(hint: &str) -> Option<Self> {
        Some(match hint.trim().to_ascii_lowercase().as_str() {
            "python" | "py" => Self::Python,
            "rust" | "rs" => Self::Rust,
            "javascript" | "js" | "jsx" | "mjs" | "cjs" => Self::JavaScript,
            "typescript" | "ts" | "tsx" => Self::TypeScript,
            "unknown" | "text" | "plain" => Self::Unknown,
            _ => return None,
        })
    }

    /// The tree-sitter grammar, for the languages that have one here.
    pub fn grammar(self) -> Option<tree_sitter::Language> {
        Some(match self {
            Self::Python => tree_sitter_python::LANGUAGE.into(),
            Self::Rust => tree_sitter_rust::LANGUAGE.into(),
            Self::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Self::TypeScript => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Self::Unknown => return None,
        })
    }

    /// What starts a line comment.
    pub fn comment_prefix(self) -> Option<&'static str> {
        match self {
            Self::Python => Some("#"),
            Self::Rust | Self::JavaScript | Self::TypeScript => Some("//"),
            Self::Unknown => None,
        }
    }

    /// Guesses the language from the first lines of `code`, by counting telltale
    /// constructs. Reads at most 2,000 lines, so the cost is bounded on any input.
    pub fn detect(code: &str) -> Self {
        let (mut python, mut rust, mut js, mut ts) = (0u32, 0u32, 0u32, 0u32);
        for line in code.lines().take(2_000) {
            let line = line.trim();
            let starts = |prefixes: &[&str]| prefixes.iter().any(|p| line.starts_with(p));
            if starts(&["def ", "async def ", "elif ", "from "]) || (starts(&["class "]) && line.ends_with(':')) {
                python += 2;
            }
            if line.contains("self.") || (starts(&["import "]) && !line.ends_with(';') && !line.contains(" from ")) {
                python += 1;
            }
            if starts(&[
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "impl ",
                "impl<",
                "use ",
                "mod ",
                "pub struct ",
                "#[",
            ]) || line.contains("let mut ")
                || line.contains("&self")
            {
                rust += 2;
            }
            if starts(&["function ", "const ", "let ", "var ", "export ", "async function "])
                || line.contains("=> ")
                || line.contains("console.")
                || line.contains("require(")
            {
                js += 1;
            }
            if starts(&[
                "interface ",
                "export interface ",
                "type ",
                "export type ",
                "enum ",
                "private ",
                "public ",
                "readonly ",
            ]) || line.contains(": string")
                || line.contains(": number")
                || line.contains(": boolean")
            {
                ts += 2;
            }
        }
        // `let x` counts for JavaScript too: a Rust file keeps its lead by its own signs.
        let best = python.max(rust).max(js + ts);
        if best == 0 {
            Self::Unknown
        } else if best == python {
            Self::Python
        } else if best == rust {
            Self::Rust
        } else if ts > 0 {
            Self::TypeScript
        } else {
            Self::JavaScript
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The node kinds the analysis looks for, per language.
pub(super) struct Kinds {
    /// Nodes that are a function with a body.
    pub functions: &'static [&'static str],
    /// Anonymous functions that count as one only when a declaration names them.
    pub anonymous: &'static [&'static str],
    /// Nodes that name a scope for methods (`class Foo`, `impl Foo`).
    pub scopes: &'static [&'static str],
    /// Nodes that add one path through the code.
    pub decisions: &'static [&'static str],
    /// Binary operators that add one path (`and`, `&&`, ...).
    pub short_circuits: &'static [&'static str],
    /// Nodes that nest a block one level deeper.
    pub nesting: &'static [&'static str],
}

const JS_KINDS: Kinds = Kinds {
    functions: &[
        "function_declaration",
        "generator_function_declaration",
        "method_definition",
    ],
    anonymous: &[
        "arrow_function",
        "function_expression",
        "function",
        "generator_function",
    ],
    scopes: &["class_declaration", "class", "abstract_class_declaration"],
    decisions: &[
        "if_statement",
        "for_statement",
        "for_in_statement",
        "while_statement",
        "do_statement",
        "switch_case",
        "catch_clause",
        "ternary_expression",
    ],
    short_circuits: &["&&", "||", "??"],
    nesting: &[
        "if_statement",
        "for_statement",
        "for_in_statement",
        "while_statement",
        "do_statement",
        "switch_statement",
        "try_statement",
    ],
};

impl Language {
    pub(super) fn kinds(self) -> &'static Kinds {
        match self {
            Self::Python => &Kinds {
                functions: &["function_definition"],
                anonymous: &[],
                scopes: &["class_definition"],
                decisions: &[
                    "if_statement",
                    "elif_clause",
                    "for_statement",
                    "while_statement",
                    "except_clause",
                    "conditional_expression",
                    "if_clause",
                    "case_clause",
                ],
                short_circuits: &["and", "or"],
                nesting: &[
                    "if_statement",
                    "for_statement",
                    "while_statement",
                    "try_statement",
                    "with_statement",
                    "match_statement",
                ],
            },
            Self::Rust => &Kinds {
                functions: &["function_item"],
                anonymous: &[],
                scopes: &["impl_item", "trait_item"],
                decisions: &[
                    "if_expression",
                    "match_arm",
                    "while_expression",
                    "for_expression",
                    "loop_expression",
                ],
                short_circuits: &["&&", "||"],
                nesting: &[
                    "if_expression",
                    "match_expression",
                    "while_expression",
                    "for_expression",
                    "loop_expression",
                ],
            },
            Self::JavaScript | Self::TypeScript => &JS_KINDS,
            Self::Unknown => &Kinds {
                functions: &[],
                anonymous: &[],
                scopes: &[],
                decisions: &[],
                short_circuits: &[],
                nesting: &[],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_language_from_typical_code() {
        assert_eq!(
            Language::detect("import os\n\ndef main():\n    print(os.name)\n"),
            Language::Python
        );
        assert_eq!(
            Language::detect("use std::io;\n\nfn main() {\n    let mut x = 1;\n}\n"),
            Language::Rust
        );
        assert_eq!(
            Language::detect("const x = require('fs');\nfunction f(a) { return a => a; }\n"),
            Language::JavaScript
        );
        assert_eq!(
            Language::detect("interface A { b: string }\nconst f = (a: number) => a;\n"),
            Language::TypeScript
        );
        assert_eq!(Language::detect("hello world\nthis is prose\n"), Language::Unknown);
        assert_eq!(Language::detect(""), Language::Unknown);
    }

    #[test]
    fn reads_hints_by_name_or_extension() {
        assert_eq!(Language::from_hint("Python"), Some(Language::Python));
        assert_eq!(Language::from_hint("ts"), Some(Language::TypeScript));
        assert_eq!(Language::from_hint(" rs "), Some(Language::Rust));
        assert_eq!(Language::from_hint("cobol"), None);
    }
}
