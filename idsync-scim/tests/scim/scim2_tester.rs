//! scim2-tester 0.5.2 (through scim2-cli's `scim2 test`) against idsync's SCIM server:
//! every check SUCCESS, none SKIPPED, none failing.

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim2_tester_reports_every_check_success() {
    let facts = common::scim2();
    let cli = facts["SCIM2_CLI"].clone();
    let server = common::start(|c| c).await;
    let url = server.base.clone();
    let out = tokio::process::Command::new(&cli)
        .arg("--url")
        .arg(&url)
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", common::TOKEN))
        .arg("test")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {cli}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let verdicts: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with("Performing"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let bad: Vec<&&str> = verdicts
        .iter()
        .filter(|l| !l.starts_with("SUCCESS "))
        .collect();
    assert!(
        bad.is_empty() && !verdicts.is_empty(),
        "scim2-tester: {} checks, {} not SUCCESS:\n{stdout}\nstderr:\n{stderr}",
        verdicts.len(),
        bad.len()
    );
    // The checks that matter are there: creation, PATCH of every attribute, deletion.
    for check in [
        "object_creation",
        "object_replacement",
        "object_deletion",
        "check_add_attribute",
        "check_replace_attribute",
        "check_remove_attribute",
        "search_with_attributes",
    ] {
        assert!(
            verdicts.iter().any(|v| v == &format!("SUCCESS {check}")),
            "no SUCCESS {check} in:\n{stdout}"
        );
    }
}
