//! Reads a bundle directory from disk into [`BundleFiles`] for `serin_core::bundle::validate`.
//!
//! The loader reads only what `bundle.yaml` points at: the manifest, the prompt file, the
//! `*.yaml`/`*.yml` files directly inside the examples directory and the `*.json` files directly
//! inside the tools directory, in name order. It never reads more than a file's limit plus one
//! byte, so an oversized file costs almost nothing and validation still reports it as
//! `too_large`.
//!
//! It reports only what validation cannot see from the bytes: a missing or unreadable bundle
//! directory, a declared examples/tools directory that does not exist, a symlink whose target is
//! outside the bundle directory (`path_outside_bundle`), something that is not a regular file
//! (`not_a_file`), and read errors (`io_error`). Missing files, a missing `bundle.yaml`, bad
//! paths in the manifest and everything about the content are left to `validate`, so callers
//! show the loader's problems followed by the validator's without duplicates.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serin_core::bundle::{
    BundleFiles, Limits, MANIFEST_FILE, PartialManifestPaths, Problem, partial_manifest_paths,
};

/// Reads the bundle in `dir`. Never panics; every I/O failure becomes a [`Problem`].
pub fn load(dir: &Path, limits: &Limits) -> (BundleFiles, Vec<Problem>) {
    let mut loader = Loader {
        root: PathBuf::new(),
        limits,
        files: BundleFiles::new(),
        problems: Vec::new(),
        total: 0,
    };
    match fs::canonicalize(dir) {
        Ok(root) if root.is_dir() => loader.root = root,
        Ok(_) => {
            loader.problems.push(Problem::error(
                ".",
                None,
                "not_a_directory",
                format!("{} is not a directory", dir.display()),
            ));
            return (loader.files, loader.problems);
        }
        Err(e) => {
            let (code, what) = if e.kind() == std::io::ErrorKind::NotFound {
                ("missing_file", "does not exist".to_owned())
            } else {
                ("io_error", format!("cannot be read: {e}"))
            };
            loader.problems.push(Problem::error(
                ".",
                None,
                code,
                format!("bundle directory {} {what}", dir.display()),
            ));
            return (loader.files, loader.problems);
        }
    }

    if !loader.read(MANIFEST_FILE, limits.manifest_bytes) {
        return (loader.files, loader.problems);
    }
    let PartialManifestPaths {
        prompt,
        examples,
        tools,
    } = loader
        .files
        .get(MANIFEST_FILE)
        .map(partial_manifest_paths)
        .unwrap_or_default();
    if let Some(prompt) = prompt {
        loader.read(&prompt, limits.prompt_bytes);
    }
    if let Some(examples) = examples {
        loader.read_dir(
            &examples,
            &["yaml", "yml"],
            limits.example_bytes,
            limits.max_examples,
        );
    }
    if let Some(tools) = tools {
        loader.read_dir(&tools, &["json"], limits.tool_bytes, limits.max_tools);
    }
    (loader.files, loader.problems)
}

struct Loader<'l> {
    /// The canonical bundle directory.
    root: PathBuf,
    limits: &'l Limits,
    files: BundleFiles,
    problems: Vec<Problem>,
    /// Bytes read so far.
    total: usize,
}

impl Loader<'_> {
    fn error(&mut self, file: &str, code: &str, message: String) {
        self.problems
            .push(Problem::error(file, None, code, message));
    }

    /// Resolves `rel` (a `/`-separated path inside the bundle) to its canonical path, checking
    /// that it stays inside the bundle directory. `Ok(None)`: it does not exist.
    fn resolve(&mut self, rel: &str) -> Result<Option<PathBuf>, ()> {
        let path = rel
            .split('/')
            .fold(self.root.clone(), |path, segment| path.join(segment));
        match fs::canonicalize(&path) {
            Ok(real) if real.starts_with(&self.root) => Ok(Some(real)),
            Ok(real) => {
                self.error(
                    rel,
                    "path_outside_bundle",
                    format!(
                        "{rel} resolves to {}, outside the bundle directory {}; symlinks must stay inside the bundle",
                        real.display(),
                        self.root.display()
                    ),
                );
                Err(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink is a problem of its own; a missing file is validate's.
                if fs::symlink_metadata(&path).is_ok() {
                    self.error(
                        rel,
                        "missing_file",
                        format!("{rel} is a symlink to a file that does not exist"),
                    );
                    return Err(());
                }
                Ok(None)
            }
            Err(e) => {
                self.error(rel, "io_error", format!("cannot resolve {rel}: {e}"));
                Err(())
            }
        }
    }

    /// Reads at most `limit + 1` bytes of the regular file `rel` and adds it to the files.
    /// Returns whether it was added (false if missing or unreadable).
    fn read(&mut self, rel: &str, limit: usize) -> bool {
        let Ok(Some(real)) = self.resolve(rel) else {
            return false;
        };
        let meta = match fs::metadata(&real) {
            Ok(meta) => meta,
            Err(e) => {
                self.error(rel, "io_error", format!("cannot read {rel}: {e}"));
                return false;
            }
        };
        if !meta.is_file() {
            // Never open it: opening a FIFO would block.
            self.error(
                rel,
                "not_a_file",
                format!("{rel} is not a regular file ({})", describe(&meta)),
            );
            return false;
        }
        let budget = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        let mut bytes = Vec::new();
        let read = fs::File::open(&real).and_then(|f| f.take(budget).read_to_end(&mut bytes));
        if let Err(e) = read {
            self.error(rel, "io_error", format!("cannot read {rel}: {e}"));
            return false;
        }
        self.total = self.total.saturating_add(bytes.len());
        self.files.insert(rel, bytes);
        true
    }

    /// Reads the files directly inside `dir` whose extension is one of `exts`, in name order.
    /// Reads at most `max + 1` of them (enough for validation to report the count as too
    /// large), and stops once the bundle is over its total size limit.
    fn read_dir(&mut self, dir: &str, exts: &[&str], limit: usize, max: usize) {
        let real = match self.resolve(dir) {
            Ok(Some(real)) => real,
            Ok(None) => {
                self.error(
                    dir,
                    "missing_file",
                    format!("the directory {dir}/ named in bundle.yaml does not exist"),
                );
                return;
            }
            Err(()) => return,
        };
        if !real.is_dir() {
            self.error(
                dir,
                "not_a_directory",
                format!("{dir} is named as a directory in bundle.yaml but is not one"),
            );
            return;
        }
        let entries = match fs::read_dir(&real) {
            Ok(entries) => entries,
            Err(e) => {
                self.error(dir, "io_error", format!("cannot list {dir}/: {e}"));
                return;
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    self.error(dir, "io_error", format!("cannot list {dir}/: {e}"));
                    return;
                }
            };
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                self.error(
                    &format!("{dir}/{}", file_name.to_string_lossy()),
                    "not_utf8",
                    "file names in a bundle must be UTF-8".into(),
                );
                continue;
            };
            let matches = Path::new(name)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e));
            if matches && !name.starts_with('.') {
                names.push(name.to_owned());
            }
        }
        names.sort();
        for name in names.into_iter().take(max.saturating_add(1)) {
            if self.total > self.limits.total_bytes {
                break;
            }
            self.read(&format!("{dir}/{name}"), limit);
        }
    }
}

fn describe(meta: &fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a named pipe";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serin_core::bundle::{PinPolicy, ValidateOptions, validate};
    use serin_core::catalog::ModelCatalog;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let path = std::env::temp_dir().join(format!(
                "serin-bundle-dir-{}-{nanos}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sample_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles/support")
    }

    /// A copy of the sample bundle in a temp dir.
    fn sample_copy() -> TempDir {
        let tmp = TempDir::new();
        let (files, problems) = load(&sample_dir(), &Limits::DEFAULT);
        assert_eq!(problems, []);
        for (path, bytes) in files.iter() {
            tmp.write(path, bytes);
        }
        tmp
    }

    fn codes(problems: &[Problem]) -> Vec<(String, String)> {
        problems
            .iter()
            .map(|p| (p.file.clone(), p.code.clone()))
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn loads_the_sample_bundle_and_it_validates() {
        let (files, problems) = load(&sample_dir(), &Limits::DEFAULT);
        assert_eq!(problems, []);
        let paths: Vec<&str> = files.iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "bundle.yaml",
                "examples/locked-account.yaml",
                "examples/stuck-access-request.yaml",
                "prompt.md",
                "tools/create_support_ticket.json",
                "tools/lookup_account.json",
            ]
        );
        let catalog = ModelCatalog::builtin();
        let v = validate(
            &files,
            &ValidateOptions {
                pin_policy: PinPolicy::Strict,
                catalog: &catalog,
                limits: &Limits::DEFAULT,
            },
        );
        assert_eq!(v.problems, []);
        assert!(v.bundle.is_some());
    }

    #[test]
    fn a_missing_directory_is_a_problem_not_a_panic() {
        let tmp = TempDir::new();
        let (files, problems) = load(&tmp.0.join("nope"), &Limits::DEFAULT);
        assert!(files.is_empty());
        assert_eq!(codes(&problems), owned(&[(".", "missing_file")]));
    }

    #[test]
    fn a_missing_manifest_is_left_to_validate() {
        let tmp = TempDir::new();
        let (files, problems) = load(&tmp.0, &Limits::DEFAULT);
        assert!(files.is_empty());
        assert_eq!(problems, []);
    }

    #[test]
    fn a_huge_prompt_is_read_only_up_to_its_limit() {
        let tmp = sample_copy();
        let prompt = fs::File::create(tmp.0.join("prompt.md")).unwrap();
        prompt.set_len(50 * 1024 * 1024).unwrap();
        let (files, problems) = load(&tmp.0, &Limits::DEFAULT);
        assert_eq!(problems, []);
        assert_eq!(
            files.get("prompt.md").map(<[u8]>::len),
            Some(Limits::DEFAULT.prompt_bytes + 1)
        );
        let catalog = ModelCatalog::builtin();
        let v = validate(
            &files,
            &ValidateOptions {
                pin_policy: PinPolicy::Strict,
                catalog: &catalog,
                limits: &Limits::DEFAULT,
            },
        );
        assert_eq!(codes(&v.problems), owned(&[("prompt.md", "too_large")]));
    }

    #[test]
    fn only_matching_files_directly_in_the_declared_dirs_are_read() {
        let tmp = sample_copy();
        tmp.write("tools/README.md", "not a tool");
        tmp.write("tools/nested/deep.json", "{}");
        tmp.write("examples/notes.txt", "x");
        tmp.write("examples/more.yml", "messages: []");
        tmp.write("unrelated.txt", "x");
        let (files, problems) = load(&tmp.0, &Limits::DEFAULT);
        assert_eq!(problems, []);
        assert_eq!(files.len(), 7);
        assert!(files.contains("examples/more.yml"));
    }

    #[test]
    fn a_declared_directory_that_does_not_exist_is_reported() {
        let tmp = sample_copy();
        fs::remove_dir_all(tmp.0.join("examples")).unwrap();
        let (_, problems) = load(&tmp.0, &Limits::DEFAULT);
        assert_eq!(codes(&problems), owned(&[("examples", "missing_file")]));
    }

    #[test]
    fn a_directory_named_as_the_prompt_is_not_a_file() {
        let tmp = sample_copy();
        fs::remove_file(tmp.0.join("prompt.md")).unwrap();
        fs::create_dir(tmp.0.join("prompt.md")).unwrap();
        let (files, problems) = load(&tmp.0, &Limits::DEFAULT);
        assert_eq!(codes(&problems), owned(&[("prompt.md", "not_a_file")]));
        assert!(!files.contains("prompt.md"));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_inside_the_bundle_are_followed_and_outside_ones_rejected() {
        use std::os::unix::fs::symlink;

        let outside = TempDir::new();
        outside.write("secret.json", r#"{"name": "x"}"#);
        outside.write("prompt.md", "stolen");

        let tmp = sample_copy();
        // Inside: fine.
        fs::rename(tmp.0.join("prompt.md"), tmp.0.join("real-prompt.md")).unwrap();
        symlink(tmp.0.join("real-prompt.md"), tmp.0.join("prompt.md")).unwrap();
        // Outside: rejected, by file and by directory.
        symlink(
            outside.0.join("secret.json"),
            tmp.0.join("tools/secret.json"),
        )
        .unwrap();
        fs::remove_dir_all(tmp.0.join("examples")).unwrap();
        symlink(&outside.0, tmp.0.join("examples")).unwrap();

        let (files, problems) = load(&tmp.0, &Limits::DEFAULT);
        assert_eq!(
            codes(&problems),
            owned(&[
                ("examples", "path_outside_bundle"),
                ("tools/secret.json", "path_outside_bundle"),
            ])
        );
        assert!(
            files
                .get("prompt.md")
                .is_some_and(|p| p.starts_with(b"# Role"))
        );
        assert!(!files.contains("tools/secret.json"));
    }
}
