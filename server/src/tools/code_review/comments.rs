//! Thinning Python comment blocks before parsing, so that parsing stays linear.
//!
//! tree-sitter-python's indentation scanner decides, at each line end, whether a block
//! ends there by looking ahead past every following comment line to the next line of
//! code. Inside a block of N comment lines it does so at each of them, so it reads N²/2
//! lines: one function of 10,000 `# c` lines took 4.7 s to parse, 40,000 took over a
//! minute. Other languages' grammars have no such look-ahead.
//!
//! What the scanner decides at a comment line depends only on that line's indentation and
//! on the next line of code's, so most lines of a comment block can be blanked without
//! changing the tree, beyond the comment nodes they held. A block open around the comments
//! can only end just before a comment that is less indented than every comment before it
//! in the run (a *new low*), or at the code after the run. So these lines are kept:
//! - the first and the last comment line of the run;
//! - every new low, and the comment line before it (where a block ending there ends).
//!
//! The rest become empty lines, so every line keeps its number. A run then costs the
//! scanner one look-ahead per kept line: a few, however long the run. Lines inside strings
//! are never touched: a small lexer follows string literals line by line.

use std::borrow::Cow;

/// What a line is, to the scanner's look-ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Only a comment, at this indentation (as the scanner counts it).
    Comment(u32),
    /// Only white space.
    Blank,
    /// Code, or text inside a string: the end of a run.
    Other,
}

/// Where the lexer is between two characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Code,
    /// In a string opened by `quote`, three of them when `triple`.
    Text {
        quote: u8,
        triple: bool,
    },
}

/// `code` with the comment lines that cannot change the parse blanked, or `code` itself
/// when there is nothing to blank.
pub fn thin(code: &str) -> Cow<'_, str> {
    let lines: Vec<&str> = code.split_inclusive('\n').collect();
    let kinds = classify(&lines);
    let blank = lines_to_blank(&kinds);
    if !blank.iter().any(|&b| b) {
        return Cow::Borrowed(code);
    }
    let mut thinned = String::with_capacity(code.len());
    for (line, blank) in lines.iter().zip(blank) {
        if blank {
            let body = line.trim_end_matches(['\n', '\r']);
            thinned.push_str(&line[body.len()..]);
        } else {
            thinned.push_str(line);
        }
    }
    Cow::Owned(thinned)
}

/// Each line's kind, reading string literals so that text inside one is never a comment.
fn classify(lines: &[&str]) -> Vec<Line> {
    let mut mode = Mode::Code;
    // The line before ended with `\`: this one continues it.
    let mut continued = false;
    lines
        .iter()
        .map(|line| {
            let kind = match (mode, continued) {
                (Mode::Code, false) => {
                    let body = line.trim_start_matches([' ', '\t', '\x0c']);
                    if body.starts_with('#') {
                        Line::Comment(indentation(&line[..line.len() - body.len()]))
                    } else if body.trim().is_empty() {
                        Line::Blank
                    } else {
                        Line::Other
                    }
                }
                _ => Line::Other,
            };
            (mode, continued) = lex_line(line.as_bytes(), mode);
            kind
        })
        .collect()
}

/// The indentation the scanner counts: a space 1, a tab 8, a form feed starts over.
fn indentation(lead: &str) -> u32 {
    lead.bytes().fold(0, |indent, byte| match byte {
        b' ' => indent + 1,
        b'\t' => indent + 8,
        _ => 0,
    })
}

/// Reads one line from `mode`: the mode at its end, and whether it ends with a `\` that
/// joins it to the next line.
fn lex_line(line: &[u8], mut mode: Mode) -> (Mode, bool) {
    let mut i = 0;
    while i < line.len() {
        match mode {
            Mode::Code => match line[i] {
                b'#' => return (Mode::Code, false),
                quote @ (b'"' | b'\'') => {
                    let triple = line.get(i..i + 3) == Some(&[quote; 3][..]);
                    mode = Mode::Text { quote, triple };
                    i += if triple { 3 } else { 1 };
                }
                b'\\' if line[i + 1..].iter().all(|&b| b == b'\r' || b == b'\n') => return (Mode::Code, true),
                _ => i += 1,
            },
            Mode::Text { quote, triple } => match line[i] {
                // An escape, even one of the line's end (a string continued on the next line).
                b'\\' => i += 2,
                b if b == quote && !triple => {
                    mode = Mode::Code;
                    i += 1;
                }
                b if b == quote && line.get(i..i + 3) == Some(&[quote; 3][..]) => {
                    mode = Mode::Code;
                    i += 3;
                }
                b'\n' if !triple => return (Mode::Code, false),
                _ => i += 1,
            },
        }
    }
    match mode {
        // A one-line string still open at the end of its line: unterminated, unless its
        // last `\` escaped the line's end.
        Mode::Text { triple: false, .. } if i == line.len() && !line.ends_with(b"\\\n") => (Mode::Code, false),
        _ => (mode, false),
    }
}

/// Which lines to blank: in each run of comment (and blank) lines, every comment line but
/// the first, the last, each new low and the line before each new low.
fn lines_to_blank(kinds: &[Line]) -> Vec<bool> {
    let mut blank = vec![false; kinds.len()];
    let mut run: Vec<(usize, u32)> = Vec::new();
    for (index, kind) in kinds.iter().chain([&Line::Other]).enumerate() {
        match *kind {
            Line::Comment(indent) => run.push((index, indent)),
            Line::Blank => {}
            Line::Other => {
                mark_run(&run, &mut blank);
                run.clear();
            }
        }
    }
    blank
}

fn mark_run(run: &[(usize, u32)], blank: &mut [bool]) {
    if run.len() < 3 {
        return;
    }
    let mut keep = vec![false; run.len()];
    keep[0] = true;
    keep[run.len() - 1] = true;
    let mut low = run[0].1;
    for (i, &(_, indent)) in run.iter().enumerate().skip(1) {
        if indent < low {
            low = indent;
            keep[i] = true;
            keep[i - 1] = true;
        }
    }
    for (&(line, _), keep) in run.iter().zip(keep) {
        blank[line] = !keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blanks_the_middle_of_a_comment_block_and_keeps_every_line_number() {
        let code = "def f():\n    x = 1\n    # a\n    # b\n\n    # c\n    # d\n    return x\n";
        let thinned = thin(code);
        assert_eq!(thinned, "def f():\n    x = 1\n    # a\n\n\n\n    # d\n    return x\n");
        assert_eq!(thinned.lines().count(), code.lines().count());
    }

    #[test]
    fn keeps_each_new_low_and_the_line_before_it() {
        let code = "\
def f():
    if x:
        y = 1
        # 8a
        # 8b
        # 8c
    # 4a
    # 4b
        # 8d
    # 4c
# 0a
# 0b
# 0c
g = 1
";
        assert_eq!(
            thin(code),
            "def f():\n    if x:\n        y = 1\n        # 8a\n\n        # 8c\n    # 4a\n\n\n    # 4c\n# 0a\n\n# 0c\ng = 1\n"
        );
    }

    #[test]
    fn leaves_strings_and_short_runs_alone() {
        let code = "s = '''\n# a\n# b\n# c\n# d\n'''\nt = \"# x\" \\\n# e\n# f\n";
        assert_eq!(thin(code), code);
        // The second line is inside a string continued by `\`: not part of the run.
        let escaped = "s = 'a\\\n# b'\n# c\n# d\n# e\n";
        assert_eq!(thin(escaped), "s = 'a\\\n# b'\n# c\n\n# e\n");
        let raw_quotes = "s = '#'  # '''\n# a\n# b\n# c\n";
        assert_eq!(thin(raw_quotes), "s = '#'  # '''\n# a\n\n# c\n");
    }

    #[test]
    fn keeps_windows_line_ends() {
        assert_eq!(thin("# a\r\n# b\r\n# c\r\nx\r\n"), "# a\r\n\r\n# c\r\nx\r\n");
    }

    #[test]
    fn counts_indentation_as_the_scanner_does() {
        assert_eq!(indentation("    "), 4);
        assert_eq!(indentation("\t "), 9);
        assert_eq!(indentation("  \x0c  "), 2);
    }
}
