//! The Python SDK's own suite (`sdk/python/tests`, pytest) run from `cargo test`: builds the
//! wheel with maturin into a virtualenv under the target dir and points pytest at the
//! `serin` binary built for these tests, so the conformance vectors, the golden bucketing
//! file and a real server lifecycle are checked through `import serin`.
//!
//! Needs `python3` with the `venv` module; `SERIN_TEST_SKIP_PYTHON=1` skips the test where
//! there is none. The virtualenv and the wheel's cargo target dir stay under
//! `target/tmp/python-sdk`, so later runs only rebuild what changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{BIN, repo_root};

/// Pinned, so a new release of either cannot change what this test means.
const MATURIN: &str = "maturin==1.9.6";
const PYTEST: &str = "pytest==8.3.4";

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn venv_bin(venv: &Path, tool: &str) -> PathBuf {
    venv.join("bin").join(tool)
}

#[test]
fn python_sdk_passes_its_pytest_suite() {
    if std::env::var_os("SERIN_TEST_SKIP_PYTHON").is_some_and(|v| v == "1") {
        return;
    }
    let python = std::env::var("SERIN_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let found = Command::new(&python).arg("--version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "the Python SDK's tests need {python} with the venv module (SERIN_TEST_SKIP_PYTHON=1 skips them): {found:?}"
    );

    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-sdk");
    let venv = work.join("venv");
    let ready = venv.join(".serin-tools");
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(&format!("{MATURIN} {PYTEST}")) {
        run(
            "python3 -m venv",
            Command::new(&python)
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
        );
        run(
            "pip install maturin pytest",
            Command::new(venv_bin(&venv, "python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                MATURIN,
                PYTEST,
            ]),
        );
        std::fs::write(&ready, format!("{MATURIN} {PYTEST}")).unwrap();
    }

    let sdk = repo_root().join("sdk/python");
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Its own target dir: the workspace's is locked by the `cargo test` running this.
    run(
        "maturin develop --release",
        Command::new(venv_bin(&venv, "maturin"))
            .args(["develop", "--release", "--quiet"])
            .current_dir(&sdk)
            .env("VIRTUAL_ENV", &venv)
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", work.join("target"))
            // The rest of the suite runs beside this build, some of it against deadlines:
            // leave it a core.
            .env("CARGO_BUILD_JOBS", "1"),
    );
    let status = Command::new(venv_bin(&venv, "python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&sdk)
        .env("SERIN_BIN", BIN)
        .env("VIRTUAL_ENV", &venv)
        .env("PATH", &path)
        .env_remove("SERIN_SERVER")
        .env_remove("SERIN_TOKEN")
        .status()
        .expect("run pytest");
    assert!(status.success(), "pytest sdk/python/tests failed: {status}");
}
