//! Crash safety with real process kills: a child process applies a 10,000-op plan (a
//! memory source into a SQLite-backed target) and is killed with SIGKILL at a random
//! point; the store must then be consistent, and a rerun must converge: no duplicate
//! entity in the target, no lost op, links consistent, nothing left to do.
//!
//! Two targets, ten independent trials each (20 trials, each on a fresh directory):
//! * `hub`: the hub over the engine's own SQLite store (ops and records in one
//!   transaction per batch);
//! * `sink`: a hub over a second SQLite file that assigns its own anchors, so a kill between
//!   the sink's write and the store's record leaves an unlinked entity that the rerun must
//!   adopt (correlation by employee id, or by parent and name for orgs) instead of creating
//!   a duplicate.
//!
//! The kill point is chosen by progress, not by time, so that it lands mid-way on a fast
//! or a slow machine alike: a trial draws a number of ended ops between 0 and 80% of the
//! plan, waits until the child reports that many (its progress lines), waits a further
//! random 0–20 ms, and kills. Set `IDSYNC_CRASH_SEED` to replay a sequence of kill points.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::{Rng, SeedableRng};

const TRIALS_PER_MODE: usize = 10;
/// Attempts per trial to kill the child before it finishes (it can outrun the kill only
/// when the machine stalls the test between reading a progress line and killing).
const ATTEMPTS: usize = 3;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_idsync-store-crashtest"))
}

fn tool(cmd: &str, mode: &str, dir: &Path, extra: &[&str]) -> (bool, String) {
    let out = bin()
        .args([cmd, "--mode", mode, "--dir"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// How a run that was to be killed ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Killed after this many ops had ended.
    Killed { seen: usize, planned: usize },
    /// Finished before the kill.
    Finished,
}

/// The count of a child's `progress N` line.
fn progress_of(line: &str) -> Option<usize> {
    line.strip_prefix("progress ").and_then(|n| n.parse().ok())
}

/// Start a run, wait until `at` (a share of the plan, 0..1) of its ops have ended, wait
/// `extra` more, then SIGKILL it.
fn run_and_kill(mode: &str, dir: &Path, at: f64, extra: Duration) -> Ended {
    let mut child = bin()
        .args(["run", "--mode", mode, "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let planned_line = rx.recv_timeout(Duration::from_secs(300)).unwrap();
    let planned: usize = planned_line
        .strip_prefix("planned ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {planned_line:?}"));
    assert!(planned >= 10_000, "the plan has {planned} ops");
    let target = (planned as f64 * at) as usize;
    let mut seen = 0;
    let mut finished = false;
    while seen < target {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(l) if l.starts_with("done") => {
                finished = true;
                break;
            }
            Ok(l) => {
                if let Some(n) = progress_of(&l) {
                    seen = n;
                }
            }
            Err(e) => panic!("{mode}: no progress from the child: {e:?}"),
        }
    }
    // The extra wait, still reading the child's lines.
    let until = std::time::Instant::now() + extra;
    while !finished && let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with("done") => finished = true,
            Ok(l) => {
                if let Some(n) = progress_of(&l) {
                    seen = n;
                }
            }
            Err(_) => break,
        }
    }
    child.kill().unwrap(); // SIGKILL (no-op if it already exited)
    let status = child.wait().unwrap();
    if finished || status.success() {
        Ended::Finished
    } else {
        Ended::Killed { seen, planned }
    }
}

fn trial(mode: &str, seed: u64, trial: usize, rng: &mut rand::rngs::StdRng) {
    let dir = tempfile::tempdir().unwrap();
    let mut ended = Ended::Finished;
    for _ in 0..ATTEMPTS {
        let at = rng.random_range(0.0..0.8);
        let extra = Duration::from_millis(rng.random_range(0..=20));
        ended = run_and_kill(mode, dir.path(), at, extra);
        if ended != Ended::Finished {
            break;
        }
    }
    let Ended::Killed { seen, planned } = ended else {
        panic!("{mode}, seed {seed}, trial {trial}: the run finished before every kill");
    };
    eprintln!("{mode} trial {trial}: killed after {seen} of {planned} ops");
    // Consistent after the kill. In sink mode the kill may leave the entities of the ops in
    // flight (at most the job's concurrency, 8) written but not recorded.
    let (ok, out) = tool("check", mode, dir.path(), &["--max-unlinked", "8"]);
    assert!(
        ok,
        "{mode}, seed {seed}, trial {trial} (killed after {seen} ops): inconsistent:\n{out}"
    );
    // The rerun goes to the end and converges.
    let (ok, out) = tool("run", mode, dir.path(), &[]);
    assert!(
        ok,
        "{mode}, seed {seed}, trial {trial}: the rerun failed:\n{out}"
    );
    assert!(out.contains("failed=0"), "{out}");
    let (ok, out) = tool("verify", mode, dir.path(), &[]);
    assert!(
        ok,
        "{mode}, seed {seed}, trial {trial} (killed after {seen} ops): did not converge:\n{out}"
    );
    assert!(out.contains("converged"), "{out}");
}

fn trials(mode: &str) {
    let seed = std::env::var("IDSYNC_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("IDSYNC_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for t in 0..TRIALS_PER_MODE {
        trial(mode, seed, t, &mut rng);
    }
}

#[test]
fn killed_runs_into_the_hub_converge() {
    trials("hub");
}

#[test]
fn killed_runs_into_an_anchor_assigning_sink_converge() {
    trials("sink");
}
