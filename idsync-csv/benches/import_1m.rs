//! Import of 1,000,000 accounts beside a plain `csv`-crate read of the same file.
//!
//! `cargo bench -p idsync-csv --bench import_1m` (rows: `IDSYNC_BENCH_ROWS`, default
//! 1,000,000). Generates the file in a temp dir, then times, in one run:
//!
//! 1. `csv` crate: `csv::Reader` over the file, every record into a reused `StringRecord`;
//! 2. `CsvSource::open`: the validation pass (decode, parse, map, duplicate / department /
//!    manager checks);
//! 3. listing: every page of `accounts()` (read + decode + parse + map into `Account`s);
//! 4. `Engine::plan` of a job CSV → `Hub` over an empty `MemoryStore` (open + read + map +
//!    correlate + plan; 1,000,000 `create_account` ops).
//!
//! Peak resident memory (`VmHWM`) is printed after each step.
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use idsync_core::{Engine, Hub, Job, MemoryStore, SourceExt, Store};
use idsync_csv::{CsvConfig, CsvSource};

const SURNAMES: &[&str] = &["张", "王", "李", "赵", "刘", "陈", "Smith", "Brown"];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "Alice", "Bob", "Carol", "David",
];

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn generate(dir: &std::path::Path, rows: usize) -> CsvConfig {
    let orgs = dir.join("orgs.csv");
    let accounts = dir.join("accounts.csv");
    let mut o = std::io::BufWriter::new(std::fs::File::create(&orgs).unwrap());
    o.write_all("\u{feff}部门ID,上级部门ID,部门名称,排序\r\n".as_bytes())
        .unwrap();
    writeln!(o, "D0,,示例科技,0\r").unwrap();
    for c in 1..=10 {
        writeln!(o, "D{c},D0,中心{c},{c}\r").unwrap();
        for g in 1..=10 {
            writeln!(o, "D{c}-{g},D{c},\"组 {c}-{g}, team\",{g}\r").unwrap();
        }
    }
    o.flush().unwrap();
    let mut a =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&accounts).unwrap());
    a.write_all(b"\xEF\xBB\xBFid,username,display_name,email,phone,employee_id,title,departments,manager,status\r\n")
        .unwrap();
    for i in 0..rows {
        let name = format!(
            "{}{}",
            SURNAMES[i % SURNAMES.len()],
            GIVEN[(i / 7) % GIVEN.len()]
        );
        let dept = format!("D{}-{}", i % 10 + 1, (i / 10) % 10 + 1);
        let depts = if i % 13 == 0 {
            format!("{dept};D{}", i % 10 + 1)
        } else {
            dept
        };
        let manager = if i % 100 == 0 {
            String::new()
        } else {
            format!("u{:07}", i - i % 100)
        };
        let status = if i % 37 == 0 { "离职" } else { "在职" };
        writeln!(
            a,
            "u{i:07},user{i},{name},user{i}@example.com,139{i:08},E{i:07},工程师 Engineer,{depts},{manager},{status}\r"
        )
        .unwrap();
    }
    a.flush().unwrap();
    CsvConfig::new(accounts, Some(orgs))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: a tiny smoke run then.
    let bench = std::env::args().any(|a| a == "--bench");
    let rows: usize = std::env::var("IDSYNC_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 1_000_000 } else { 1_000 });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let cfg = generate(dir.path(), rows);
    let size = std::fs::metadata(&cfg.accounts).unwrap().len();
    println!(
        "generated {rows} rows, {:.1} MB, in {:.2?}",
        size as f64 / 1e6,
        t.elapsed()
    );

    // 1. plain csv crate
    let t = Instant::now();
    let mut r = csv::Reader::from_path(&cfg.accounts).unwrap();
    let mut rec = csv::StringRecord::new();
    let mut n = 0usize;
    let mut bytes = 0usize;
    while r.read_record(&mut rec).unwrap() {
        n += 1;
        bytes += rec.as_slice().len();
    }
    let base = t.elapsed();
    assert_eq!(n, rows);
    println!(
        "csv crate read:            {:>8.3} s  {:>9.0} rows/s  (fields {} B)  peak RSS {:.0} MB",
        base.as_secs_f64(),
        rows as f64 / base.as_secs_f64(),
        bytes,
        vm_hwm_mb()
    );

    // 2. validation pass
    let t = Instant::now();
    let src = CsvSource::open(cfg.clone()).unwrap();
    let open = t.elapsed();
    assert!(src.row_errors().is_empty(), "{:?}", &src.row_errors()[..1]);
    assert_eq!(src.account_count(), rows);
    println!(
        "CsvSource::open (validate): {:>7.3} s  {:>9.0} rows/s  x{:.2} of csv  peak RSS {:.0} MB",
        open.as_secs_f64(),
        rows as f64 / open.as_secs_f64(),
        open.as_secs_f64() / base.as_secs_f64(),
        vm_hwm_mb()
    );

    // 3. listing
    let t = Instant::now();
    let count = rt.block_on(async {
        let mut s = src.account_stream(None);
        let mut c = 0usize;
        while let Some(a) = s.try_next().await.unwrap() {
            c += a.username.len().min(1);
        }
        c
    });
    let list = t.elapsed();
    assert_eq!(count, rows);
    println!(
        "listing (read + map):      {:>8.3} s  {:>9.0} rows/s  x{:.2} of csv  peak RSS {:.0} MB",
        list.as_secs_f64(),
        rows as f64 / list.as_secs_f64(),
        list.as_secs_f64() / base.as_secs_f64(),
        vm_hwm_mb()
    );
    drop(src);

    if std::env::var("IDSYNC_BENCH_PLAN").is_ok_and(|v| v == "0") {
        return;
    }
    // 4. open + plan against an empty hub
    let t = Instant::now();
    let plan = rt.block_on(async {
        let src = Arc::new(CsvSource::open(cfg.clone()).unwrap());
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let hub = Arc::new(Hub::new(store.clone()));
        let engine = Engine::new(store);
        engine.plan(&Job::new("bench", src, hub)).await.unwrap()
    });
    let planned = t.elapsed();
    assert_eq!(plan.count(idsync_core::OpKind::CreateAccount), rows);
    println!(
        "open + Engine::plan:       {:>8.3} s  {:>9.0} rows/s  x{:.2} of csv  peak RSS {:.0} MB  ({} ops)",
        planned.as_secs_f64(),
        rows as f64 / planned.as_secs_f64(),
        planned.as_secs_f64() / base.as_secs_f64(),
        vm_hwm_mb(),
        plan.ops.len()
    );
}
