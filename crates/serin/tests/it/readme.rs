//! The README's tour runs as written, against a real server on a fresh store.
//!
//! Every ` ```console ` block of README.md is executed in order, each `$ `
//! line through `sh -c` in a scratch directory holding a copy of `examples/`,
//! with the freshly built `serin` first on `PATH` and `SERIN_SERVER` /
//! `SERIN_TOKEN` pointing at a server this test started. The lines under a
//! command are what it must print, in order (other lines may come between);
//! `…` stands for any text; a line `(exit N)` says the command must exit N
//! (0 otherwise). Two commands are the reader's part and are skipped: starting
//! the server (`cargo run … server`, this test does that) and exporting the
//! token it printed. So a README that drifts from the binary fails here.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{Backend, Server, copy_dir, repo_root};

#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    expect: Vec<String>,
    exit: i32,
}

fn steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut skipping = false;
    for (i, raw) in readme.lines().enumerate() {
        let line = raw.trim_end();
        if let Some(info) = line.strip_prefix("```") {
            in_console = !in_console && info.trim() == "console";
            skipping = false;
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            skipping = cmd.starts_with("cargo run") && cmd.contains(" server")
                || cmd.starts_with("export SERIN_TOKEN=")
                || cmd.starts_with("cargo install");
            if !skipping {
                steps.push(Step {
                    line: i + 1,
                    command: cmd.to_owned(),
                    expect: Vec::new(),
                    exit: 0,
                });
            }
        } else if skipping || line.trim().is_empty() {
            continue;
        } else if let Some(step) = steps.last_mut() {
            let t = line.trim();
            match t
                .strip_prefix("(exit ")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|n| n.parse().ok())
            {
                Some(code) => step.exit = code,
                None => step.expect.push(t.to_owned()),
            }
        }
    }
    steps
}

/// Whether `got` holds every expected line, in order; `…` matches any text.
fn matches_in_order(expect: &[String], got: &str) -> Result<(), String> {
    let mut lines = got.lines();
    'want: for want in expect {
        let parts: Vec<&str> = want.split('…').collect();
        for have in lines.by_ref() {
            if line_matches(&parts, have.trim()) {
                continue 'want;
            }
        }
        return Err(format!("missing line: {want}"));
    }
    Ok(())
}

fn line_matches(parts: &[&str], have: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return have.is_empty();
    };
    let Some(mut tail) = have.strip_prefix(first) else {
        return false;
    };
    for (k, part) in rest.iter().enumerate() {
        if k + 1 == rest.len() {
            return tail.ends_with(part);
        }
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.is_empty()
}

#[test]
fn the_matcher_takes_ellipses_order_and_extra_lines() {
    let e = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(
        matches_in_order(
            &e(&["ok: support sha256:… (0 warnings)"]),
            "x\nok: support sha256:ab12 (0 warnings)\n"
        )
        .is_ok()
    );
    assert!(matches_in_order(&e(&["a", "b"]), "a\nzz\nb").is_ok());
    assert!(matches_in_order(&e(&["b", "a"]), "a\nb").is_err());
    assert!(matches_in_order(&e(&["ok: …"]), "not ok: x").is_err());
    assert!(
        matches_in_order(
            &e(&["pushed support@1 (…)"]),
            "pushed support@1 (sha256:1) extra"
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_runs_as_written_on_a_fresh_store() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() >= 20, "the tour lost its commands: {steps:#?}");

    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    copy_dir(
        &repo_root().join("examples"),
        &scratch.path().join("examples"),
    );
    let bin_dir = Path::new(crate::harness::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    for step in &steps {
        let out = Command::new("sh")
            .args(["-c", &step.command])
            .current_dir(scratch.path())
            .env("PATH", &path)
            .env("SERIN_SERVER", &server.url)
            .env("SERIN_TOKEN", &admin)
            .env_remove("SERIN_MODEL_CATALOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let code = out.status.code().unwrap_or(-1);
        assert_eq!(
            code, step.exit,
            "README.md:{} `{}` exited {code}, the README says {}:\n{printed}",
            step.line, step.command, step.exit
        );
        if let Err(why) = matches_in_order(&step.expect, &printed) {
            panic!(
                "README.md:{} `{}`: {why}\nit printed:\n{printed}",
                step.line, step.command
            );
        }
    }
}
