//! Where each value of a JSON text starts, by line, keyed by its JSON pointer: so that
//! the graph editor can mark a problem the API reports at `/nodes/2/config` on the line
//! the person wrote it. One pass over the text, linear in its length.

use std::collections::HashMap;

/// Every value's and key's line (1-based) in `text`, by JSON pointer (`""` for the
/// whole document). A member's line is its key's. Meant for text that parses as JSON;
/// for other text, what was read before the damage.
pub fn value_lines(text: &str) -> HashMap<String, usize> {
    let mut scanner = Scanner {
        bytes: text.as_bytes(),
        text,
        at: 0,
        line: 1,
        lines: HashMap::new(),
    };
    scanner.value(String::new(), 0);
    scanner.lines
}

/// The line to mark for a problem at `pointer`: its value's, or the nearest enclosing
/// one's that the text has (a problem about a missing member marks its object).
pub fn line_of(lines: &HashMap<String, usize>, pointer: &str) -> Option<usize> {
    let mut pointer = pointer;
    loop {
        if let Some(&line) = lines.get(pointer) {
            return Some(line);
        }
        pointer = &pointer[..pointer.rfind('/')?];
    }
}

/// Deeper than this, the rest is not mapped (serde_json refuses such text anyway).
const MAX_DEPTH: usize = 128;

struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
    line: usize,
    lines: HashMap<String, usize>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while let Some(byte) = self.peek() {
            match byte {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => return,
            }
            self.at += 1;
        }
    }

    fn value(&mut self, path: String, depth: usize) {
        self.skip_space();
        self.lines.entry(path.clone()).or_insert(self.line);
        match self.peek() {
            Some(b'{') if depth < MAX_DEPTH => self.object(&path, depth),
            Some(b'[') if depth < MAX_DEPTH => self.array(&path, depth),
            Some(b'"') => {
                self.string();
            }
            Some(_) => self.scalar(),
            None => {}
        }
    }

    fn object(&mut self, path: &str, depth: usize) {
        self.at += 1;
        loop {
            self.skip_space();
            match self.peek() {
                Some(b'}') => {
                    self.at += 1;
                    return;
                }
                Some(b',') => self.at += 1,
                Some(b'"') => {
                    let line = self.line;
                    let key = self.string();
                    let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                    self.lines.entry(child.clone()).or_insert(line);
                    self.skip_space();
                    if self.peek() == Some(b':') {
                        self.at += 1;
                    }
                    self.value(child, depth + 1);
                }
                // Not JSON: stop here.
                _ => {
                    self.at = self.bytes.len();
                    return;
                }
            }
        }
    }

    fn array(&mut self, path: &str, depth: usize) {
        self.at += 1;
        let mut index = 0;
        loop {
            self.skip_space();
            match self.peek() {
                Some(b']') => {
                    self.at += 1;
                    return;
                }
                Some(b',') => self.at += 1,
                Some(_) => {
                    self.value(format!("{path}/{index}"), depth + 1);
                    index += 1;
                }
                None => return,
            }
        }
    }

    /// Reads a string at `"`, unescaped (JSON strings hold no raw line breaks).
    fn string(&mut self) -> String {
        let start = self.at;
        self.at += 1;
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'\\' => self.at += 1,
                b'"' => break,
                _ => {}
            }
        }
        let end = self.at.min(self.bytes.len());
        self.text
            .get(start..end)
            .and_then(|quoted| serde_json::from_str(quoted).ok())
            .unwrap_or_default()
    }

    /// Skips a number, `true`, `false` or `null`.
    fn scalar(&mut self) {
        let start = self.at;
        while let Some(byte) = self.peek() {
            if matches!(byte, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                break;
            }
            self.at += 1;
        }
        if self.at == start {
            // Not a value at all: stop.
            self.at = self.bytes.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{
  "name": "triage",
  "nodes": [
    {"id": "a", "tool": "noop"},
    {
      "id": "b",
      "tool": "teleport",
      "config": {"a/b": [1, 2,
        3]}
    }
  ],
  "edges": {"x~y": null}
}"#;

    #[test]
    fn every_value_is_found_on_its_line_by_its_pointer() {
        let lines = value_lines(SPEC);
        let at = |pointer: &str| lines.get(pointer).copied();
        assert_eq!(at(""), Some(1));
        assert_eq!(at("/name"), Some(2));
        assert_eq!(at("/nodes"), Some(3));
        assert_eq!(at("/nodes/0"), Some(4));
        assert_eq!(at("/nodes/0/tool"), Some(4));
        assert_eq!(at("/nodes/1"), Some(5));
        assert_eq!(at("/nodes/1/tool"), Some(7));
        assert_eq!(at("/nodes/1/config/a~1b"), Some(8));
        assert_eq!(at("/nodes/1/config/a~1b/2"), Some(9));
        assert_eq!(at("/edges/x~0y"), Some(12));
        assert_eq!(at("/nodes/2"), None);
    }

    #[test]
    fn a_pointer_the_text_lacks_marks_its_nearest_enclosing_value() {
        let lines = value_lines(SPEC);
        assert_eq!(line_of(&lines, "/nodes/1/config/prompt"), Some(8));
        assert_eq!(line_of(&lines, "/nodes/1/retry/attempts"), Some(5));
        assert_eq!(line_of(&lines, "/start"), Some(1));
        assert_eq!(line_of(&lines, "/nodes/1/tool"), Some(7));
    }

    #[test]
    fn broken_or_escaped_text_is_read_without_panicking() {
        for text in [
            "",
            "{",
            "{\"a\": [1, {\"b\": ",
            "[}",
            "\"\\\"",
            "{\"k\\\"ey\": 1}",
            "@@",
        ] {
            let _ = value_lines(text);
        }
        assert_eq!(value_lines("{\"k\\\"ey\": 1}").get("/k\"ey"), Some(&1));
    }

    #[test]
    fn a_long_spec_is_mapped_to_its_last_line() {
        // 20,000 nodes on 20,000 lines: found, each on its line.
        let nodes: Vec<String> = (0..20_000).map(|i| format!("{{\"id\": \"n{i}\"}}")).collect();
        let text = format!("{{\"nodes\": [\n{}\n]}}", nodes.join(",\n"));
        let lines = value_lines(&text);
        assert_eq!(lines.get("/nodes/19999/id"), Some(&20_001));
    }
}
