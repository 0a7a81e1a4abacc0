//! Starting json-server through the project's service script.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use idsync_rest::{RestConfig, RestDirectory};

/// A json-server started by this test binary; stopped on drop (and by the script's
/// owner watcher if the binary dies).
#[derive(Debug)]
pub struct JsonServer {
    pub url: String,
    pub seed: PathBuf,
    datadir: Option<PathBuf>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services/json-server.sh")
}

fn node_dir() -> PathBuf {
    std::env::var_os("JSON_SERVER_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("idsync-json-server-node"))
}

impl JsonServer {
    /// Starts an instance serving `db` (a db.json text), or the HR set when `None`.
    pub fn start(db: Option<&str>) -> JsonServer {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "idsync-rest-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .arg("start")
            .arg(dir.join("svc"))
            .env("JSON_SERVER_NODE_DIR", node_dir())
            .env("JSON_SERVER_OWNER_PID", std::process::id().to_string())
            .env_remove("JSON_SERVER_PORT");
        if let Some(db) = db {
            let f = dir.join("db.json");
            std::fs::write(&f, db).unwrap();
            cmd.env("JSON_SERVER_DB", f);
        } else {
            cmd.env_remove("JSON_SERVER_DB");
        }
        let out = cmd
            .output()
            .expect("bash must run scripts/services/json-server.sh");
        assert!(
            out.status.success(),
            "json-server could not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let fact = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("json-server.sh printed no {k}: {text}"))
                .to_owned()
        };
        JsonServer {
            url: fact("JSON_SERVER_URL"),
            seed: PathBuf::from(fact("JSON_SERVER_SEED")),
            datadir: Some(dir.join("svc")),
        }
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        if let Some(d) = &self.datadir {
            let _ = Command::new("bash")
                .arg(script())
                .arg("purge")
                .arg(d)
                .output();
        }
    }
}

/// The shared, read-only HR instance: `JSON_SERVER_URL` (with `JSON_SERVER_SEED`) when
/// set, else one started once for this binary.
pub fn hr() -> &'static JsonServer {
    static HR: OnceLock<JsonServer> = OnceLock::new();
    HR.get_or_init(|| match std::env::var("JSON_SERVER_URL") {
        Ok(url) if !url.is_empty() => JsonServer {
            url,
            seed: PathBuf::from(
                std::env::var("JSON_SERVER_SEED")
                    .expect("JSON_SERVER_SEED must come with JSON_SERVER_URL"),
            ),
            datadir: None,
        },
        _ => JsonServer::start(None),
    })
}

/// A connector from TOML text.
pub fn connector(toml_text: &str) -> RestDirectory {
    let cfg: RestConfig = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    RestDirectory::new(cfg).unwrap()
}

/// The HR mapping: departments and people of the generated set, with `pagination` (a
/// TOML inline table) for both.
pub fn hr_config(url: &str, pagination: &str, page_size: usize) -> String {
    format!(
        r#"
base_url = "{url}"
[orgs]
path = "/departments"
page_size = {page_size}
pagination = {pagination}
item_path = "/departments/{{anchor}}"
[orgs.fields]
anchor = "/id"
name = "/name"
parent = "/parent_id"
order = "/sort"
"attrs.cost_center" = "/cost_center"
[accounts]
path = "/people"
page_size = {page_size}
pagination = {pagination}
item_path = "/people/{{anchor}}"
[accounts.fields]
anchor = "/id"
username = "/login"
display_name = "/name"
email = {{ pointer = "/work_email", transforms = ["trim", "lowercase"] }}
employee_id = "/employee_no"
title = "/job_title"
phone = "/mobile"
orgs = "/department_ids"
manager = "/manager_id"
[accounts.status]
pointer = "/active"
active = true
disabled = false
"#
    )
}
