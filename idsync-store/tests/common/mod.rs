//! Test helpers: a PostgreSQL server for the tests, fresh databases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests
#![allow(dead_code, unreachable_pub)]

use std::process::Command;
use std::sync::OnceLock;

/// The test server: its admin URL, and the CA file of its TLS certificate when known.
struct Server {
    url: String,
    ca_file: Option<String>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        for var in ["IDSYNC_TEST_PG_URL", "DATABASE_URL"] {
            if let Ok(u) = std::env::var(var)
                && u.starts_with("postgres")
            {
                return Server {
                    url: u,
                    ca_file: std::env::var("POSTGRES_CA_FILE").ok(),
                };
            }
        }
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/services/postgres.sh"
        );
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let datadir = std::env::temp_dir().join(format!("idsync-store-pg-{name}"));
        let out = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(&datadir)
            .env("POSTGRES_OWNER_PID", std::process::id().to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            out.status.success(),
            "PostgreSQL could not be started by {script}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let var = |k: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(k).map(str::to_owned))
        };
        Server {
            url: var("DATABASE_URL=").expect("postgres.sh printed no DATABASE_URL"),
            ca_file: var("POSTGRES_CA_FILE="),
        }
    })
}

/// The admin URL of a PostgreSQL server for tests: `IDSYNC_TEST_PG_URL` or `DATABASE_URL`
/// when set, else a server started through `scripts/services/postgres.sh` (stopped when
/// this test process exits). Panics loudly when none can be had: tests never skip.
pub fn pg_url() -> String {
    server().url.clone()
}

/// The CA file of the test server's TLS certificate: `POSTGRES_CA_FILE` next to a URL
/// from the environment, else what `postgres.sh` printed. Panics when unknown.
pub fn pg_ca_file() -> String {
    server().ca_file.clone().expect(
        "the CA file of the test PostgreSQL is unknown: set POSTGRES_CA_FILE (printed by \
         scripts/services/postgres.sh) next to DATABASE_URL",
    )
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// A fresh, empty database on the test server; returns its URL.
pub async fn fresh_pg_database(prefix: &str) -> String {
    use sqlx::Connection;
    let admin = pg_url();
    let name = format!("{prefix}_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    with_database(&admin, &name)
}
