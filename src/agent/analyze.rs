//! Analyze: a map of the repository (files, languages, top-level symbols found by one simple
//! regex per language) and the files most relevant to the issue, ranked by BM25 over each
//! file's path, symbols and contents. No model is involved, so the ranking is repeatable.
//!
//! Lockfiles and generated files ([`is_generated`]) are in the map but never ranked, unless
//! the issue names them: they repeat every dependency's name, so they match many issues, and
//! a change never starts there.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::agent::issue::Issue;
use crate::agent::jail::MAX_FILE_BYTES;

/// How many ranked files are kept and shown to the model.
pub const RANKED_FILES: usize = 12;
/// How many paths the map shows the model before summarizing.
const MAP_PATHS: usize = 400;
/// Bytes of a file's content that are indexed.
const INDEXED_BYTES: usize = 64 * 1024;

/// One file the ranking found relevant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankedFile {
    /// Path relative to the workspace.
    pub path: String,
    /// BM25 score (mentioned files get a bonus).
    pub score: f64,
    /// Its top-level symbols.
    pub symbols: Vec<String>,
}

/// The repository map; kept in the run state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Files in the repository (tracked and untracked, not ignored).
    pub file_count: usize,
    /// Files per language.
    pub languages: BTreeMap<String, usize>,
    /// Paths, sorted (at most a few thousand).
    pub files: Vec<String>,
    /// The most relevant files, best first.
    pub ranked: Vec<RankedFile>,
}

/// Lockfiles, by file name: written by package managers, never by hand.
const LOCKFILES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lockb",
    "poetry.lock",
    "Pipfile.lock",
    "pdm.lock",
    "uv.lock",
    "Gemfile.lock",
    "composer.lock",
    "go.sum",
    "flake.lock",
    "mix.lock",
    "pubspec.lock",
    "Podfile.lock",
    "Package.resolved",
    "packages.lock.json",
    "gradle.lockfile",
];

/// Name endings of files tools generate: minified code, source maps, protobuf and other
/// code generators' output.
const GENERATED_ENDINGS: &[&str] = &[
    ".lock",
    ".min.js",
    ".min.css",
    ".js.map",
    ".css.map",
    ".pb.go",
    "_pb2.py",
    "_pb2_grpc.py",
    ".pb.cc",
    ".pb.h",
    ".g.dart",
    ".freezed.dart",
    ".designer.cs",
    ".snap",
];

/// Whether `path` is a lockfile or a generated file, by its name or, given its first bytes
/// (`head`), by the markers generators write there (`@generated`, Go's `Code generated …
/// DO NOT EDIT.`).
pub fn is_generated(path: &str, head: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    if LOCKFILES.contains(&name) || GENERATED_ENDINGS.iter().any(|e| name.ends_with(e)) {
        return true;
    }
    let head = &head[..head
        .len()
        .min(floor_char_boundary(head, GENERATED_MARKER_BYTES))];
    head.contains("@generated") || head.contains("DO NOT EDIT")
}

/// Bytes at the start of a file where a generator's marker is looked for.
const GENERATED_MARKER_BYTES: usize = 1024;

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The language of a path, by extension or name.
pub fn language(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name == "Makefile" || name == "makefile" {
        return Some("Make");
    }
    if name == "Dockerfile" {
        return Some("Docker");
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "rs" => "Rust",
        "py" => "Python",
        "js" | "mjs" | "cjs" | "jsx" => "JavaScript",
        "ts" | "tsx" | "mts" | "cts" => "TypeScript",
        "go" => "Go",
        "java" => "Java",
        "kt" | "kts" => "Kotlin",
        "c" | "h" => "C",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" => "C++",
        "cs" => "C#",
        "rb" => "Ruby",
        "php" => "PHP",
        "sh" | "bash" => "Shell",
        "swift" => "Swift",
        "scala" => "Scala",
        "ex" | "exs" => "Elixir",
        "lua" => "Lua",
        "md" => "Markdown",
        "toml" => "TOML",
        "json" => "JSON",
        "yaml" | "yml" => "YAML",
        "html" => "HTML",
        "css" | "scss" => "CSS",
        "sql" => "SQL",
        _ => return None,
    })
}

static SYMBOLS: LazyLock<HashMap<&'static str, Regex>> = LazyLock::new(|| {
    let table: &[(&str, &str)] = &[
        (
            "Rust",
            r"(?m)^(?:pub(?:\([^)]*\))?\s+)?(?:(?:async|unsafe|const|extern)\s+)*(?:fn|struct|enum|trait|type|mod|union|static|const|macro_rules!)\s+([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            "Python",
            r"(?m)^(?:async\s+)?(?:def|class)\s+([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            "JavaScript",
            r"(?m)^(?:export\s+)?(?:default\s+)?(?:async\s+)?(?:function\*?|class|const|let|var)\s+([A-Za-z_$][A-Za-z0-9_$]*)",
        ),
        (
            "TypeScript",
            r"(?m)^(?:export\s+)?(?:default\s+)?(?:declare\s+)?(?:abstract\s+)?(?:async\s+)?(?:function\*?|class|const|let|var|interface|type|enum|namespace)\s+([A-Za-z_$][A-Za-z0-9_$]*)",
        ),
        (
            "Go",
            r"(?m)^(?:func(?:\s*\([^)]*\))?|type|var|const)\s+([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            "Java",
            r"(?m)^\s{0,4}(?:(?:public|protected|private|static|final|abstract|sealed)\s+)*(?:class|interface|enum|record|@interface)\s+([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            "Kotlin",
            r"(?m)^(?:(?:public|internal|private|data|sealed|abstract|open|inline|suspend)\s+)*(?:class|interface|object|fun|val|var)\s+([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            "C#",
            r"(?m)^\s{0,4}(?:(?:public|internal|private|protected|static|sealed|abstract|partial)\s+)*(?:class|interface|enum|struct|record)\s+([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            "C",
            r"(?m)^(?:static\s+|inline\s+|extern\s+)*(?:struct\s+|enum\s+|unsigned\s+|const\s+)*[A-Za-z_][A-Za-z0-9_]*[\s*]+([A-Za-z_][A-Za-z0-9_]*)\s*\([^;]*$",
        ),
        (
            "C++",
            r"(?m)^(?:class|struct|namespace|enum(?:\s+class)?)\s+([A-Za-z_][A-Za-z0-9_]*)|^(?:static\s+|inline\s+)*[A-Za-z_][A-Za-z0-9_:<>]*[\s*&]+([A-Za-z_][A-Za-z0-9_:]*)\s*\([^;]*$",
        ),
        (
            "Ruby",
            r"(?m)^\s{0,2}(?:def|class|module)\s+([A-Za-z_][A-Za-z0-9_.:?!]*)",
        ),
        (
            "PHP",
            r"(?m)^(?:(?:abstract|final)\s+)?(?:function|class|interface|trait)\s+([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            "Shell",
            r"(?m)^(?:function\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*\(\)",
        ),
        (
            "Swift",
            r"(?m)^(?:public\s+|open\s+|final\s+)*(?:func|class|struct|enum|protocol|extension)\s+([A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            "Elixir",
            r"(?m)^\s*(?:defmodule|def|defp)\s+([A-Za-z_][A-Za-z0-9_.?!]*)",
        ),
        (
            "Lua",
            r"(?m)^(?:local\s+)?function\s+([A-Za-z_][A-Za-z0-9_.:]*)",
        ),
        ("Markdown", r"(?m)^#{1,3}\s+(.+?)\s*$"),
    ];
    table
        .iter()
        .map(|(l, r)| (*l, Regex::new(r).expect("symbol regex")))
        .collect()
});

/// Top-level symbols of a file's text, in order, once each.
pub fn symbols(language: &str, text: &str) -> Vec<String> {
    let Some(re) = SYMBOLS.get(language) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for cap in re.captures_iter(text) {
        if let Some(m) = cap.iter().skip(1).flatten().next() {
            let s = m.as_str().to_string();
            if !out.contains(&s) && out.len() < 200 {
                out.push(s);
            }
        }
    }
    out
}

/// Lowercase words of `text`: split on non-alphanumerics and camelCase, stop words dropped.
pub fn tokens(text: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "the", "and", "for", "with", "that", "this", "from", "are", "was", "not", "but", "have",
        "has", "you", "your", "its", "into", "when", "then", "than", "there", "which", "should",
        "would", "could", "will", "can", "also", "all", "any", "our", "use", "used", "using",
        "get", "set", "new", "let", "pub", "fn", "self",
    ];
    let mut out = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        let mut start = 0;
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        for i in 1..=chars.len() {
            let boundary =
                i == chars.len() || (chars[i].1.is_uppercase() && chars[i - 1].1.is_lowercase());
            if boundary {
                let end = if i == chars.len() {
                    word.len()
                } else {
                    chars[i].0
                };
                let part = word[start..end].to_lowercase();
                if part.len() >= 2
                    && !STOP.contains(&part.as_str())
                    && !part.chars().all(|c| c.is_ascii_digit())
                {
                    out.push(part);
                }
                start = end;
            }
        }
    }
    out
}

/// Lists the repository's files: `git ls-files` (tracked, plus untracked not ignored), or a
/// walk that skips `.git` and hidden directories when the workspace is not a git repository.
pub async fn list_files(root: &Path) -> Vec<String> {
    if let Ok(out) = crate::agent::process::git(
        root,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    )
    .await
    {
        let mut files: Vec<String> = out
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        files.sort();
        files.dedup();
        return files;
    }
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() && !name.starts_with('.') && name != "target" && name != "node_modules" {
                stack.push(entry.path());
            } else if ft.is_file() {
                if let Ok(rel) = entry.path().strip_prefix(root) {
                    files.push(rel.to_string_lossy().into_owned());
                }
            }
            if files.len() > 100_000 {
                break;
            }
        }
    }
    files.sort();
    files
}

struct Doc {
    path: String,
    /// A lockfile or generated file: not ranked unless the issue names it.
    generated: bool,
    symbols: Vec<String>,
    terms: HashMap<String, u32>,
    len: u32,
}

/// Builds the map and ranks files against the issue.
pub async fn analyze(root: &Path, issue: &Issue) -> Analysis {
    let files = list_files(root).await;
    let root = root.to_path_buf();
    let issue = issue.clone();
    tokio::task::spawn_blocking(move || analyze_files(&root, &issue, files))
        .await
        .unwrap_or_default()
}

fn analyze_files(root: &Path, issue: &Issue, files: Vec<String>) -> Analysis {
    let mut languages = BTreeMap::new();
    let mut docs = Vec::with_capacity(files.len());
    for path in &files {
        let lang = language(path);
        if let Some(l) = lang {
            *languages.entry(l.to_string()).or_insert(0) += 1;
        }
        let abs = root.join(path);
        let content = match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_file() && m.nlink() == 1 && m.len() <= MAX_FILE_BYTES => {
                std::fs::read(&abs).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let text = if content.contains(&0) {
            String::new()
        } else {
            let cut = content.len().min(INDEXED_BYTES);
            String::from_utf8_lossy(&content[..cut]).into_owned()
        };
        let syms = lang.map(|l| symbols(l, &text)).unwrap_or_default();
        let mut terms: HashMap<String, u32> = HashMap::new();
        let mut len = 0u32;
        // Path and symbol words count more than body words: they say what a file is about.
        for (weight, words) in [
            (3, tokens(path)),
            (2, tokens(&syms.join(" "))),
            (1, tokens(&text)),
        ] {
            for w in words {
                *terms.entry(w).or_insert(0) += weight;
                len += weight;
            }
        }
        docs.push(Doc {
            generated: is_generated(path, &text),
            path: path.clone(),
            symbols: syms,
            terms,
            len,
        });
    }

    let query_text = format!(
        "{} {} {} {}",
        issue.title,
        issue.title, // the title says most in fewest words
        issue.body,
        issue.mentioned_files.join(" ")
    );
    let mut query: Vec<String> = tokens(&query_text);
    query.sort();
    query.dedup();
    let n = docs.len().max(1) as f64;
    let avg_len = docs.iter().map(|d| d.len as f64).sum::<f64>() / n;
    let (k1, b) = (1.2, 0.75);
    let df: HashMap<&str, usize> = query
        .iter()
        .map(|q| {
            (
                q.as_str(),
                docs.iter().filter(|d| d.terms.contains_key(q)).count(),
            )
        })
        .collect();
    let mut ranked: Vec<RankedFile> = docs
        .into_iter()
        .filter_map(|d| {
            let mut score = 0.0;
            for q in &query {
                let Some(&tf) = d.terms.get(q) else { continue };
                let df = df[q.as_str()] as f64;
                let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                let tf = tf as f64;
                score += idf * tf * (k1 + 1.0)
                    / (tf + k1 * (1.0 - b + b * d.len as f64 / avg_len.max(1.0)));
            }
            let mentioned = issue
                .mentioned_files
                .iter()
                .any(|m| d.path == *m || d.path.ends_with(&format!("/{m}")));
            if mentioned {
                score += 10.0;
            } else if d.generated {
                return None;
            }
            (score > 0.0).then(|| RankedFile {
                path: d.path,
                score: (score * 1000.0).round() / 1000.0,
                symbols: d.symbols.into_iter().take(30).collect(),
            })
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.path.cmp(&b.path))
    });
    ranked.truncate(RANKED_FILES);
    Analysis {
        file_count: files.len(),
        languages,
        files: files.into_iter().take(5000).collect(),
        ranked,
    }
}

impl Analysis {
    /// The map as text for the model: languages, paths, and the ranked files with symbols.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let langs: Vec<String> = self
            .languages
            .iter()
            .map(|(l, n)| format!("{l} ({n})"))
            .collect();
        out.push_str(&format!(
            "{} files; languages: {}\n\nFiles:\n",
            self.file_count,
            langs.join(", ")
        ));
        for path in self.files.iter().take(MAP_PATHS) {
            out.push_str(path);
            out.push('\n');
        }
        if self.files.len() > MAP_PATHS {
            out.push_str(&format!(
                "... and {} more (use list_dir)\n",
                self.file_count - MAP_PATHS
            ));
        }
        out.push_str("\nMost relevant files (BM25 over paths, symbols and contents):\n");
        for f in &self.ranked {
            out.push_str(&format!("- {} (score {:.2})", f.path, f.score));
            if !f.symbols.is_empty() {
                out.push_str(&format!(": {}", f.symbols.join(", ")));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_per_language() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("Rust", "pub fn parse() {}\nstruct Lexer;\n    fn inner() {}\npub(crate) async fn go() {}\n", &["parse", "Lexer", "go"]),
            ("Python", "def main():\n    def inner(): pass\nclass Foo:\n", &["main", "Foo"]),
            ("TypeScript", "export interface Props {}\nexport default function App() {}\n", &["Props", "App"]),
            ("Go", "func (s *Server) Start() {}\ntype Config struct {}\n", &["Start", "Config"]),
            ("Shell", "build() {\n}\n", &["build"]),
        ];
        for (lang, text, expected) in cases {
            assert_eq!(symbols(lang, text), *expected, "{lang}");
        }
    }

    #[test]
    fn lockfiles_and_generated_files_are_known() {
        let cases: &[(&str, &str, bool)] = &[
            ("Cargo.lock", "", true),
            ("web/package-lock.json", "{}", true),
            ("yarn.lock", "", true),
            ("poetry.lock", "", true),
            ("deps/some.lock", "", true),
            ("static/app.min.js", "", true),
            ("api/service.pb.go", "", true),
            ("src/schema.rs", "// @generated by diesel\n", true),
            (
                "gen/api.go",
                "// Code generated by protoc. DO NOT EDIT.\n",
                true,
            ),
            ("src/lib.rs", "pub fn lock() {}\n", false),
            ("Cargo.toml", "[package]\n", false),
            ("src/locking.rs", "", false),
        ];
        for (path, head, generated) in cases {
            assert_eq!(is_generated(path, head), *generated, "{path}");
        }
    }

    #[test]
    fn lockfiles_are_not_ranked_unless_the_issue_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/mean.rs"), "pub fn mean() {}\n").unwrap();
        std::fs::write(
            root.join("Cargo.lock"),
            "# This file is automatically @generated by Cargo.\n[[package]]\nname = \"mean\"\n",
        )
        .unwrap();
        let files = vec!["Cargo.lock".to_string(), "src/mean.rs".to_string()];
        let issue = |body: &str| {
            Issue::parse(&crate::agent::issue::IssueInput {
                title: "mean is wrong".into(),
                body: body.into(),
                ..Default::default()
            })
        };
        let ranked = |issue: &Issue| -> Vec<String> {
            analyze_files(root, issue, files.clone())
                .ranked
                .into_iter()
                .map(|f| f.path)
                .collect()
        };
        assert_eq!(ranked(&issue("the mean package")), vec!["src/mean.rs"]);
        assert!(ranked(&issue("see Cargo.lock")).contains(&"Cargo.lock".to_string()));
        assert_eq!(analyze_files(root, &issue(""), files.clone()).file_count, 2);
    }

    #[test]
    fn tokens_split_camel_case_and_paths() {
        assert_eq!(
            tokens("src/httpServer.rs parseConfig"),
            vec!["src", "http", "server", "rs", "parse", "config"]
        );
    }
}
