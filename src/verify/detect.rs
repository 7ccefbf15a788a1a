//! Detection: which commands a repository's own files say run its tests, lint and type checks.
//!
//! Defaults: tests and types are critical, lint is not (a style nit should not block a fix).
//! A Makefile `test`/`lint` target replaces the language's command of that kind: it is the
//! maintainers' chosen entry point. Reads files only; runs nothing.

use std::path::Path;

use super::{CheckSpec, Kind};

fn spec(kind: Kind, command: &str) -> CheckSpec {
    CheckSpec {
        kind,
        command: command.to_string(),
        critical: kind != Kind::Lint,
        timeout: None,
    }
}

/// The checks for the repository at `root`, tests first, then lint, then types.
pub(crate) fn detect(root: &Path) -> Vec<CheckSpec> {
    let mut out = Vec::new();
    rust(root, &mut out);
    node(root, &mut out);
    python(root, &mut out);
    go(root, &mut out);
    makefile(root, &mut out);
    out.sort_by_key(|s| s.kind);
    out
}

fn read(root: &Path, name: &str) -> Option<String> {
    crate::sandbox::tree::read_regular(&root.join(name), crate::sandbox::tree::MAX_MANIFEST_BYTES)
        .ok()
}

fn rust(root: &Path, out: &mut Vec<CheckSpec>) {
    if root.join("Cargo.toml").is_file() {
        out.push(spec(Kind::Tests, "cargo test --color never"));
        out.push(spec(
            Kind::Lint,
            "cargo clippy --all-targets --color never -- -D warnings",
        ));
        out.push(spec(Kind::Types, "cargo check --all-targets --color never"));
    }
}

/// The default `test` script `npm init` writes, which only fails.
const NPM_PLACEHOLDER_TEST: &str = "no test specified";

fn node(root: &Path, out: &mut Vec<CheckSpec>) {
    let Some(text) = read(root, "package.json") else {
        return;
    };
    let pkg: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let scripts = pkg.get("scripts").and_then(|s| s.as_object());
    let has = |name: &str| {
        scripts
            .and_then(|s| s.get(name))
            .and_then(|v| v.as_str())
            .is_some_and(|v| !v.contains(NPM_PLACEHOLDER_TEST))
    };
    let (run, exec) = if root.join("pnpm-lock.yaml").is_file() {
        ("pnpm run", "pnpm exec")
    } else if root.join("yarn.lock").is_file() {
        ("yarn run", "yarn exec")
    } else {
        ("npm run --silent", "npx --no-install")
    };
    if has("test") {
        out.push(spec(Kind::Tests, &format!("{run} test")));
    }
    if has("lint") {
        out.push(spec(Kind::Lint, &format!("{run} lint")));
    }
    if has("typecheck") {
        out.push(spec(Kind::Types, &format!("{run} typecheck")));
    } else if root.join("tsconfig.json").is_file() {
        out.push(spec(Kind::Types, &format!("{exec} tsc --noEmit")));
    }
}

fn python(root: &Path, out: &mut Vec<CheckSpec>) {
    let pyproject = read(root, "pyproject.toml").unwrap_or_default();
    let setup_cfg = read(root, "setup.cfg").unwrap_or_default();
    let tox = read(root, "tox.ini").unwrap_or_default();
    let pytest_configured = root.join("pytest.ini").is_file()
        || root.join("conftest.py").is_file()
        || pyproject.contains("[tool.pytest")
        || setup_cfg.contains("[tool:pytest]")
        || tox.contains("[pytest]");
    let has_tests = ["tests", "test"].iter().any(|d| root.join(d).is_dir())
        || std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".py") && (n.starts_with("test_") || n.ends_with("_test.py"))
            });
    let is_python = !pyproject.is_empty()
        || root.join("setup.py").is_file()
        || !setup_cfg.is_empty()
        || root.join("requirements.txt").is_file();
    if pytest_configured || (is_python && has_tests) {
        out.push(spec(Kind::Tests, "pytest"));
    }
    if pyproject.contains("[tool.ruff")
        || root.join("ruff.toml").is_file()
        || root.join(".ruff.toml").is_file()
    {
        out.push(spec(Kind::Lint, "ruff check ."));
    } else if root.join(".flake8").is_file()
        || setup_cfg.contains("[flake8]")
        || tox.contains("[flake8]")
    {
        out.push(spec(Kind::Lint, "flake8"));
    }
    if pyproject.contains("[tool.mypy")
        || root.join("mypy.ini").is_file()
        || setup_cfg.contains("[mypy]")
    {
        out.push(spec(Kind::Types, "mypy ."));
    }
}

fn go(root: &Path, out: &mut Vec<CheckSpec>) {
    if root.join("go.mod").is_file() {
        // -v: go test names each test only in verbose mode, and the counts come from those lines.
        out.push(spec(Kind::Tests, "go test -v ./..."));
        out.push(spec(Kind::Lint, "go vet ./..."));
    }
}

fn makefile(root: &Path, out: &mut Vec<CheckSpec>) {
    let Some(text) = ["GNUmakefile", "makefile", "Makefile"]
        .iter()
        .find_map(|n| read(root, n))
    else {
        return;
    };
    for (target, kind) in [("test", Kind::Tests), ("lint", Kind::Lint)] {
        let defined = text.lines().any(|l| {
            l.split_once(':').is_some_and(|(names, rest)| {
                !rest.starts_with('=') && names.split_whitespace().any(|n| n == target)
            })
        });
        if defined {
            out.retain(|s| s.kind != kind);
            out.push(spec(kind, &format!("make {target}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(files: &[(&str, &str)], expected: &[(&str, &str)]) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let got: Vec<(String, String)> = detect(dir.path())
            .into_iter()
            .map(|s| (s.kind.as_str().to_string(), s.command))
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, c)| (k.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, expected, "{files:?}");
    }

    #[test]
    fn detects_each_ecosystem() {
        check(
            &[("Cargo.toml", "[package]")],
            &[
                ("tests", "cargo test --color never"),
                (
                    "lint",
                    "cargo clippy --all-targets --color never -- -D warnings",
                ),
                ("types", "cargo check --all-targets --color never"),
            ],
        );
        check(
            &[(
                "package.json",
                r#"{"scripts":{"test":"node --test","lint":"eslint ."}}"#,
            )],
            &[
                ("tests", "npm run --silent test"),
                ("lint", "npm run --silent lint"),
            ],
        );
        check(
            &[
                (
                    "package.json",
                    r#"{"scripts":{"test":"jest","typecheck":"tsc"}}"#,
                ),
                ("pnpm-lock.yaml", ""),
            ],
            &[("tests", "pnpm run test"), ("types", "pnpm run typecheck")],
        );
        check(
            &[
                (
                    "package.json",
                    r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1"}}"#,
                ),
                ("yarn.lock", ""),
                ("tsconfig.json", "{}"),
            ],
            &[("types", "yarn exec tsc --noEmit")],
        );
        check(
            &[
                ("pyproject.toml", "[tool.ruff]\n[tool.mypy]\n"),
                ("tests/test_a.py", ""),
            ],
            &[
                ("tests", "pytest"),
                ("lint", "ruff check ."),
                ("types", "mypy ."),
            ],
        );
        check(
            &[("setup.cfg", "[flake8]\n"), ("test_x.py", "")],
            &[("tests", "pytest"), ("lint", "flake8")],
        );
        check(&[("pytest.ini", "")], &[("tests", "pytest")]);
        check(&[("pyproject.toml", "[project]\n")], &[]);
        check(
            &[("go.mod", "module x")],
            &[("tests", "go test -v ./..."), ("lint", "go vet ./...")],
        );
        check(
            &[
                ("go.mod", "module x"),
                ("Makefile", "VAR := 1\ntest: build\n\tgo test ./...\n"),
            ],
            &[("tests", "make test"), ("lint", "go vet ./...")],
        );
        check(
            &[("Makefile", "all:\n\ttrue\nlint check:\n\ttrue\n")],
            &[("lint", "make lint")],
        );
        check(&[("README.md", "hi")], &[]);
    }
}
