use crate::harness::run_cli;

#[test]
fn readiness_init_writes_the_seed_checklist_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readiness.yaml");
    let f = file.to_str().unwrap();
    let out = run_cli(
        &[
            "readiness",
            "init",
            "--template",
            "seed-checklist",
            "--file",
            f,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("30 checks"), "{}", out.stdout);
    let text = std::fs::read_to_string(&file).unwrap();
    serin_core::readiness::Policy::parse_and_validate(&text).unwrap();
    let out = run_cli(&["readiness", "init", "--file", f], &[]);
    assert_eq!(out.code, 2, "no silent overwrite: {out:#?}");
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    let out = run_cli(
        &[
            "readiness",
            "init",
            "--template",
            "nope",
            "--file",
            f,
            "--force",
        ],
        &[],
    );
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("seed-checklist"), "{}", out.stderr);
}
