//! Two real worker processes share one job through a lease in a real PostgreSQL: they never
//! run it at the same time, and when the holder is killed with SIGKILL the other takes
//! over once the lease's TTL has passed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::Connection;

const TTL_MS: i64 = 1500;

fn spawn_worker(url: &str, holder: &str, jobs: Option<usize>) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idsync-store-worker"));
    cmd.args([
        "--url",
        url,
        "--holder",
        holder,
        "--ttl-ms",
        &TTL_MS.to_string(),
    ])
    .args(["--work-ms", "150", "--poll-ms", "50"])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(n) = jobs {
        cmd.args(["--jobs", &n.to_string()]);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str, within: Duration) -> Option<String> {
    let until = Instant::now() + within;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with(prefix) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[derive(Debug, Clone)]
struct Marker {
    holder: String,
    kind: String,
    /// Microseconds since the epoch, by the database's clock.
    at: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_overlap_and_take_over_after_a_kill() {
    let url = common::fresh_pg_database("idsync_workers").await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE worker_markers (id BIGSERIAL PRIMARY KEY, holder TEXT NOT NULL, \
         kind TEXT NOT NULL, n BIGINT NOT NULL, \
         at BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // Let one worker migrate the schema before both race for the lease.
    idsync_store::PgStore::connect(&url)
        .await
        .unwrap()
        .close()
        .await;

    // Both start at once; exactly one gets the lease.
    let (a, a_out) = spawn_worker(&url, "A", None);
    let (b, b_out) = spawn_worker(&url, "B", None);
    // Whoever got it keeps it: watch for 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (first, first_out, mut second, second_out, first_name) = {
        let a_started = a_out.try_iter().any(|l| l.starts_with("start"));
        let b_started = b_out.try_iter().any(|l| l.starts_with("start"));
        assert!(
            a_started ^ b_started,
            "exactly one worker runs the job (A: {a_started}, B: {b_started})"
        );
        if a_started {
            (a, a_out, b, b_out, "A")
        } else {
            (b, b_out, a, a_out, "B")
        }
    };
    let mut holder = first;
    // Kill the holder in the middle of a run.
    assert!(
        wait_line(&first_out, "start", Duration::from_secs(10)).is_some(),
        "holder stopped working"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    holder.kill().unwrap(); // SIGKILL
    let (killed_at,): (i64,) =
        sqlx::query_as("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    holder.wait().unwrap();

    // The other takes over, after the TTL, and not much later.
    let took_over = wait_line(
        &second_out,
        "start",
        Duration::from_millis(TTL_MS as u64 + 5_000),
    );
    assert!(
        took_over.is_some(),
        "the second worker never took over after the kill"
    );
    // Let it finish a run or two, then stop it too.
    assert!(wait_line(&second_out, "end", Duration::from_secs(5)).is_some());
    second.kill().unwrap();
    second.wait().unwrap();

    let markers: Vec<Marker> = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT holder, kind, at FROM worker_markers ORDER BY at, id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|(holder, kind, at)| Marker { holder, kind, at })
    .collect();
    let second_name = if first_name == "A" { "B" } else { "A" };
    let first_runs = markers
        .iter()
        .filter(|m| m.holder == first_name && m.kind == "start")
        .count();
    let second_runs = markers
        .iter()
        .filter(|m| m.holder == second_name && m.kind == "start")
        .count();
    assert!(
        first_runs >= 2,
        "holder ran {first_runs} times before the kill"
    );
    assert!(second_runs >= 1, "the other never ran");

    // No overlap: walk the markers in time order; at most one run open at a time. The
    // killed holder's last run (a start without an end) closes at the kill.
    let mut open: Option<(String, i64)> = None;
    let mut last_first_start = None;
    let mut second_first_start = None;
    for m in &markers {
        match m.kind.as_str() {
            "start" => {
                if let Some((h, since)) = &open {
                    let closed_by_kill = h == first_name && m.at > killed_at;
                    assert!(
                        closed_by_kill,
                        "{} started at {} while {h} has run since {since}",
                        m.holder, m.at
                    );
                }
                if m.holder == first_name {
                    last_first_start = Some(m.at);
                } else if second_first_start.is_none() {
                    second_first_start = Some(m.at);
                }
                open = Some((m.holder.clone(), m.at));
            }
            "end" => {
                let (h, _) = open.take().expect("an end without a start");
                assert_eq!(h, m.holder, "end of a run that was not open");
            }
            k => panic!("unknown marker {k}"),
        }
    }
    let last_first_start = last_first_start.unwrap();
    let second_first_start = second_first_start.unwrap();
    assert!(second_first_start > killed_at, "took over before the kill");
    // The lease was renewed just before the holder's last start, so it expired about a TTL
    // later; the other worker could not run before that.
    let waited = (second_first_start - last_first_start) / 1000;
    assert!(
        waited >= TTL_MS - 100,
        "took over {waited} ms after the holder's last renewal, TTL is {TTL_MS} ms"
    );
    assert!(waited <= TTL_MS + 3_000, "took over only after {waited} ms");
}
