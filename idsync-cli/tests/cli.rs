//! The real `idsync` binary, run in temporary folders.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn idsync_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idsync"));
    cmd.current_dir(dir)
        .args(args)
        .env_remove("IDSYNC_CONFIG")
        .env_remove("IDSYNC_LOG")
        .env_remove("DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = cmd.output().expect("run idsync");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn idsync(dir: &Path, args: &[&str]) -> Run {
    idsync_env(dir, args, &[])
}

#[track_caller]
fn ok(r: &Run) {
    assert_eq!(r.code, 0, "exit code\n{}", r.all());
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The run id printed after "run " in a `run` / `approve` summary line.
fn run_id(stdout: &str, marker: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no line with {marker:?} in\n{stdout}"));
    let after = &line[line.find(marker).unwrap() + marker.len()..];
    after
        .split(|c: char| c.is_whitespace() || c == ':')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn init_check_plan_run_rerun_runs_show_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let r = idsync(d, &["init"]);
    ok(&r);
    assert!(d.join("idsync.toml").exists());
    // init does not overwrite
    let r = idsync(d, &["init"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("--force"), "{}", r.all());

    let r = idsync(d, &["check"]);
    ok(&r);
    assert!(r.stdout.contains("provider hr: ok"), "{}", r.all());
    assert!(
        r.stdout.contains("store sqlite idsync.db: ok"),
        "{}",
        r.all()
    );

    let r = idsync(d, &["plan", "sample"]);
    ok(&r);
    assert!(r.stdout.contains("create_account    200"), "{}", r.all());
    assert!(r.stdout.contains("create_org         20"), "{}", r.all());
    assert!(r.stdout.contains("guard: passes"), "{}", r.all());

    let r = idsync(d, &["plan", "sample", "--json"]);
    ok(&r);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["ops"].as_array().unwrap().len(), 220);
    assert_eq!(plan["job"], "sample");

    let r = idsync(d, &["run", "sample"]);
    ok(&r);
    assert!(r.stdout.contains("applied 220, failed 0"), "{}", r.all());
    assert!(
        !r.stderr.contains("applying"),
        "no progress bars when stdout is not a terminal\n{}",
        r.all()
    );
    assert!(
        d.join("idsync.db").exists(),
        "the hub is in the working folder"
    );
    let first = run_id(&r.stdout, "run ");

    let r = idsync(d, &["run", "sample"]);
    ok(&r);
    assert!(r.stdout.contains("nothing to do"), "{}", r.all());
    assert!(r.stdout.contains("applied 0, failed 0"), "{}", r.all());

    let r = idsync(d, &["plan", "sample", "--json"]);
    ok(&r);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["ops"].as_array().unwrap().len(), 0);

    let r = idsync(d, &["runs"]);
    ok(&r);
    assert!(r.stdout.contains(&first), "{}", r.all());
    assert!(r.stdout.contains("applied 220/220"), "{}", r.all());
    let r = idsync(d, &["runs", "--json", "--job", "sample"]);
    ok(&r);
    let runs: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(runs.len(), 5, "three plans, two runs\n{}", r.stdout);
    assert!(runs.iter().any(|r| r["status"] == "succeeded"));

    let r = idsync(d, &["show", "account", "u0002"]);
    ok(&r);
    assert!(r.stdout.contains("carlos.chen@example.com"), "{}", r.all());
    assert!(r.stdout.contains("create_account"), "{}", r.all());
    assert!(
        r.stdout.contains(&first),
        "audit names the run\n{}",
        r.all()
    );
    let r = idsync(d, &["show", "org", "d000", "--json"]);
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["record"]["name"], "Acme Corp");
    assert_eq!(v["audit"][0]["op"], "create_org");
    let r = idsync(d, &["show", "account", "nobody"]);
    assert_eq!(r.code, 1, "{}", r.all());

    let r = idsync(d, &["export"]);
    ok(&r);
    let mut rdr = csv::Reader::from_reader(r.stdout.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 200);
    assert_eq!(&rdr.headers().unwrap()[1], "username");
    assert_eq!(&rows[1][1], "carlos.chen");

    let r = idsync(
        d,
        &[
            "export",
            "--what",
            "orgs",
            "--format",
            "json",
            "-o",
            "orgs.json",
        ],
    );
    ok(&r);
    let orgs: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(d.join("orgs.json")).unwrap()).unwrap();
    assert_eq!(orgs.len(), 20);
    assert_eq!(orgs[1]["parent"], "d000");
}

#[test]
fn typos_and_bad_references_report_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "idsync.toml",
        "store = { memory = true }\n\n[providers.hr]\ntype = \"memory\"\n\n[jobs.j]\nsource = \"hr\"\nsink = \"hub\"\nconcurency = 4\n",
    );
    for args in [&["check"][..], &["plan", "j"], &["run", "j"]] {
        let r = idsync(d, args);
        assert_eq!(r.code, 2, "{args:?}\n{}", r.all());
        assert!(r.stderr.contains("idsync.toml:9:1"), "{}", r.all());
        assert!(r.stderr.contains("concurency"), "{}", r.all());
    }

    // an unknown key in a provider table points at the key, not the table
    write(
        d,
        "idsync.toml",
        "[providers.hr]\ntype = \"memory\"\ngenerate = { orgs = 2, acounts = 3 }\n",
    );
    let r = idsync(d, &["check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("idsync.toml:3:24"), "{}", r.all());

    // an unknown provider type
    write(d, "idsync.toml", "[providers.hr]\ntype = \"memroy\"\n");
    let r = idsync(d, &["check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("idsync.toml:2:8"), "{}", r.all());

    // every semantic error at once, each with its position
    write(
        d,
        "idsync.toml",
        r#"[providers.hr]
type = "memory"

[jobs.j]
source = "hr"
sink = "hbu"
correlation = ["email", "shoe_size"]
mapping.accounts.rules = [
  { to = "email", template = "{username@example.com" },
]
"#,
    );
    let r = idsync(d, &["check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("idsync.toml:6:8"), "{}", r.all());
    assert!(
        r.stderr.contains("\"hbu\" is not a provider"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("idsync.toml:7:15"), "{}", r.all());
    assert!(r.stderr.contains("idsync.toml:9:3"), "{}", r.all());

    // a job that does not exist
    write(d, "idsync.toml", "[providers.hr]\ntype = \"memory\"\n");
    let r = idsync(d, &["plan", "nope"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("no job named \"nope\""), "{}", r.all());
}

/// The `review:` line of a guard stop's output saved in `path`.
fn r_stop_review(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("review:"))
        .unwrap_or_default()
        .to_owned()
}

fn guarded_config(accounts: usize) -> String {
    format!(
        r#"[providers.hr]
type = "memory"
generate = {{ orgs = 20, accounts = {accounts} }}

[jobs.people]
source = "hr"
sink = "hub"
"#
    )
}

#[test]
fn guard_stops_with_exit_3_and_approve_applies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "idsync.toml", &guarded_config(200));
    ok(&idsync(d, &["run", "people"]));

    // Half the people left: 100 disables cross the default guard (5%).
    write(d, "idsync.toml", &guarded_config(100));
    let r = idsync(d, &["run", "people"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("STOPPED"), "{}", r.all());
    std::fs::write(d.join("stop.txt"), &r.stdout).unwrap();
    assert!(!r.stdout.contains("idsync plan"), "{}", r.all());
    let id = run_id(&r.stdout, "idsync approve ");
    assert!(id.starts_with("people-"), "{id}");

    // Nothing was applied.
    let r = idsync(d, &["show", "account", "u0150", "--json"]);
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["record"]["status"], "active");
    let r = idsync(d, &["runs"]);
    assert!(r.stdout.contains("needs_approval"), "{}", r.all());

    // The review hint points at the stored plan of that run, not at a new plan: with the
    // source back to 200 people a new plan would be empty, the stored one still holds the
    // 100 disables that approve applies.
    assert!(
        r_stop_review(&d.join("stop.txt")).contains(&format!("idsync show run {id}")),
        "{}",
        std::fs::read_to_string(d.join("stop.txt")).unwrap()
    );
    write(d, "idsync.toml", &guarded_config(200));
    let r = idsync(d, &["show", "run", &id]);
    ok(&r);
    assert!(r.stdout.contains("stored plan"), "{}", r.all());
    assert!(r.stdout.contains("disable_account"), "{}", r.all());
    assert!(r.stdout.contains("u0150"), "{}", r.all());
    let r = idsync(d, &["show", "run", &id, "--json"]);
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["plan"]["ops"].as_array().unwrap().len(),
        100,
        "{}",
        r.stdout
    );
    assert_eq!(v["status"], "needs_approval", "{}", r.stdout);
    assert!(
        idsync(d, &["show", "run", &id])
            .stdout
            .contains(&format!("idsync approve {id}"))
    );
    let r = idsync(d, &["show", "run", "people-nope"]);
    assert_eq!(r.code, 1, "{}", r.all());
    write(d, "idsync.toml", &guarded_config(100));

    let r = idsync(d, &["approve", &id]);
    ok(&r);
    assert!(r.stdout.contains("applied 100, failed 0"), "{}", r.all());
    let r = idsync(d, &["show", "account", "u0150", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["record"]["status"], "disabled");
    assert_eq!(
        v["audit"].as_array().unwrap().last().unwrap()["op"],
        "disable_account"
    );
    let r = idsync(d, &["show", "account", "u0050", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["record"]["status"], "active");

    // Approving twice is refused; so is an unknown run.
    let r = idsync(d, &["approve", &id]);
    assert_eq!(r.code, 1, "{}", r.all());
    let r = idsync(d, &["approve", "people-nope"]);
    assert_eq!(r.code, 1, "{}", r.all());

    // Now in line with the source: nothing to do.
    let r = idsync(d, &["run", "people"]);
    ok(&r);
    assert!(r.stdout.contains("nothing to do"), "{}", r.all());
}

#[cfg(feature = "provider-csv")]
#[test]
fn failed_ops_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CSV sink whose folder does not exist: every write fails.
    write(
        d,
        "idsync.toml",
        r#"[providers.hr]
type = "memory"
generate = { orgs = 2, accounts = 3 }

[providers.out]
type = "csv"
accounts = "no-such-folder/accounts.csv"

[jobs.export]
source = "hr"
sink = "out"
"#,
    );
    let r = idsync(d, &["run", "export"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stdout.contains("partially_failed"), "{}", r.all());
    assert!(
        r.stdout.contains("applied 0, failed 2, skipped 1"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("failed #0 create_account u0001"),
        "{}",
        r.all()
    );
}

#[cfg(feature = "provider-csv")]
#[test]
fn outbound_csv_job_and_incremental_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "idsync.toml",
        r#"[providers.hr]
type = "memory"
generate = { orgs = 5, accounts = 30 }

[providers.sheet]
type = "csv"
accounts = "out/accounts.csv"
orgs = "out/orgs.csv"

[jobs.inbound]
source = "hr"
sink = "hub"

[jobs.outbound]
source = "hub"
sink = "sheet"
"#,
    );
    std::fs::create_dir(d.join("out")).unwrap();
    ok(&idsync(d, &["run", "inbound"]));
    // First incremental run of the outbound job: no cursor yet, so a full run.
    let r = idsync(d, &["run", "outbound", "--changes"]);
    ok(&r);
    assert!(r.stdout.contains("applied 35"), "{}", r.all());
    let text = std::fs::read_to_string(d.join("out/accounts.csv")).unwrap();
    assert_eq!(text.lines().count(), 31, "{text}");
    // Nothing changed in the hub since: an empty incremental run.
    let r = idsync(d, &["run", "outbound", "--changes"]);
    ok(&r);
    assert!(r.stdout.contains("nothing to do"), "{}", r.all());
    // A full run agrees.
    let r = idsync(d, &["run", "outbound"]);
    ok(&r);
    assert!(r.stdout.contains("nothing to do"), "{}", r.all());
}

#[cfg(feature = "provider-ldap")]
const SECRET: &str = "hunter2-Sekr1t-value";
const PG_SECRET: &str = "pg-Sekr1t-password";

#[cfg(feature = "provider-ldap")]
#[test]
fn ldap_password_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pw_file = write(d, "ldap.pw", &format!("{SECRET}\n"));
    let env = [("IDSYNC_TEST_LDAP_PW", SECRET)];
    // An LDAP server that is not there: connecting fails, the error names no secret.
    let config = |pw: &str| {
        format!(
            r#"store = {{ memory = true }}

[providers.ad]
type = "ldap"
url = "ldap://127.0.0.1:9"
base_dn = "dc=example,dc=org"
bind_dn = "cn=admin,dc=example,dc=org"
{pw}
timeout_secs = 2
allow_plaintext = true

[jobs.j]
source = "ad"
sink = "hub"
"#
        )
    };
    for pw in [
        "bind_password_env = \"IDSYNC_TEST_LDAP_PW\"".to_owned(),
        format!("bind_password_file = {:?}", pw_file.display().to_string()),
    ] {
        write(d, "idsync.toml", &config(&pw));
        let r = idsync_env(d, &["check"], &env);
        assert_eq!(r.code, 1, "the server is unreachable\n{}", r.all());
        assert!(r.stdout.contains("provider ad: FAILED"), "{}", r.all());
        assert!(!r.all().contains(SECRET), "{}", r.all());
        for args in [&["plan", "j"][..], &["run", "j"], &["plan", "j", "--json"]] {
            let r = idsync_env(d, args, &[("IDSYNC_LOG", "trace"), env[0]]);
            assert_eq!(r.code, 1, "{args:?}\n{}", r.all());
            assert!(!r.all().contains(SECRET), "{args:?}\n{}", r.all());
        }
    }

    // A password written in the config is refused.
    write(
        d,
        "idsync.toml",
        &config(&format!("bind_password = \"{SECRET}\"")),
    );
    let r = idsync(d, &["check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("bind_password_env"), "{}", r.all());
    assert!(!r.all().contains(SECRET), "{}", r.all());

    // A variable that is not set is a config error naming the variable.
    write(
        d,
        "idsync.toml",
        &config("bind_password_env = \"IDSYNC_TEST_UNSET_PW\""),
    );
    let r = idsync(d, &["check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("IDSYNC_TEST_UNSET_PW"), "{}", r.all());

    // Without `allow_plaintext`, a password over ldap:// without StartTLS is refused, and
    // the error says why.
    let plain = config(&format!(
        "bind_password_file = {:?}",
        pw_file.display().to_string()
    ))
    .replace("allow_plaintext = true\n", "");
    write(d, "idsync.toml", &plain);
    for args in [&["check", "--offline"][..], &["run", "j"]] {
        let r = idsync(d, args);
        assert_eq!(r.code, 2, "{args:?}\n{}", r.all());
        assert!(r.stderr.contains("clear text"), "{}", r.all());
        assert!(r.stderr.contains("allow_plaintext"), "{}", r.all());
        assert!(!r.all().contains(SECRET), "{}", r.all());
    }
    write(
        d,
        "idsync.toml",
        &plain.replace("timeout_secs = 2", "timeout_secs = 2\nstarttls = true"),
    );
    let r = idsync(d, &["check", "--offline"]);
    ok(&r);
}

#[test]
fn database_url_password_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A PostgreSQL URL with a password, pointing at nothing.
    write(
        d,
        "idsync.toml",
        "store = { postgres_env = \"IDSYNC_TEST_PG_URL\" }\n[providers.hr]\ntype = \"memory\"\n",
    );
    let url = format!("postgres://idsync:{PG_SECRET}@127.0.0.1:9/idsync?connect_timeout=2");
    // One command only: the store's connection pool waits 30 s before it gives up.
    let r = idsync_env(
        d,
        &["check"],
        &[("IDSYNC_TEST_PG_URL", &url), ("IDSYNC_LOG", "trace")],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("postgres"), "{}", r.all());
    assert!(!r.all().contains(PG_SECRET), "{}", r.all());
}

#[test]
fn help_documents_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let r = idsync(dir.path(), &["--help"]);
    ok(&r);
    for needle in [
        "guard stop",
        "partial failure",
        "bad config",
        "password_env",
    ] {
        assert!(r.stdout.contains(needle), "{needle}\n{}", r.stdout);
    }
}

#[cfg(feature = "provider-csv")]
#[test]
fn bundled_quickstart_creates_the_hub_then_plans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("quickstart.toml");
    let config = config.to_str().unwrap();
    let r = idsync(d, &["run", "quickstart", "--config", config]);
    ok(&r);
    assert!(
        r.stdout.contains("read: source 20 orgs, 200 accounts"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("applied 220, failed 0"), "{}", r.all());
    assert!(d.join("idsync.db").exists());
    let r = idsync(d, &["run", "quickstart", "--config", config]);
    ok(&r);
    assert!(r.stdout.contains("nothing to do"), "{}", r.all());
    let r = idsync(d, &["check", "--config", config]);
    ok(&r);
}

#[test]
fn a_second_worker_on_a_running_job_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "idsync.toml",
        r#"[providers.hr]
type = "memory"
generate = { orgs = 20, accounts = 50000 }

[jobs.big]
source = "hr"
sink = "hub"
"#,
    );
    let mut first = Command::new(env!("CARGO_BIN_EXE_idsync"))
        .current_dir(d)
        .args(["run", "big"])
        .env_remove("IDSYNC_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first worker takes the lease before it plans; its plan shows up as a run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let r = idsync(d, &["runs", "--json"]);
        if r.code == 0 && r.stdout.contains("\"big-") {
            break;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first worker ended before its run showed up"
        );
        assert!(std::time::Instant::now() < deadline, "no run after 120 s");
        #[allow(clippy::disallowed_methods)] // a plain test thread polling a child process
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = idsync(d, &["run", "big"]);
    let still_running = first.try_wait().unwrap().is_none();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        still_running,
        "the first worker finished too soon for this test"
    );
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stderr.contains("lease"), "{}", r.all());
}

/// Cells a spreadsheet would run as a formula.
fn formula_like(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

#[test]
fn csv_export_neutralises_formulas_in_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "idsync.toml",
        r#"store = { sqlite = "idsync.db" }

[providers.hr]
type = "memory"
orgs = [
  { anchor = "-d1", name = "@Sales", attrs = { code = "+1" } },
]
accounts = [
  { anchor = "u1", username = "=cmd|' /C calc'!A0", display_name = '=HYPERLINK("http://x","a")', title = "+SUM(1)", employee_id = "-5", phone = "@x", orgs = ["-d1"], attrs = { note = "\tx", cr = "\rx" } },
  { anchor = "u2", username = "plain", display_name = "Plain Name", orgs = ["-d1"] },
]

[jobs.j]
source = "hr"
sink = "hub"
"#,
    );
    ok(&idsync(d, &["run", "j"]));

    for what in ["accounts", "orgs"] {
        let r = idsync(d, &["export", "--what", what]);
        ok(&r);
        assert!(!r.stdout.starts_with('\u{feff}'), "no BOM unless asked");
        let mut rdr = csv::Reader::from_reader(r.stdout.as_bytes());
        let headers = rdr.headers().unwrap().clone();
        let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
        assert!(!rows.is_empty(), "{what}: {}", r.stdout);
        for row in &rows {
            for (h, cell) in headers.iter().zip(row.iter()) {
                assert!(
                    !formula_like(cell),
                    "{what}: column {h}: {cell:?}\n{}",
                    r.stdout
                );
            }
        }
        if what == "accounts" {
            let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
            let u1 = rows.iter().find(|r| &r[0] == "u1").unwrap();
            assert_eq!(&u1[col("display_name")], "'=HYPERLINK(\"http://x\",\"a\")");
            assert_eq!(&u1[col("username")], "'=cmd|' /C calc'!A0");
            assert_eq!(&u1[col("title")], "'+SUM(1)");
            assert_eq!(&u1[col("employee_id")], "'-5");
            assert_eq!(&u1[col("phone")], "'@x");
            assert_eq!(&u1[col("departments")], "'-d1");
            assert_eq!(&u1[col("attrs.note")], "'\tx");
            assert_eq!(&u1[col("attrs.cr")], "'\rx");
            let u2 = rows.iter().find(|r| &r[0] == "u2").unwrap();
            assert_eq!(
                &u2[col("display_name")],
                "Plain Name",
                "plain text is untouched"
            );
        } else {
            assert_eq!(&rows[0][0], "'-d1");
            assert!(rows[0].iter().any(|c| c == "'@Sales"), "{:?}", rows[0]);
            assert!(rows[0].iter().any(|c| c == "'+1"), "{:?}", rows[0]);
        }
    }

    // --bom, to a file; the csv provider reads the export back unchanged.
    let r = idsync(d, &["export", "--bom", "-o", "out.csv"]);
    ok(&r);
    let bytes = std::fs::read(d.join("out.csv")).unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "{:?}", &bytes[..8]);
    #[cfg(feature = "provider-csv")]
    read_back(d);
    let r = idsync(d, &["export", "--format", "json", "--bom"]);
    assert_ne!(r.code, 0, "--bom is for CSV\n{}", r.all());
}

/// The csv provider reads an export back with the guard stripped again.
#[cfg(feature = "provider-csv")]
fn read_back(d: &Path) {
    write(
        d,
        "back.toml",
        r#"store = { memory = true }

[providers.back]
type = "csv"
accounts = "out.csv"

[jobs.j]
source = "back"
sink = "hub"
sync_orgs = false
"#,
    );
    let r = idsync(d, &["--config", "back.toml", "plan", "j", "--json"]);
    ok(&r);
    assert!(
        r.stdout.contains(r#"=HYPERLINK(\"http://x\",\"a\")"#) && !r.stdout.contains("'=HYPERLINK"),
        "the import strips the guard again\n{}",
        r.stdout
    );
}

#[cfg(feature = "provider-csv")]
#[test]
fn csv_paths_in_the_id_layout_are_an_error_naming_file_line_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "people.csv",
        "id,username,departments\nu1,zhang.san,总部\nu2,li.si,总部/研发中心/后端组\n",
    );
    let config = |layout: &str| {
        format!(
            r#"store = {{ sqlite = "idsync.db" }}

[providers.hr]
type = "csv"
accounts = "people.csv"
{layout}

[jobs.j]
source = "hr"
sink = "hub"
"#
        )
    };
    write(d, "idsync.toml", &config(""));
    for args in [&["check", "--offline"][..], &["run", "j"]] {
        let r = idsync(d, args);
        assert_eq!(r.code, 2, "{args:?}\n{}", r.all());
        assert!(r.stderr.contains("people.csv:3"), "{}", r.all());
        assert!(r.stderr.contains("layout = \"paths\""), "{}", r.all());
    }
    // With the path layout the departments arrive.
    write(d, "idsync.toml", &config("layout = \"paths\""));
    ok(&idsync(d, &["run", "j"]));
    let r = idsync(d, &["show", "account", "u2", "--json"]);
    ok(&r);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["record"]["orgs"].as_array().unwrap().len(),
        1,
        "{}",
        r.stdout
    );
    let r = idsync(d, &["export", "--what", "orgs", "--format", "json"]);
    assert!(r.stdout.contains("后端组"), "{}", r.stdout);
}

#[cfg(feature = "provider-csv")]
#[test]
fn an_oversized_csv_record_fails_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An unterminated quote on line 3 swallows the rest of a large file.
    let mut text = String::from("id,username,display_name\nu1,a,A\nu2,b,\"never closed\n");
    for i in 0..40_000 {
        text.push_str(&format!("u{i},name{i},Display {i}\n"));
    }
    assert!(text.len() > 1 << 20);
    write(d, "people.csv", &text);
    let config = |extra: &str| {
        format!(
            "store = {{ memory = true }}\n\n[providers.hr]\ntype = \"csv\"\naccounts = \"people.csv\"\n{extra}\n\n[jobs.j]\nsource = \"hr\"\nsink = \"hub\"\n"
        )
    };
    for (extra, limit) in [("", "1048576"), ("max_record_bytes = 4096", "4096")] {
        write(d, "idsync.toml", &config(extra));
        let r = idsync(d, &["run", "j"]);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("people.csv"), "{}", r.all());
        assert!(r.stderr.contains("line 3"), "{}", r.all());
        assert!(r.stderr.contains(limit), "{}", r.all());
        assert!(r.stderr.contains("max_record_bytes"), "{}", r.all());
    }
    // Under the cap the same record is fine.
    write(
        d,
        "small.csv",
        "id,username,display_name\nu1,a,\"multi\nline\"\n",
    );
    write(
        d,
        "idsync.toml",
        &config("max_record_bytes = 64").replace("people.csv", "small.csv"),
    );
    ok(&idsync(d, &["run", "j"]));
}

#[cfg(feature = "provider-csv")]
#[test]
fn check_says_bad_data_rather_than_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "people.csv", "id,username,email\nu1,a,not-an-email\n");
    write(
        d,
        "idsync.toml",
        "store = { memory = true }\n\n[providers.hr]\ntype = \"csv\"\naccounts = \"people.csv\"\n\n[jobs.j]\nsource = \"hr\"\nsink = \"hub\"\n",
    );
    let r = idsync(d, &["check"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("provider hr: FAILED"), "{}", r.all());
    assert!(
        r.all().contains("answered but its data is bad"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains("cannot be reached"), "{}", r.all());
    assert!(r.all().contains("people.csv:2"), "{}", r.all());
}

#[cfg(feature = "provider-dingtalk")]
mod layers {
    use super::*;
    use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};

    const SECRET_VAR: &str = "IDSYNC_TEST_FAKE_DT_SECRET";

    fn config(base_url: &str, request: &str) -> String {
        format!(
            r#"store = {{ sqlite = "idsync.db" }}

[providers.dt]
type = "dingtalk"
base_url = "{base_url}"
app_key = "dingfakeappkey"
app_secret_env = "{SECRET_VAR}"
page_size = 5
qps = 100

[providers.dt.request]
{request}

[jobs.j]
source = "dt"
sink = "hub"
"#
        )
    }

    /// Runs the binary off the runtime, so the fake keeps serving meanwhile.
    async fn run(dir: &Path, args: &[&str]) -> Run {
        let dir = dir.to_owned();
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            idsync_env(&dir, &args, &[(SECRET_VAR, "fake-app-secret")])
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_failures_and_throttling_mid_listing_still_sync_everything() {
        // The fake allows 10 calls per API per second; the adapter is told 100: it is
        // throttled again and again in the middle of the listing.
        let fake = FakeDingTalk::start(FakeConfig {
            qps: Some(10),
            ..FakeConfig::default()
        })
        .await
        .expect("the fake DingTalk must start");
        fake.seed(6, 40);
        // Once the org tree is read, the user listing fails twice with a temporary
        // "system busy" (-1), then is throttled outright (88/90018, whatever the rate).
        fake.fail_next("/topapi/v2/user/list", 2, -1, None);
        fake.fail_next("/topapi/v2/user/list", 1, 88, Some("90018"));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "idsync.toml",
            &config(
                &fake.base_url(),
                "attempts = 30\nbackoff_ms = 20\nmax_backoff_ms = 300\ntimeout_secs = 10",
            ),
        );
        let r = run(d, &["run", "j"]).await;
        ok(&r);
        let stats = fake.stats();
        assert_eq!(stats.path("/topapi/v2/user/list").injected, 3, "{stats:?}");

        let r = run(d, &["export", "--format", "json"]).await;
        ok(&r);
        let got: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
        let mut got: Vec<String> = got
            .iter()
            .map(|a| a["username"].as_str().unwrap().to_owned())
            .collect();
        got.sort();
        let mut want: Vec<String> = fake.users().into_iter().map(|u| u.userid).collect();
        want.sort();
        assert_eq!(got.len(), 40);
        assert_eq!(got, want, "every person arrived once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permanent_error_is_not_retried() {
        let fake = FakeDingTalk::start(FakeConfig::default())
            .await
            .expect("the fake DingTalk must start");
        fake.seed(2, 5);
        // 60011: no permission, a permanent answer
        fake.fail_next("/topapi/v2/user/list", 5, 88, Some("60011"));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "idsync.toml",
            &config(&fake.base_url(), "attempts = 5\nbackoff_ms = 10"),
        );
        let r = run(d, &["run", "j"]).await;
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stderr.contains("permission_denied"), "{}", r.all());
        assert!(r.stderr.contains("60011"), "{}", r.all());
        let calls = fake.stats().path("/topapi/v2/user/list");
        assert_eq!(calls.calls, 1, "one call, no retry: {calls:?}");
        assert!(!r.all().contains("fake-app-secret"), "{}", r.all());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_retries_the_same_failure_ends_the_run() {
        let fake = FakeDingTalk::start(FakeConfig::default())
            .await
            .expect("the fake DingTalk must start");
        fake.seed(2, 5);
        fake.fail_next("/topapi/v2/user/list", 1, -1, None);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "idsync.toml", &config(&fake.base_url(), "attempts = 1"));
        let r = run(d, &["run", "j"]).await;
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stderr.contains("unavailable"), "{}", r.all());
        // the default stack retries it
        fake.fail_next("/topapi/v2/user/list", 1, -1, None);
        write(
            d,
            "idsync.toml",
            &config(&fake.base_url(), "backoff_ms = 10"),
        );
        ok(&run(d, &["run", "j"]).await);
    }
}

/// `type = "wecom"` through the binary: a WeCom corp (the stateful fake) into the hub with
/// the default layers, then a second run that plans nothing.
mod wecom {
    use super::*;
    use idsync_wecom::fake::{FakeConfig, FakeWeCom};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wecom_corp_syncs_into_the_hub_through_the_binary() {
        let fake = FakeWeCom::start(FakeConfig::default())
            .await
            .expect("the fake WeCom must start");
        fake.seed(4, 25);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        write(
            &d,
            "idsync.toml",
            &format!(
                r#"store = {{ sqlite = "idsync.db" }}

[providers.wx]
type = "wecom"
base_url = "{}"
corp_id = "wwfake0000000001"
secret_env = "IDSYNC_TEST_FAKE_WECOM_SECRET"

[jobs.j]
source = "wx"
sink = "hub"
"#,
                fake.base_url()
            ),
        );
        let run = |args: &'static [&'static str]| {
            let d = d.clone();
            tokio::task::spawn_blocking(move || {
                idsync_env(
                    &d,
                    args,
                    &[("IDSYNC_TEST_FAKE_WECOM_SECRET", "fake-app-secret")],
                )
            })
        };
        let r = run(&["run", "j"]).await.unwrap();
        ok(&r);
        assert!(r.stdout.contains("failed 0"), "{}", r.all());
        assert!(r.stdout.contains("create_account"), "{}", r.all());
        let again = run(&["run", "j"]).await.unwrap();
        ok(&again);
        assert!(again.stdout.contains("nothing to do"), "{}", again.all());
    }
}

/// `type = "scim"` through the binary: the CSV sample into a real scim2-server (started by
/// the project's script on a free port; its virtualenv is `SCIM2_VENV` when set, else the
/// script installs one), then a second run that plans nothing.
#[cfg(feature = "provider-scim")]
mod scim {
    use super::*;
    use std::process::Command;

    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services/scim2.sh")
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A scim2-server of this test's own, stopped (by its pid file) when dropped.
    struct Peer {
        url: String,
        dir: PathBuf,
    }

    const TOKEN: &str = "idsync-cli-scim-token";

    impl Peer {
        fn start() -> Peer {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "cli-scim2-{}-{}",
                std::process::id(),
                free_port()
            ));
            let mut cmd = Command::new("bash");
            cmd.arg(script())
                .arg("start")
                .arg(&dir)
                .env("SCIM2_PORT", free_port().to_string())
                .env("SCIM2_TOKEN", TOKEN);
            let out = cmd.output().expect("run scripts/services/scim2.sh");
            assert!(
                out.status.success(),
                "scim2.sh start {} failed: scim2-server is required, not optional\n{}\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let url = stdout
                .lines()
                .find_map(|l| l.strip_prefix("SCIM2_URL="))
                .expect("the script prints SCIM2_URL")
                .to_owned();
            Peer { url, dir }
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = Command::new("bash")
                .arg(script())
                .arg("stop")
                .arg(&self.dir)
                .output();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_csv_sample_syncs_into_a_real_scim2_server_through_the_binary() {
        let peer = Peer::start();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        // the token by a file reference relative to the config's folder
        write(&d, "scim.token", &format!("{TOKEN}\n"));
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../idsync-csv/data");
        write(
            &d,
            "idsync.toml",
            &format!(
                r#"store = {{ sqlite = "idsync.db" }}

[providers.hr]
type = "csv"
accounts = {:?}
orgs = {:?}

[providers.app]
type = "scim"
base_url = "{}"
auth = {{ type = "bearer", token = {{ file = "scim.token" }} }}
# the sample's departments as nested Groups (a Group holds no order, a User no primary
# Group: the engine diffs only what the app keeps)
groups = "nested"

[jobs.j]
source = "hr"
sink = "app"
"#,
                data.join("sample-accounts.csv").display().to_string(),
                data.join("sample-orgs.csv").display().to_string(),
                peer.url
            ),
        );
        let run = |args: &'static [&'static str]| {
            let d = d.clone();
            tokio::task::spawn_blocking(move || idsync(&d, args))
        };
        let r = run(&["run", "j"]).await.unwrap();
        ok(&r);
        assert!(r.stdout.contains("failed 0"), "{}", r.all());
        assert!(r.stdout.contains("create_account"), "{}", r.all());

        // what arrived, read back from the server with the SCIM client
        let token = d.join("scim.token");
        let mut cfg = idsync_scim::TargetConfig::bearer(peer.url.clone(), "UNUSED");
        cfg.auth = idsync_scim::AuthConfig::Bearer {
            token: idsync_scim::SecretRef::File(token),
        };
        let client = idsync_scim::ScimClient::new(cfg).unwrap();
        let users = idsync_core::source::collect_accounts(&client)
            .await
            .unwrap();
        assert_eq!(users.len(), 200, "every person of the sample");
        let ceo = users
            .iter()
            .find(|u| u.username == "zhang.wei")
            .expect("zhang.wei arrived");
        assert_eq!(ceo.display_name.as_deref(), Some("张伟"));
        assert_eq!(ceo.email.as_deref(), Some("zhang.wei@example.com"));
        // the departments as nested Groups: one root, every other Group inside its parent
        let groups = idsync_core::source::collect_orgs(&client).await.unwrap();
        assert_eq!(groups.len(), 20, "every department of the sample");
        assert_eq!(groups.iter().filter(|g| g.parent.is_none()).count(), 1);
        assert!(
            users.iter().all(|u| !u.orgs.is_empty()),
            "everyone is in a Group"
        );
        // the sample's people in two departments are in both Groups
        assert_eq!(users.iter().filter(|u| u.orgs.len() == 2).count(), 9);

        // a second run plans nothing: no Group `order`, no primary Group to compare
        let again = run(&["run", "j"]).await.unwrap();
        ok(&again);
        assert!(again.stdout.contains("nothing to do"), "{}", again.all());
        drop(peer);
    }
}

#[path = "cli/serve.rs"]
mod serve;
